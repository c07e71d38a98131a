"""The ``presence.winfo`` template package (RFC 3857) and its watcher
information documents (RFC 3858, ``application/watcherinfo+xml``): who
watches a presentity and in which state. Only the server writes them,
nobody PUBLISHes them."""

import xml.etree.ElementTree as ET

from . import xmldoc
from .base import BadBody, EventPackage

WINFO_NS = "urn:ietf:params:xml:ns:watcherinfo"
WATCHERINFO = "application/watcherinfo+xml"
#: RFC 3857 section 3.6 / RFC 3858: watcher states and the events that lead there
STATUSES = ("pending", "active", "waiting", "terminated")
EVENTS = ("subscribe", "approved", "deactivated", "probation", "rejected", "timeout",
          "giveup", "noresource")


def _q(name):
    return f"{{{WINFO_NS}}}{name}"


class WatcherInfoPackage(EventPackage):
    """``presence.winfo``: not publishable; its NOTIFY bodies come from
    :meth:`watcherinfo_body` with the server's list of watchers."""

    name = "presence.winfo"
    content_types = (WATCHERINFO,)
    publishable = False
    #: the package whose watchers the documents list
    watched = "presence"

    def validate(self, content_type, body):
        """BadBody unless ``body`` is a well-formed watcherinfo document
        (the server never accepts one in a PUBLISH: ``publishable`` is False)."""
        self.check_type(content_type)
        doc = xmldoc.parse(body, max_size=self.max_body_size, max_depth=self.max_depth,
                           what="watcherinfo")
        if doc.root.tag != _q("watcherinfo") or doc.root.get("version") is None:
            raise BadBody("watcherinfo root is not <watcherinfo> with a version")

    def notify_body(self, presentity, publications, version=0, **kwargs):
        """A full watcherinfo document with no watchers (the server passes its
        watchers to :meth:`watcherinfo_body` instead)."""
        return self.watcherinfo_body(presentity, [], version)

    def watcherinfo_body(self, resource, watchers, version):
        """``(content_type, body)``: a full watcherinfo document (RFC 3858)
        for ``resource`` at ``version``; ``watchers`` are dicts ``{"id",
        "uri", "status", "event"}`` (status pending/active/waiting/
        terminated, event as RFC 3857 3.6; an unknown value is written as
        ``pending``/``subscribe``)."""
        root = ET.Element(_q("watcherinfo"), {"version": str(int(version)), "state": "full"})
        wlist = ET.SubElement(root, _q("watcher-list"),
                              {"resource": resource, "package": self.watched})
        for n, watcher in enumerate(watchers):
            status = watcher.get("status") or "pending"
            event = watcher.get("event") or "subscribe"
            element = ET.SubElement(wlist, _q("watcher"), {
                "id": str(watcher.get("id") or f"w{n}"),
                "status": status if status in STATUSES else "pending",
                "event": event if event in EVENTS else "subscribe"})
            element.text = str(watcher.get("uri") or "")
        return WATCHERINFO, xmldoc.write(root, WINFO_NS)
