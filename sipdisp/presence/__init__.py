"""The presence server (OpenSIPS' presence and presence_xml modules):
``handle_publish`` keeps PUBLISHed event state (RFC 3903),
``handle_subscribe`` makes subscription dialogs and NOTIFYs their watchers
(RFC 6665), for the presence, presence.winfo, dialog (busy lamps, fed by
the dialog table) and message-summary packages (docs/presence.md)."""

from .server import PresenceParams, PresenceServer

__all__ = ["PresenceServer", "PresenceParams"]
