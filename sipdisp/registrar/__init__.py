"""The registrar and location service (Kamailio's registrar and usrloc):
REGISTER processing (RFC 3261 10.3, Path, outbound), the location table in
memory and/or the database (``db_mode`` 0-3), ``lookup`` with parallel
forking, NAT helpers and keepalives, and the ``ul.*`` commands.

Sans-IO: :mod:`.registrar` (``process_register``, :class:`Registrar`),
:mod:`.usrloc` (:class:`Location`), :mod:`.nat`; the Twisted edge is
:mod:`.service`. See docs/registrar.md.
"""

from .registrar import (Branch, Registrar, RegistrarParams, RegisterResult, parse_save_flags,
                        process_register)
from .usrloc import Binding, Location

__all__ = ["Binding", "Branch", "Location", "Registrar", "RegistrarParams",
           "RegisterResult", "parse_save_flags", "process_register"]
