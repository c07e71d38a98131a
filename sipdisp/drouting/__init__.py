"""Dynamic routing (OpenSIPS drouting): PSTN gateways and carriers, rules
by prefix, group, time recurrence and priority, failover with
``use_next_gw``, gateway probing and the ``dr.*`` commands (docs/drouting.md)."""

from .router import DR, Carrier, DRouting, Gateway, LoadError, Rule, parse_gwlist
from .timerec import TimeRec, TimerecError, parse_duration, parse_timerec

__all__ = ["DR", "Carrier", "DRouting", "Gateway", "LoadError", "Rule", "TimeRec",
           "TimerecError", "parse_duration", "parse_gwlist", "parse_timerec"]
