"""The I/O half of next-hop DNS: queries through Twisted's own resolver
(``twisted.names.client``), answers into the sans-IO cache, and the waiters
woken when they are there.

How a request waits for DNS (the choice the proxy core builds on): the core
never blocks and never sees a Deferred. It asks :class:`~.rfc3263.NextHops`
for the targets of a name; on a cache miss it gets a pending
:class:`~.rfc3263.Resolution`, holds that one branch (not the whole route:
the route ran once and its side effects stay single; the transaction stays
open, absorbing retransmissions and CANCEL) and registers a callback with
``wait``. When an answer (or a failure: NXDOMAIN, SERVFAIL, a timeout, all
cached as negative) is in the cache this module calls the callbacks with the
current time and then ``wake()`` (the switchboard's), which sends what the
continued branch queued. A test drives the same core with a synchronous
asker fed explicit records.
"""

import socket
from collections import Counter

from twisted.internet.defer import Deferred
from twisted.names import client, dns, error

from sipdisp.logs import Logger, RepeatLimiter

from .cache import DnsCache
from .rfc3263 import A, AAAA, NAPTR, SRV, Naptr, NextHops, Srv

log = Logger(namespace="sipdisp.dns")

_QTYPE = {A: dns.A, AAAA: dns.AAAA, SRV: dns.SRV, NAPTR: dns.NAPTR}


def _record(rtype, payload):
    """A cacheable value of one RR payload."""
    if rtype in (A, AAAA):
        return payload.dottedQuad() if rtype == A else socket.inet_ntop(socket.AF_INET6, payload.address)
    if rtype == SRV:
        return Srv(payload.priority, payload.weight, payload.port, payload.target.name.decode())
    return Naptr(payload.order, payload.preference, payload.flags.string.decode(),
                 payload.service.string.decode(), payload.regexp.string.decode(),
                 payload.replacement.name.decode())


class TwistedAsker:
    """Sends the queries :class:`NextHops` is missing, once each while one is
    in flight, and answers their waiters.

    ``resolver`` is a ``twisted.names`` resolver (``client.Resolver``);
    ``clock()`` the current time; ``wake()`` sends what the woken branches
    queued; ``timeout`` the seconds one query may take.
    """

    def __init__(self, cache, resolver, clock, timeout=2.0, wake=None, stats=None, reactor=None):
        self.cache = cache
        self.resolver = resolver
        self.clock = clock
        self.timeout = timeout
        self.wake = wake
        self.stats = stats if stats is not None else cache.stats
        self._reactor = reactor
        self._inflight = {}  # (type, name) -> [callback]
        self._fail_log = RepeatLimiter(log, limit=5, interval=60.0)

    @property
    def in_flight(self):
        """How many queries wait for their answer now."""
        return len(self._inflight)

    def ask(self, queries, now):
        """Send each query not yet in flight; True when all were answered at once."""
        for query in queries:
            if query in self._inflight:
                continue
            self._inflight[query] = []
            rtype, name = query
            self.stats["dns_queries_sent"] += 1
            d = self.resolver.query(dns.Query(name.encode("idna"), _QTYPE[rtype], dns.IN),
                                    timeout=(self.timeout,))
            d.addCallbacks(self._answered, self._failed, callbackArgs=(query,), errbackArgs=(query,))
        return all(self.cache.get(rtype, name, now) is not None for rtype, name in queries)

    def wait(self, queries, callback):
        """Call ``callback(now)`` once, when the first of ``queries`` is answered."""
        fired = []

        def once(now):
            if not fired:
                fired.append(True)
                callback(now)

        waiting = False
        for query in queries:
            waiters = self._inflight.get(query)
            if waiters is not None:
                waiters.append(once)
                waiting = True
        if not waiting:  # answered meanwhile: resolve again on the next turn, never re-entrantly
            self._reactor.callLater(0, lambda: self._call([once]))

    def _answered(self, result, query):
        try:
            self._store(result, query)
        except Exception:
            # an answer we cannot read counts as none, or the waiter would ask forever
            log.failure("cannot read the DNS answer for {rtype} {name}", rtype=query[0],
                        name=query[1])
            self.stats["dns_errors"] += 1
            self.cache.put_negative(query[0], query[1], self.clock())
        self._done(query)

    def _store(self, result, query):
        answers, authority, additional = result
        rtype, name = query
        now = self.clock()
        qtype = _QTYPE[rtype]
        records, ttls = [], []
        for rr in answers:
            if rr.type == qtype:
                records.append(_record(rtype, rr.payload))
                ttls.append(rr.ttl)
        self.cache.put(rtype, name, records, min(ttls) if ttls else 0, now)
        if rtype == SRV:
            # addresses of the SRV targets sent along (RFC 2782 "additional
            # data"): one round trip less when the server includes them
            extra = {}
            for rr in additional:
                if rr.type in (dns.A, dns.AAAA):
                    kind = A if rr.type == dns.A else AAAA
                    key = (kind, rr.name.name.decode().lower().rstrip("."))
                    extra.setdefault(key, ([], []))
                    extra[key][0].append(_record(kind, rr.payload))
                    extra[key][1].append(rr.ttl)
            for (kind, host), (addrs, ttl) in extra.items():
                if self.cache.get(kind, host, now) is None:
                    self.cache.put(kind, host, addrs, min(ttl), now)

    def _failed(self, failure, query):
        rtype, name = query
        now = self.clock()
        if failure.check(error.DNSNameError):
            self.stats["dns_nxdomain"] += 1
        elif failure.check(error.DNSQueryTimeoutError, error.TimeoutError):
            self.stats["dns_timeouts"] += 1
            self._fail_log.warn("dns.timeout", "no DNS answer for {rtype} {name} in {t} s "
                                "(dns.timeout); taken as no records for {neg} s",
                                rtype=rtype, name=name, t=self.timeout, neg=self.cache.negative_ttl)
        else:
            self.stats["dns_errors"] += 1
            self._fail_log.warn("dns.error", "DNS query {rtype} {name} failed: {err}",
                                rtype=rtype, name=name, err=failure.getErrorMessage())
        self.cache.put_negative(rtype, name, now)
        self._done(query)

    def _done(self, query):
        self._call(self._inflight.pop(query, ()))

    def _call(self, callbacks):
        if not callbacks:
            return
        now = self.clock()
        for callback in callbacks:
            try:
                callback(now)
            except Exception:
                log.failure("continuing after a DNS answer")
        if self.wake is not None:
            self.wake()


class DnsClient:
    """The ``dns`` section built: ``cache``, ``next_hops`` (what the proxy
    core is handed as its resolver) and the Twisted ``asker``; ``address``
    resolves a bare name for the edge (pings and keepalives to a name)."""

    def __init__(self, section, reactor, stats=None, resolver=None, rng=None):
        self._reactor = reactor
        stats = stats if stats is not None else Counter()
        self.cache = DnsCache(section.cache_size, section.negative_ttl, section.min_ttl,
                              section.max_ttl, stats=stats, clock=reactor.seconds)
        if resolver is None:
            # one UDP port per query (source port randomisation): Twisted's
            # "starting on N" line for each would flood the log
            dns.DNSDatagramProtocol.noisy = False
            servers = list(section.servers)
            if servers:
                resolver = client.Resolver(servers=servers, reactor=reactor)
            else:
                resolver = client.Resolver(resolv="/etc/resolv.conf", reactor=reactor)
        self.asker = TwistedAsker(self.cache, resolver, reactor.seconds, section.timeout,
                                  stats=stats, reactor=reactor)
        self.next_hops = NextHops(self.cache, self.asker, rng=rng, stats=stats)

    def use_stats(self, stats):
        """Count into ``stats`` (the proxy core's counter, shown in /metrics)."""
        self.cache.stats = self.asker.stats = self.next_hops.stats = stats

    def set_wake(self, wake):
        """``wake()`` runs after the waiters of an answer: it sends what they queued."""
        self.asker.wake = wake

    def address(self, host):
        """A Deferred firing with an address of ``host`` (A, then AAAA), through the cache."""
        d = Deferred()

        def attempt(now):
            res = self.next_hops.resolve("sip", "udp", host, 1, now)
            if not res.done:
                res.wait(attempt)
            elif res.targets:
                d.callback(res.targets[0][1])
            else:
                d.errback(error.DNSNameError(f"{host} does not resolve"))

        attempt(self._reactor.seconds())
        return d
