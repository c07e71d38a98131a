"""The ``dialog`` event package (RFC 4235, ``application/dialog-info+xml``):
the busy lamp field. Its publications come from the proxy's own dialog
table (:mod:`sipdisp.presence.dialogfeed`) or from a PUBLISH, as OpenSIPS'
presence_dialoginfo allows; a NOTIFY carries every dialog of the
presentity in one full document."""

import re
import xml.etree.ElementTree as ET

from . import xmldoc
from .base import BadBody, EventPackage

DIALOG_NS = "urn:ietf:params:xml:ns:dialog-info"
DIALOG_INFO = "application/dialog-info+xml"
#: RFC 4235 section 3.7.1 dialog states
STATES = ("trying", "proceeding", "early", "confirmed", "terminated")
#: RFC 4235 section 4.1.6.2 reasons a dialog ended (the ``event`` attribute)
END_EVENTS = ("cancelled", "rejected", "replaced", "local-bye", "remote-bye", "error",
              "timeout")


#: the root's version attribute as :func:`xmldoc.write` puts it; a quote inside
#: an earlier attribute value is always escaped, so this cannot match there
_VERSION = re.compile(rb' version="\d+"')


def _q(name):
    return f"{{{DIALOG_NS}}}{name}"


class DialogPackage(EventPackage):
    """``dialog``: dialog-info documents, one ``<dialog>`` per call leg."""

    name = "dialog"
    content_types = (DIALOG_INFO,)
    publishable = True

    def parse(self, body):
        """The :class:`~.xmldoc.Document` of a valid dialog-info body; BadBody otherwise."""
        doc = xmldoc.parse(body, max_size=self.max_body_size, max_depth=self.max_depth,
                           what="dialog-info")
        root = doc.root
        if root.tag != _q("dialog-info"):
            raise BadBody("dialog-info root is not <dialog-info> in "
                          "urn:ietf:params:xml:ns:dialog-info")
        version = root.get("version") or ""
        if not version.isdigit():
            raise BadBody("dialog-info without a numeric version")
        if root.get("state") not in ("full", "partial"):
            raise BadBody("dialog-info state is neither full nor partial")
        if not root.get("entity"):
            raise BadBody("dialog-info without entity")
        for dialog in root.findall(_q("dialog")):
            if not dialog.get("id"):
                raise BadBody("dialog-info <dialog> without id")
            state = dialog.find(_q("state"))
            if state is None or (state.text or "").strip() not in STATES:
                raise BadBody("dialog-info <dialog> without a valid <state>")
        return doc

    def validate(self, content_type, body):
        """BadBody unless ``body`` is dialog-info: root ``dialog-info`` in the
        RFC 4235 namespace with a numeric ``version``, ``state`` full or
        partial and an ``entity``; every ``dialog`` with an ``id`` and a
        ``state`` of RFC 4235 3.7.1."""
        self.check_type(content_type)
        self.parse(body)

    def notify_body(self, presentity, publications, version=0, **kwargs):
        """A full dialog-info document for ``presentity`` (``entity``) with
        the ``<dialog>`` elements of every publication, oldest first, a
        dialog id published again replacing its older element. ``version``
        is the document version the caller keeps per subscription (RFC 4235
        4.1: it goes up by one with every NOTIFY; the server counts, this
        package only writes it; 0 by default). ``[]`` gives a document
        without dialogs: the lamp is dark."""
        dialogs = {}
        prefixes = {}
        for _etag, _ctype, body in publications:
            try:
                doc = self.parse(body)
            except BadBody:
                continue  # a row stored by another server; the others still count
            for ns, prefix in doc.prefixes.items():
                prefixes.setdefault(ns, prefix)
            for dialog in doc.root.findall(_q("dialog")):
                dialogs.pop(dialog.get("id"), None)  # newest last, in publication order
                dialogs[dialog.get("id")] = dialog
        root = ET.Element(_q("dialog-info"), {"version": str(int(version)), "state": "full",
                                              "entity": presentity})
        for dialog in dialogs.values():
            copy = ET.SubElement(root, dialog.tag, dict(dialog.items()))
            copy.text = dialog.text
            copy.extend(list(dialog))
        return DIALOG_INFO, xmldoc.write(root, DIALOG_NS, prefixes)

    @staticmethod
    def stamp_version(body, version):
        """``body`` (a document :meth:`notify_body` wrote) with its version set
        to ``version``: the server builds one body for all the watchers of a
        presentity and stamps each subscription's own counter into it (RFC
        4235 4.1: the version goes up by one per NOTIFY of a subscription)."""
        return _VERSION.sub(b' version="%d"' % int(version), body, count=1)


def dialog_info(entity, version, dialog_id, state, *, call_id=None, local_tag=None,
                remote_tag=None, direction=None, local=None, remote=None, event=None,
                local_target=None, remote_target=None):
    """A full dialog-info document (bytes) with one dialog: what the dialog
    feed publishes for one side of a call. ``local`` and ``remote`` are the
    participants' identity URIs, ``local_target`` and ``remote_target``
    their Contacts (the identity when unknown); ``event`` the RFC 4235
    reason a terminated dialog ended (one of :data:`END_EVENTS`)."""
    if state not in STATES:
        raise ValueError(f"not a dialog state: {state!r}")
    root = ET.Element(_q("dialog-info"), {"version": str(int(version)), "state": "full",
                                          "entity": entity})
    attrs = {"id": dialog_id}
    for key, value in (("call-id", call_id), ("local-tag", local_tag),
                       ("remote-tag", remote_tag), ("direction", direction)):
        if value:
            attrs[key] = value
    dialog = ET.SubElement(root, _q("dialog"), attrs)
    element = ET.SubElement(dialog, _q("state"), {"event": event} if event else {})
    element.text = state
    for side, uri, target in (("local", local, local_target),
                              ("remote", remote, remote_target)):
        if uri:
            party = ET.SubElement(dialog, _q(side))
            ET.SubElement(party, _q("identity")).text = uri
            ET.SubElement(party, _q("target"), {"uri": target or uri})
    return xmldoc.write(root, DIALOG_NS)
