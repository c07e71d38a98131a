"""rtpengine control (Kamailio's rtpengine module): the ng protocol with
several weighted instances, pings and failover (sans-IO ng.py), the flags
strings (flags.py), the SDP in message bodies and fix_nated_sdp (sdp.py),
and the session that follows the call (engine.py); docs/rtpengine.md."""

from .engine import Rtpengine
from .ng import Instance, NgClient, NgError, parse_sockets

__all__ = ["Instance", "NgClient", "NgError", "Rtpengine", "parse_sockets"]
