"""DNS for next hops (RFC 3263): NAPTR, SRV and A/AAAA with a TTL cache.

:mod:`.cache` and :mod:`.rfc3263` are sans-IO (records and ``now`` in, targets
out); :mod:`.client` drives them with Twisted's own resolver
(``twisted.names.client``); :mod:`.settings` is the ``dns`` section.
"""

from .cache import DnsCache
from .rfc3263 import NAPTR, SRV, Naptr, NextHops, Resolution, Srv, order_srv

__all__ = ["DnsCache", "NAPTR", "SRV", "Naptr", "NextHops", "Resolution", "Srv", "order_srv"]
