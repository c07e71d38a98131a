"""Event packages of the presence server (RFC 6665 section 7), sans-IO and
on the standard library: what each event's PUBLISH bodies must be and how
its NOTIFY bodies are built.

The server codes against this:

* :class:`BadBody` (a ``ValueError``): ``str()`` is the reason phrase of
  the 400 a bad PUBLISH gets (``status`` 415 for a wrong Content-Type).
* :func:`build_packages` -> ``{event name: EventPackage}`` for
  ``presence``, ``presence.winfo``, ``dialog`` and ``message-summary``.
* An :class:`EventPackage` has ``name``, ``content_types`` (the first is
  what NOTIFY uses), ``publishable``, ``validate(content_type, body)`` and
  ``notify_body(presentity, publications)`` with ``publications`` a list of
  ``(etag, content_type, body)``, oldest first (``[]``: nothing known).
"""

from .base import MAX_BODY_SIZE, MAX_DEPTH, BadBody, EventPackage, media_type
from .dialoginfo import DialogPackage
from .mwi import MessageSummaryPackage
from .pidf import PresencePackage
from .winfo import WatcherInfoPackage

__all__ = ["BadBody", "EventPackage", "PresencePackage", "DialogPackage",
           "MessageSummaryPackage", "WatcherInfoPackage", "build_packages", "media_type",
           "MAX_BODY_SIZE", "MAX_DEPTH"]


def build_packages(force_active=True, *, max_body_size=MAX_BODY_SIZE, max_depth=MAX_DEPTH):
    """The packages by event name. ``force_active`` is presence_xml's (every
    watcher allowed); ``max_body_size`` (bytes) and ``max_depth`` (XML
    nesting) bound what a PUBLISH body may be."""
    bounds = {"max_body_size": max_body_size, "max_depth": max_depth}
    packages = [PresencePackage(force_active, **bounds), WatcherInfoPackage(**bounds),
                DialogPackage(**bounds), MessageSummaryPackage(**bounds)]
    return {package.name: package for package in packages}
