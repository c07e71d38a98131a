"""The cache module the route calls: picks the engine by name, counts, and
turns every engine failure into ``False`` with a rate-limited warning, so a
cache that is down never stops a call.

Engines are synchronous (``local://``: the answer is there at once) or not
(``redis://``): a read from an asynchronous engine suspends the request
with :class:`~sipdisp.proxy.suspend.Suspender` until the answer comes, and
the route runs again from the start (Kamailio's ``t_suspend``/``t_continue``).
Each call site keeps its outcome in ``ctx.vars`` under its own key
(``site``), so the run after a suspension neither writes twice nor counts
twice.
"""

from collections import Counter

from ..logs import Logger, RepeatLimiter
from ..proxy.suspend import FetchFailed
from .local import CacheError

log = Logger(namespace="sipdisp.cache")

OPS = ("store", "fetch", "remove", "add", "counter_fetch")


class _Failed:
    """An asynchronous engine's failure kept as a value (``ctx.vars`` holds it
    across the suspension, so the resumed run knows why)."""

    __slots__ = ("reason", "message")

    def __init__(self, reason, message):
        self.reason = reason
        self.message = message


class Cache:
    """The engines by name and what the route does with them.

    ``suspender`` suspends requests waiting for an asynchronous engine;
    ``stats`` (optional, the core's counters) counts log lines the
    limiter holds back.
    """

    def __init__(self, engines, suspender=None, stats=None, limiter=None):
        self.engines = dict(engines)
        self.suspender = suspender
        #: (engine, op) -> operations; (engine, "hit"|"miss") -> fetch results
        self.ops = Counter()
        #: (engine, reason) -> refused or failed operations
        self.errors = Counter()
        self.limiter = limiter or RepeatLimiter(log, stats=stats)

    def engine(self, name):
        """The engine called ``name``; KeyError naming the known ones."""
        try:
            return self.engines[name]
        except KeyError:
            raise KeyError(f"no cache engine {name!r} (cache.engines has "
                           f"{', '.join(sorted(self.engines))})") from None

    # -- what went wrong --------------------------------------------------------------
    def failed(self, name, op, key, reason, message):
        """Count a failed operation and warn (rate-limited per engine and reason)."""
        self.errors[(name, reason)] += 1
        self.limiter.warn(f"cache:{name}:{reason}",
                          "cache_{op} on {engine} failed for key {item}: {why}; the call goes on",
                          op=op, engine=name, item=key, why=message)
        return False

    def report(self, engine, op, key, failure):
        """A fire-and-forget write failed after it was sent (engine callback)."""
        reason = engine.failure_reason(failure) if hasattr(engine, "failure_reason") else "error"
        self.failed(engine.name, op, key, reason, failure.getErrorMessage())

    def _refused(self, name, op, key, exc):
        return self.failed(name, op, key, exc.reason, str(exc))

    # -- writes ---------------------------------------------------------------------------
    def store(self, name, key, value, expire, now):
        """Store ``value`` (a string) under ``key``; False when refused."""
        self.ops[(name, "store")] += 1
        try:
            return bool(self.engines[name].store(key, value, expire, now))
        except CacheError as exc:
            return self._refused(name, "store", key, exc)

    def remove(self, name, key, now):
        """Remove ``key``. Local: True if it was there; Redis: True once sent."""
        self.ops[(name, "remove")] += 1
        try:
            return bool(self.engines[name].remove(key, now))
        except CacheError as exc:
            return self._refused(name, "remove", key, exc)

    # -- operations with an answer ------------------------------------------------------------
    def _ask(self, ctx, site, name, op, key, start):
        """The answer of ``start()`` for this request (an engine value), or a
        :class:`_Failed`; suspends the request while an asynchronous engine works."""
        engine = self.engines[name]
        if engine.synchronous:
            self.ops[(name, op)] += 1
            try:
                return start()
            except CacheError as exc:
                return _Failed(exc.reason, str(exc))
        if site not in ctx.vars:
            self.ops[(name, op)] += 1
            if not engine.connected:
                # no server: answer false now rather than suspend for nothing
                ctx.vars[site] = _Failed("not_connected", f"no connection to {engine.url.safe}")
                return ctx.vars[site]

        def begin():
            d = start()
            return d.addErrback(lambda f: _Failed(engine.failure_reason(f), f.getErrorMessage()))
        try:
            return self.suspender.fetch(ctx, site, begin)
        except CacheError as exc:  # refused before anything was sent
            return _Failed(exc.reason, str(exc))
        except FetchFailed as exc:  # a programming error in start(): still not the call's end
            return _Failed("error", str(exc))

    def fetch(self, ctx, site, name, key):
        """The value of ``key`` (a string), or None when absent or on failure."""
        engine = self.engines[name]
        value = self._ask(ctx, site, name, "fetch", key, lambda: engine.fetch(key, ctx.now))
        if isinstance(value, _Failed):
            self.failed(name, "fetch", key, value.reason, value.message)
            return None
        self.ops[(name, "hit" if value is not None else "miss")] += 1
        return value

    def add(self, ctx, site, name, key, delta, expire, want_result):
        """Add ``delta`` to the counter ``key``: the new value (an int) when
        ``want_result``, else True; None on failure."""
        engine = self.engines[name]
        if not engine.synchronous and not want_result:
            self.ops[(name, "add")] += 1
            try:
                return engine.add(key, delta, expire, ctx.now)
            except CacheError as exc:
                self._refused(name, "add", key, exc)
                return None
        if engine.synchronous:
            start = lambda: engine.add(key, delta, expire, ctx.now)  # noqa: E731
        else:
            start = lambda: engine.add(key, delta, expire, ctx.now, want_result=True)  # noqa: E731
        value = self._ask(ctx, site, name, "add", key, start)
        if isinstance(value, _Failed):
            self.failed(name, "add", key, value.reason, value.message)
            return None
        return value if want_result else True

    def counter_fetch(self, ctx, site, name, key):
        """The counter ``key`` as an int, or None when absent or on failure."""
        engine = self.engines[name]
        value = self._ask(ctx, site, name, "counter_fetch", key,
                          lambda: engine.counter_fetch(key, ctx.now))
        if isinstance(value, _Failed):
            self.failed(name, "counter_fetch", key, value.reason, value.message)
            return None
        self.ops[(name, "hit" if value is not None else "miss")] += 1
        return value

    # -- housekeeping and reporting ---------------------------------------------------------
    def sweep(self, now):
        """Free the expired keys of every local engine; how many."""
        return sum(e.sweep(now) for e in self.engines.values() if hasattr(e, "sweep"))

    def stats(self):
        """Counters and engine states, as ``cache.stats`` shows them."""
        out = {}
        for name, engine in sorted(self.engines.items()):
            row = dict(engine.describe())
            row.update({op: self.ops[(name, op)] for op in OPS + ("hit", "miss")})
            row["errors"] = {r: n for (e, r), n in sorted(self.errors.items()) if e == name}
            out[name] = row
        return out

    def metrics(self):
        """Prometheus families: operations, fetch results, errors, keys and connection state."""
        names = sorted(self.engines)
        yield ("sipdisp_cache_operations_total", "counter",
               "Cache operations by engine and operation (store, fetch, remove, add, counter_fetch).",
               [({"engine": n, "op": op}, self.ops[(n, op)]) for n in names for op in OPS])
        yield ("sipdisp_cache_fetch_results_total", "counter",
               "Answered cache_fetch and cache_counter_fetch calls by engine: hit or miss.",
               [({"engine": n, "result": r}, self.ops[(n, r)]) for n in names
                for r in ("hit", "miss")])
        yield ("sipdisp_cache_errors_total", "counter",
               "Cache operations that returned false by engine and reason (not_connected, timeout, queue_full, full ...).",
               [({"engine": e, "reason": r}, n) for (e, r), n in sorted(self.errors.items())])
        yield ("sipdisp_cache_keys", "gauge", "Keys held by each local:// engine.",
               [({"engine": n}, len(self.engines[n])) for n in names
                if self.engines[n].synchronous])
        yield ("sipdisp_cache_connected", "gauge",
               "1 while a redis:// engine has a live connection.",
               [({"engine": n}, int(self.engines[n].connected)) for n in names
                if not self.engines[n].synchronous])
        yield ("sipdisp_cache_writes_in_flight", "gauge",
               "Writes a redis:// engine sent and waits the answer of (cache.redis_queue_max).",
               [({"engine": n}, self.engines[n].in_flight) for n in names
                if not self.engines[n].synchronous])
