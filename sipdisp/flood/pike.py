"""Per-source request rate over a sliding window (Kamailio's and OpenSIPS'
``pike``), sans-IO: every call takes ``now``.

A source is *hot* when more than ``density`` requests arrived within the
last ``unit`` seconds. The window slides: the count of the previous unit
is weighted by how much of it still overlaps the window (the usual
two-bucket estimate), so a burst straddling a unit boundary is caught as
surely as one inside a unit. A source stays in the table until it has been
quiet for ``unit + remove_latency`` seconds; the table holds at most
``max_sources`` sources, the least recently seen going first.

Across a cluster (sipdisp/shared, docs/cluster.md) a source's requests to
the other nodes count too: ``remote`` holds their counts per source and
unit (``host -> {slot: count}``, set by the cluster sync), and a source
reaching ``share_min`` requests in a unit here goes into ``notable``, the
sources whose counts this node shares (so quiet sources cost nothing).
"""

from collections import OrderedDict


class _Source:
    __slots__ = ("slot", "prev", "cur", "last", "trusted_until", "hot_since")

    def __init__(self, slot, now):
        self.slot = slot
        self.prev = 0
        self.cur = 0
        self.last = now
        self.trusted_until = 0.0
        self.hot_since = None


class Pike:
    """The sliding-window counter of requests per source address."""

    def __init__(self, unit=2.0, density=30, remove_latency=120.0, max_sources=100000):
        if unit <= 0 or density < 1 or max_sources < 1:
            raise ValueError("unit > 0, density >= 1 and max_sources >= 1 are required")
        self.unit = float(unit)
        self.density = int(density)
        self.remove_latency = float(remove_latency)
        self.max_sources = int(max_sources)
        #: host -> _Source, least recently seen first
        self.sources = OrderedDict()
        #: sources pushed out by the max_sources cap
        self.evicted = 0
        #: host -> {slot: count} of the other cluster nodes (set by sipdisp.shared)
        self.remote = {}
        #: requests in one unit from which a source's count is shared (0: not shared)
        self.share_min = 0
        #: host -> _Source of the sources this node shares (the cluster sync prunes it)
        self.notable = {}
        #: most sources shared at once (0: no cap); busy sources beyond are counted here only
        self.share_max = 0
        #: busy sources not shared because ``share_max`` were already
        self.share_skipped = 0

    def _rate(self, src, now):
        """Requests in the ``unit`` seconds up to ``now`` (the sliding estimate)."""
        slot = int(now // self.unit)
        if slot == src.slot:
            prev, cur = src.prev, src.cur
        elif slot == src.slot + 1:
            prev, cur = src.cur, 0
        else:
            return 0.0
        overlap = 1.0 - (now - slot * self.unit) / self.unit
        return prev * overlap + cur

    def remote_rate(self, host, now):
        """The other cluster nodes' requests from ``host`` in the ``unit`` up to ``now``."""
        counts = self.remote.get(host)
        if not counts:
            return 0.0
        slot = int(now // self.unit)
        overlap = 1.0 - (now - slot * self.unit) / self.unit
        return counts.get(slot - 1, 0) * overlap + counts.get(slot, 0)

    def hit(self, host, now):
        """Count one request from ``host``; True if it makes (or keeps) the source hot.

        Also the moment stale sources are forgotten: the oldest entries are
        looked at one by one, so the cost stays constant per request."""
        sources = self.sources
        src = sources.get(host)
        slot = int(now // self.unit)
        if src is None:
            if len(sources) >= self.max_sources:
                sources.popitem(last=False)
                self.evicted += 1
            src = sources[host] = _Source(slot, now)
        else:
            sources.move_to_end(host)
            if slot != src.slot:
                src.prev = src.cur if slot == src.slot + 1 else 0
                src.cur = 0
                src.slot = slot
        src.cur += 1
        src.last = now
        if src.cur == self.share_min:
            if not self.share_max or len(self.notable) < self.share_max:
                self.notable[host] = src
            else:
                self.share_skipped += 1
        self._forget_stale(now)
        rate = self._rate(src, now)
        if self.remote:
            rate += self.remote_rate(host, now)
        hot = rate > self.density
        if hot:
            if src.hot_since is None:
                src.hot_since = now
        else:
            src.hot_since = None
        return hot

    def is_hot(self, host, now):
        """True if ``host`` is over the density now (no request counted)."""
        src = self.sources.get(host)
        if src is None:
            return bool(self.remote) and self.remote_rate(host, now) > self.density
        rate = self._rate(src, now)
        if self.remote:
            rate += self.remote_rate(host, now)
        return rate > self.density

    def trust(self, host, until):
        """Remember that ``host`` is trusted until ``until`` (no trust check meanwhile)."""
        src = self.sources.get(host)
        if src is not None:
            src.trusted_until = until

    def trusted(self, host, now):
        """True while a remembered trust decision for ``host`` holds."""
        src = self.sources.get(host)
        return src is not None and src.trusted_until > now

    def _forget_stale(self, now):
        sources = self.sources
        horizon = now - self.unit - self.remove_latency
        for _ in range(2):  # two per hit: the table shrinks faster than it grows
            if not sources:
                return
            host, src = next(iter(sources.items()))
            if src.last >= horizon:
                return
            del sources[host]

    def sweep(self, now):
        """Forget every source quiet for ``unit + remove_latency``; how many went."""
        horizon = now - self.unit - self.remove_latency
        gone = 0
        sources = self.sources
        while sources:
            host, src = next(iter(sources.items()))
            if src.last >= horizon:
                break
            del sources[host]
            gone += 1
        return gone

    def top(self, now, limit=20):
        """``[(host, rate)]`` of the busiest sources now, busiest first (``pike.top``)."""
        rates = [(host, self._rate(src, now)) for host, src in self.sources.items()]
        rates = [(h, r) for h, r in rates if r > 0]
        rates.sort(key=lambda item: (-item[1], item[0]))
        return rates[:limit]
