"""DNS answers for tests of the sans-IO resolver: records given as data.

``Zone`` answers every query into the cache at once (a synchronous asker);
``HeldZone`` keeps the queries until the test calls ``answer(now)``, as the
network would, so a test can see a branch held for DNS.
"""

from sipdisp.dns import DnsCache, NextHops


class Zone:
    """Answers ``(type, name)`` queries from ``records`` (missing: a negative
    answer) with ``ttl``; ``asked`` lists every query in order."""

    def __init__(self, records=None, ttl=60.0, cache=None):
        self.cache = cache if cache is not None else DnsCache()
        self.records = dict(records or {})
        self.ttl = ttl
        self.asked = []

    def ask(self, queries, now):
        """Answer ``queries`` into the cache; True: all answered at once."""
        for rtype, name in queries:
            self.asked.append((rtype, name))
            self.cache.put(rtype, name, self.records.get((rtype, name), ()), self.ttl, now)
        return True

    def wait(self, queries, callback):
        """Never called: ``ask`` answers everything at once."""
        raise AssertionError("a Zone answers at once")

    def resolver(self, rng=None):
        """A NextHops over this zone's cache."""
        return NextHops(self.cache, self, rng=rng)


class HeldZone(Zone):
    """A zone whose answers come only when the test calls ``answer(now)``."""

    def __init__(self, records=None, ttl=60.0, cache=None):
        super().__init__(records, ttl, cache)
        self.pending = []
        self.waiters = []

    def ask(self, queries, now):
        """Keep the queries for ``answer``."""
        self.asked.extend(queries)
        self.pending.extend(q for q in queries if q not in self.pending)
        return False

    def wait(self, queries, callback):
        """Call ``callback(now)`` at the next ``answer``."""
        self.waiters.append(callback)

    def answer(self, now):
        """Answer every pending query, then run the waiters (as the Twisted asker does)."""
        for rtype, name in self.pending:
            self.cache.put(rtype, name, self.records.get((rtype, name), ()), self.ttl, now)
        self.pending = []
        waiters, self.waiters = self.waiters, []
        for callback in waiters:
            callback(now)
