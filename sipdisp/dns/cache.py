"""The DNS answers sipdisp keeps, sans-IO: ``(type, name) -> records`` until
their TTL runs out, negative answers (NXDOMAIN, no data, no answer in time)
for ``negative_ttl`` seconds, at most ``max_entries`` entries."""

from collections import Counter, OrderedDict

from sipdisp.logs import Logger, RepeatLimiter

log = Logger(namespace="sipdisp.dns")


class DnsCache:
    """A TTL-honouring cache of record sets.

    ``get(rtype, name, now)`` returns the records (a tuple; empty for a
    cached negative answer) or None when nothing valid is cached. TTLs are
    clamped to ``[min_ttl, max_ttl]``: a TTL of 0 would otherwise let the
    request that asked never see the answer. When ``max_entries`` are held
    the oldest entry goes (``dns.cache_size``), counted in
    ``stats["dns_cache_evictions"]`` and logged once a minute.
    """

    __slots__ = ("max_entries", "negative_ttl", "min_ttl", "max_ttl", "stats", "_entries",
                 "_limit_log")

    def __init__(self, max_entries=10000, negative_ttl=10.0, min_ttl=1.0, max_ttl=3600.0,
                 stats=None, clock=None):
        self.max_entries = max_entries
        self.negative_ttl = negative_ttl
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.stats = stats if stats is not None else Counter()
        self._entries = OrderedDict()  # (rtype, name) -> (expires, records)
        kw = {"clock": clock} if clock is not None else {}
        self._limit_log = RepeatLimiter(log, limit=1, interval=60.0, **kw)

    def get(self, rtype, name, now):
        """The cached records of ``rtype`` for ``name``: a tuple, () for a
        negative answer, None when nothing (or only an expired entry) is held."""
        key = (rtype, name.lower().rstrip("."))
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, rtype, name, records, ttl, now):
        """Keep ``records`` for ``ttl`` seconds (clamped); no records is a
        negative answer, kept ``negative_ttl`` seconds."""
        records = tuple(records)
        if records:
            ttl = min(max(ttl, self.min_ttl), self.max_ttl)
        else:
            ttl = self.negative_ttl
        key = (rtype, name.lower().rstrip("."))
        entries = self._entries
        entries.pop(key, None)
        while len(entries) >= self.max_entries:
            entries.popitem(last=False)
            self.stats["dns_cache_evictions"] += 1
            self._limit_log.warn("dns.cache_full", "DNS cache full (dns.cache_size = {max}); "
                                 "dropping the oldest answers", max=self.max_entries)
        entries[key] = (now + ttl, records)

    def put_negative(self, rtype, name, now):
        """Remember for ``negative_ttl`` seconds that ``name`` has no ``rtype`` records."""
        self.put(rtype, name, (), 0, now)

    def clear(self):
        """Forget every answer (``dns.flush``)."""
        self._entries.clear()

    def rows(self, now):
        """The live entries as dicts (``dns.cache``), expired ones left out."""
        return [{"type": rtype, "name": name, "ttl": round(expires - now, 3),
                 "records": [str(r) for r in records]}
                for (rtype, name), (expires, records) in list(self._entries.items())
                if expires > now]

    def __len__(self):
        return len(self._entries)
