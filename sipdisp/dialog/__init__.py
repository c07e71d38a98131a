"""Dialog tracking (OpenSIPS/Kamailio dialog module): the dialog table with
its states, matching, timeouts and keepalives, profiles, persistence in the
``dialog`` table, and the ``dlg.*`` commands (docs/dialog.md)."""

from .dialog import CALLEE, CALLER, Dialog, parse_flags
from .profiles import Profiles
from .states import CONFIRMED, DELETED, EARLY, UNCONFIRMED, DialogStateError, transition
from .table import DLG, DOWNSTREAM, UPSTREAM, DialogTable

__all__ = ["CALLEE", "CALLER", "CONFIRMED", "DELETED", "DLG", "DOWNSTREAM", "Dialog",
           "DialogStateError", "DialogTable", "EARLY", "Profiles", "UNCONFIRMED", "UPSTREAM",
           "parse_flags", "transition"]
