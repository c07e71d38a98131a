"""Topology hiding (OpenSIPS ``topology_hiding``, Kamailio ``topoh``): per
call, neither party sees the other's Via, Record-Route, Route or Contact
addresses; in-dialog requests come back to the proxy's Contact and are
turned towards the other party (docs/topoh.md)."""

from .hiding import Hiding, hide, match

__all__ = ["Hiding", "hide", "match"]
