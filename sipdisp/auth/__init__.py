"""Digest authentication (RFC 3261 section 22, RFC 7616, RFC 8760) and the
subscriber table (Kamailio's auth and auth_db): signed, expiring nonces
bound to the client's address, replay refused, MD5 and SHA-256.

Sans-IO: :mod:`.digest` (parsing, hashing, nonces, replay window) and
:mod:`.auth` (:class:`Auth`, the route functions' logic);
:mod:`.subscribers` reads and writes the tables; :mod:`.commands` is the
``sipdisp user`` command line. See docs/registrar.md.
"""

from .auth import Auth
from .digest import NonceFactory, ReplayGuard, calc_ha1, calc_response, parse_credentials

__all__ = ["Auth", "NonceFactory", "ReplayGuard", "calc_ha1", "calc_response",
           "parse_credentials"]
