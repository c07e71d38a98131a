"""The ``presence`` event package: PIDF bodies (RFC 3863) with the RPID
(RFC 4480) and data-model (RFC 4479) elements passed through, and the
aggregation of a presentity's publications as presence_xml does it."""

import hashlib
import xml.etree.ElementTree as ET

from . import xmldoc
from .base import BadBody, EventPackage

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
PIDF = "application/pidf+xml"
BASIC_VALUES = ("open", "closed")


def _q(name):
    return f"{{{PIDF_NS}}}{name}"


class PresencePackage(EventPackage):
    """``presence``: PUBLISH and NOTIFY bodies in ``application/pidf+xml``.

    ``force_active`` (presence_xml's parameter) is kept for the server: true,
    every watcher is allowed without a ``watchers`` table decision.
    """

    name = "presence"
    content_types = (PIDF,)
    publishable = True

    def __init__(self, force_active=True, **bounds):
        super().__init__(**bounds)
        self.force_active = force_active

    def parse(self, body):
        """The :class:`~.xmldoc.Document` of a valid PIDF body; BadBody otherwise."""
        doc = xmldoc.parse(body, max_size=self.max_body_size, max_depth=self.max_depth,
                           what="PIDF")
        root = doc.root
        if root.tag != _q("presence"):
            raise BadBody("PIDF root is not <presence> in urn:ietf:params:xml:ns:pidf")
        if not root.get("entity"):
            raise BadBody("PIDF <presence> without entity")
        for tuple_ in root.iter(_q("tuple")):
            if not tuple_.get("id"):
                raise BadBody("PIDF <tuple> without id")
            basic = tuple_.find(f"{_q('status')}/{_q('basic')}")
            # "Open" from a sloppy client is still understood by every watcher;
            # presence_xml does not look at it at all
            if basic is not None and (basic.text or "").strip().lower() not in BASIC_VALUES:
                raise BadBody("PIDF <basic> is neither open nor closed")
        return doc

    def validate(self, content_type, body):
        """BadBody unless ``body`` is ``application/pidf+xml``: well-formed,
        root ``presence`` in the PIDF namespace with an ``entity``, every
        ``tuple`` with an ``id``, ``basic`` open or closed (in any case)."""
        self.check_type(content_type)
        self.parse(body)

    def notify_body(self, presentity, publications, **kwargs):
        """One PIDF document for ``presentity`` aggregating ``publications``
        (oldest first), as presence_xml's ``agregate_xmls``: entity is the
        presentity; the ``tuple`` elements of every publication, newest
        publication first, a tuple id seen in a newer one shadowing older
        ones; ``device`` elements likewise by id; the ``person`` (and the
        PIDF ``note``\\s) of the newest publication that has one.

        With no publication (or none readable) the body is one tuple with
        basic ``closed``: the presentity is offline. OpenSIPS sends no body
        there and Kamailio's ``force_dummy_presence`` an "open" one; a closed
        tuple is what presence_xml itself writes for a presentity whose last
        publication was removed, and every client shows it as offline."""
        docs = []
        for _etag, _ctype, body in reversed(publications):  # newest first
            try:
                docs.append(self.parse(body))
            except BadBody:
                continue  # a row stored by another server; the others still count
        if not docs:
            return PIDF, offline_body(presentity)
        root = ET.Element(_q("presence"), {"entity": presentity})
        prefixes = {}
        seen_tuples = set()
        seen_devices = set()
        person = None
        notes = None
        tuples, devices = [], []
        for doc in docs:
            for ns, prefix in doc.prefixes.items():
                prefixes.setdefault(ns, prefix)
            for child in doc.root:
                name = xmldoc.local_name(child)
                if name == "tuple" and child.tag == _q("tuple"):
                    tid = child.get("id")
                    if tid not in seen_tuples:
                        seen_tuples.add(tid)
                        tuples.append(child)
                elif name == "device":
                    did = child.get("id")
                    if did not in seen_devices:
                        seen_devices.add(did)
                        devices.append(child)
                elif name == "person":
                    if person is None:
                        person = child
            if notes is None:
                found = doc.root.findall(_q("note"))
                if found:
                    notes = found
        for child in tuples:
            root.append(_detached(child))
        for child in notes or ():
            root.append(_detached(child))
        if person is not None:
            root.append(_detached(person))
        for child in devices:
            root.append(_detached(child))
        return PIDF, xmldoc.write(root, PIDF_NS, prefixes)


def _detached(element):
    """``element`` without the whitespace that followed it in its old document."""
    copy = ET.Element(element.tag, dict(element.items()))
    copy.text = element.text
    copy.extend(list(element))
    return copy


def offline_body(presentity):
    """The PIDF of a presentity nobody publishes for: one tuple, basic
    ``closed``; the tuple id is stable for the presentity, so a client that
    later sees an ``open`` tuple replaces nothing by mistake."""
    tid = "t" + hashlib.sha1(presentity.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    root = ET.Element(_q("presence"), {"entity": presentity})
    tuple_ = ET.SubElement(root, _q("tuple"), {"id": tid})
    status = ET.SubElement(tuple_, _q("status"))
    ET.SubElement(status, _q("basic")).text = "closed"
    return xmldoc.write(root, PIDF_NS)
