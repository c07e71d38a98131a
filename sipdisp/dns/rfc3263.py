"""Locating a SIP next hop (RFC 3263 section 4), sans-IO.

:meth:`NextHops.resolve` walks the procedure over a :class:`~.cache.DnsCache`:
the transport (section 4.1: the URI's ``transport``, else NAPTR, else SRV per
supported transport, else UDP/TLS by scheme), then port and addresses
(section 4.2: a numeric host or an explicit port skip NAPTR and SRV; SRV
targets ordered by priority and RFC 2782 weighted random within one
priority; then A and AAAA). What is not cached yet comes back as the
queries still missing; ``asker(queries, now)`` sends them (the Twisted
client) and a :class:`Resolution` lets the caller wait for the answers. The
whole list of targets is returned, so that the caller can fail over to the
next one (section 4.3).
"""

import ipaddress
import random

A, AAAA, SRV, NAPTR = "A", "AAAA", "SRV", "NAPTR"

#: NAPTR services (RFC 3263 4.1, RFC 7118 for WebSocket) -> (scheme, transport)
NAPTR_SERVICES = {
    "sip+d2u": ("sip", "udp"), "sip+d2t": ("sip", "tcp"), "sips+d2t": ("sips", "tls"),
    "sip+d2w": ("sip", "ws"), "sips+d2w": ("sips", "wss"),
}
#: the SRV prefix of each transport (RFC 3263 4.1, RFC 7118 section 6)
SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp.",
              "ws": "_sip._ws.", "wss": "_sips._ws."}
DEFAULT_PORT = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}
#: the order SRV lookups try transports in when NAPTR gave nothing (4.1)
SRV_ORDER = {"sip": ("udp", "tcp", "tls"), "sips": ("tls",)}


class Srv:
    """One SRV record (RFC 2782)."""

    __slots__ = ("priority", "weight", "port", "target")

    def __init__(self, priority, weight, port, target):
        self.priority = priority
        self.weight = weight
        self.port = port
        self.target = target.lower().rstrip(".")

    def __repr__(self):
        return f"{self.priority} {self.weight} {self.port} {self.target or '.'}"

    __str__ = __repr__


class Naptr:
    """One NAPTR record (RFC 3403); only ``S`` records with a replacement serve SIP."""

    __slots__ = ("order", "preference", "flags", "service", "regexp", "replacement")

    def __init__(self, order, preference, flags, service, regexp, replacement):
        self.order = order
        self.preference = preference
        self.flags = flags.lower()
        self.service = service.lower()
        self.regexp = regexp
        self.replacement = replacement.lower().rstrip(".")

    def __repr__(self):
        return (f'{self.order} {self.preference} "{self.flags}" "{self.service}" '
                f'"{self.regexp}" {self.replacement or "."}')

    __str__ = __repr__


def is_numeric(host):
    """True for an IPv4 or IPv6 address (no DNS needed)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def order_srv(records, rng):
    """SRV records in the order to try them (RFC 2782): lowest priority
    first; within one priority a weighted random order (each pick has the
    chance weight/sum of the remaining weights; zero weights come first in
    the running sum so they are picked only rarely, as the RFC says)."""
    out = []
    by_priority = {}
    for rec in records:
        by_priority.setdefault(rec.priority, []).append(rec)
    for priority in sorted(by_priority):
        left = sorted(by_priority[priority], key=lambda r: r.weight != 0)
        while left:
            total = sum(r.weight for r in left)
            pick = rng.randint(0, total) if total else 0
            running = 0
            for i, rec in enumerate(left):
                running += rec.weight
                if running >= pick:
                    out.append(left.pop(i))
                    break
    return out


class Resolution:
    """The outcome of one :meth:`NextHops.resolve`: ``targets``, a list of
    ``(transport, address, port)`` in the order to try (empty: the name does
    not resolve), or, while ``done`` is False, the DNS ``queries`` still
    missing; ``wait(callback)`` calls ``callback(now)`` once one of them has
    been answered (or failed), when the caller resolves again."""

    __slots__ = ("done", "targets", "queries", "_waiter")

    def __init__(self, targets=(), queries=(), waiter=None):
        self.done = not queries
        self.targets = list(targets)
        self.queries = tuple(queries)
        self._waiter = waiter

    def wait(self, callback):
        """Call ``callback(now)`` when an answer to one of ``queries`` is cached."""
        self._waiter(self.queries, callback)


class NextHops:
    """RFC 3263 over a cache: the resolver the proxy core is handed.

    ``asker`` is the I/O half with two methods: ``ask(queries, now)`` sends
    the DNS queries ``[(type, name)]`` (returns True when it answered them
    into the cache at once, as a test's zone does) and ``wait(queries,
    callback)``. ``rng`` orders SRV records of equal priority.
    ``families``: the address record types looked up for a name.
    """

    def __init__(self, cache, asker, rng=None, stats=None, families=(A, AAAA)):
        self.cache = cache
        self.asker = asker
        self.rng = rng or random.Random()
        self.stats = stats if stats is not None else cache.stats
        self.families = families

    def resolve(self, scheme, transport, host, port, now, protos=None):
        """Targets for the URI parts ``scheme`` (sip or sips), ``transport``
        (the URI parameter or None), ``host`` and ``port`` (None when the
        URI has none); ``protos`` the transports this proxy can send on."""
        protos = set(protos) if protos is not None else set(DEFAULT_PORT)
        for _ in range(4):  # a synchronous asker answers each level at once: NAPTR, SRV, A
            missing, targets = self._walk(scheme, transport, host, port, protos, now)
            if not missing:
                self.stats["dns_resolutions"] += 1
                if not targets:
                    self.stats["dns_failures"] += 1
                return Resolution(targets)
            self.stats["dns_queries"] += len(missing)
            if not self.asker.ask(missing, now):
                return Resolution(queries=missing, waiter=self.asker.wait)
        return Resolution(queries=missing, waiter=self.asker.wait)

    # -- the procedure (returns (missing queries, targets)) -------------------
    def _walk(self, scheme, transport, host, port, protos, now):
        host = host.lower().rstrip(".")
        if is_numeric(host):
            # 4.1/4.2: a numeric host needs no DNS at all
            proto = transport or ("tls" if scheme == "sips" else "udp")
            return (), [(proto, host, port or DEFAULT_PORT.get(proto, 5060))]
        if transport is None and port is None:
            return self._from_naptr(scheme, host, protos, now)
        if transport is None:
            # an explicit port: no NAPTR, no SRV; UDP for sip, TLS for sips (4.1)
            transport = "tls" if scheme == "sips" else "udp"
        if port is not None:
            return self._addresses([(transport, host, port)], now)
        return self._from_srv(transport, host, now)

    def _from_naptr(self, scheme, host, protos, now):
        naptrs = self.cache.get(NAPTR, host, now)
        if naptrs is None:
            return ((NAPTR, host),), []
        usable = []
        for rec in naptrs:
            service = NAPTR_SERVICES.get(rec.service)
            if (rec.flags == "s" and service is not None and rec.replacement
                    and service[1] in protos and (scheme == "sip" or service[0] == "sips")):
                usable.append(rec)
        if usable:
            # the first usable record in order/preference (4.1); its SRV set gives the targets
            best = min(usable, key=lambda r: (r.order, r.preference))
            transport = NAPTR_SERVICES[best.service][1]
            srvs = self.cache.get(SRV, best.replacement, now)
            if srvs is None:
                return ((SRV, best.replacement),), []
            return self._srv_targets(transport, srvs, host, now)
        # no NAPTR: an SRV query for each transport we support, first found wins (4.1)
        order = [t for t in SRV_ORDER["sips" if scheme == "sips" else "sip"] if t in protos]
        missing = [(SRV, SRV_PREFIX[t] + host) for t in order
                   if self.cache.get(SRV, SRV_PREFIX[t] + host, now) is None]
        if missing:
            return tuple(missing), []
        for t in order:
            srvs = self.cache.get(SRV, SRV_PREFIX[t] + host, now)
            if srvs:
                return self._srv_targets(t, srvs, host, now)
        # no SRV either: A/AAAA on the host, UDP (TLS for sips) on the default port
        transport = "tls" if scheme == "sips" else "udp"
        return self._addresses([(transport, host, DEFAULT_PORT[transport])], now)

    def _from_srv(self, transport, host, now):
        name = SRV_PREFIX.get(transport, "_sip._udp.") + host
        srvs = self.cache.get(SRV, name, now)
        if srvs is None:
            return ((SRV, name),), []
        if not srvs:
            # no SRV records: the host itself on the transport's default port (4.2)
            return self._addresses([(transport, host, DEFAULT_PORT.get(transport, 5060))], now)
        return self._srv_targets(transport, srvs, host, now)

    def _srv_targets(self, transport, srvs, host, now):
        if len(srvs) == 1 and not srvs[0].target:
            return (), []  # "." : the service is decidedly not available (RFC 2782)
        ordered = order_srv([r for r in srvs if r.target], self.rng)
        return self._addresses([(transport, r.target, r.port) for r in ordered], now)

    def _addresses(self, hosts, now):
        """``(transport, name, port)`` -> ``(transport, address, port)`` for
        every address of every name, in order; or the A/AAAA queries missing."""
        missing = []
        out = []
        cache = self.cache
        for transport, name, port in hosts:
            if is_numeric(name):
                out.append((transport, name, port))
                continue
            for rtype in self.families:
                addrs = cache.get(rtype, name, now)
                if addrs is None:
                    missing.append((rtype, name))
                else:
                    out.extend((transport, addr, port) for addr in addrs)
        if missing:
            return tuple(dict.fromkeys(missing)), []
        return (), list(dict.fromkeys(out))
