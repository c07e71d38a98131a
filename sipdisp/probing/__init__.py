"""Health probing shared by the dispatcher and the load balancer: targets
pinged with the core's client transactions, Kamailio's state machine
(active, trying, inactive, disabled, probing) and state changes as events.

- ``states``: state bits and letters, probing modes, the machine as pure functions
- ``prober``: :class:`Prober`, :class:`ProbeTarget` and the :class:`StateChange` event
- ``latency``: :class:`LatencyStats`, the ping round-trip times of a target
- ``owner``: :class:`ProbedTable`, the wiring of a pinged table, and OpenSIPS' reply codes
"""

from .latency import LatencyStats
from .owner import ProbedTable, parse_reply_codes
from .prober import Prober, ProbeTarget, StateChange
from .states import (DISABLED, INACTIVE, MODES, NOPING, PROBING, SKIP_BITS, STATE_BITS, TRYING,
                     after_mark, after_ping, parse_state_letters, ping_wanted, state_letters)

__all__ = ["DISABLED", "INACTIVE", "LatencyStats", "MODES", "NOPING", "PROBING", "ProbedTable", "Prober", "ProbeTarget",
           "SKIP_BITS", "STATE_BITS", "StateChange", "TRYING", "after_mark", "after_ping",
           "parse_reply_codes", "parse_state_letters", "ping_wanted", "state_letters"]
