"""The cache as a Twisted service: builds the engines of ``cache.engines``,
puts the :class:`~sipdisp.cache.cache.Cache` in ``root.modules.cache``,
connects the Redis engines (they reconnect by themselves), sweeps the local
engines on the core's timer heap, and registers the ``cache.*`` commands.
"""

from twisted.application.service import Service
from twisted.internet import defer

from ..commands import CommandError
from ..logs import Logger
from ..proxy.suspend import Suspender
from .cache import Cache
from .local import CacheError, LocalCache
from .redis import RedisEngine
from .url import parse_cache_url

log = Logger(namespace="sipdisp.cache")

#: a request suspended for Redis is answered 500 only if even the engine's own
#: timeout (cache.redis_timeout) did not end the wait this much later
SUSPEND_MARGIN = 5.0


def build_engines(cfg, reactor, report=None):
    """name -> engine for every entry of ``cfg.cache.engines`` (Redis ones not started)."""
    c = cfg.cache
    engines = {}
    for name, text in c.engines.items():
        url = parse_cache_url(text)
        if url.scheme == "local":
            engines[name] = LocalCache(name, url, c.local_max_keys)
        else:
            engines[name] = RedisEngine(name, url, reactor, timeout=c.redis_timeout,
                                        queue_max=c.redis_queue_max,
                                        reconnect_max=c.redis_reconnect_max, report=report)
    return engines


class _Sweeper:
    """A timer-heap owner freeing expired local keys every ``interval`` seconds."""

    def __init__(self, cache, timer, interval):
        self.cache = cache
        self.interval = interval
        self.timers = {}
        self._timer = timer(self, "sweep")

    def start(self, now):
        """Arm the first sweep."""
        self._timer.arm(now + self.interval)

    def stop(self):
        """Disarm."""
        self._timer.cancel()

    def on_timer(self, name, now):
        """Sweep, then re-arm."""
        n = self.cache.sweep(now)
        if n:
            log.debug("cache: freed {n} expired key(s)", n=n)
        self._timer.arm(now + self.interval)


class CacheService(Service):
    """Owns the cache engines of the service tree ``root``."""

    name = "cache"

    def __init__(self, root, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.root = root
        cfg = self.cfg = root.cfg
        core = root.sip.core
        self.suspender = Suspender(core, clock=reactor.seconds, wake=root.sip.switchboard.wake,
                                   timeout=cfg.cache.redis_timeout + SUSPEND_MARGIN)
        self.cache = Cache({}, self.suspender, stats=core.stats)
        self.cache.engines.update(build_engines(cfg, reactor, report=self.cache.report))
        self._sweeper = _Sweeper(self.cache, core.timer, cfg.cache.local_cleanup_interval)
        root.modules.cache = self.cache
        register_commands(root.registry, self)

    def startService(self):
        """Connect the Redis engines and arm the local sweep."""
        super().startService()
        for engine in self.cache.engines.values():
            if isinstance(engine, RedisEngine):
                log.info("cache {name}: connecting to {url}", name=engine.name,
                         url=engine.url.safe)
                engine.start()
        self._sweeper.start(self._reactor.seconds())
        self.root.sip.switchboard.wake()

    def stopService(self):
        """Disarm and close the Redis connections."""
        super().stopService()
        self._sweeper.stop()
        stops = [engine.stop() for engine in self.cache.engines.values()
                 if isinstance(engine, RedisEngine)]
        return defer.gatherResults([d for d in stops if d is not None], consumeErrors=True)


def register_commands(registry, service):
    """``cache.fetch``, ``cache.store``, ``cache.remove`` and ``cache.stats``."""
    cache = service.cache
    reactor = service._reactor

    def engine_of(command, name):
        try:
            return cache.engine(name)
        except KeyError as exc:
            raise CommandError(f"{command}: {exc.args[0]}") from None

    def redis_failed(command, engine):
        def failed(f):
            raise CommandError(f"{command}: {engine.name}: {f.getErrorMessage()}")
        return failed

    @registry.command("cache.fetch")
    def fetch(engine: str, key: str) -> dict:
        """The value of a key: 'cache.fetch redis example.com:alice' (value null when absent)."""
        e = engine_of("cache.fetch", engine)
        if e.synchronous:
            return {"engine": engine, "key": key, "value": e.fetch(key, reactor.seconds())}
        try:
            d = e.command("GET", key)
        except CacheError as exc:
            raise CommandError(f"cache.fetch: {exc}") from None
        return d.addCallbacks(lambda v: {"engine": engine, "key": key, "value": v},
                              redis_failed("cache.fetch", e))

    @registry.command("cache.store")
    def store(engine: str, key: str, value: str, expire: int = 0) -> dict:
        """Store a value, optionally for 'expire' seconds: 'cache.store local k v 60'."""
        e = engine_of("cache.store", engine)
        if expire < 0:
            raise CommandError("cache.store: expire must be >= 0")
        if e.synchronous:
            try:
                e.store(key, value, expire, reactor.seconds())
            except CacheError as exc:
                raise CommandError(f"cache.store: {exc}") from None
            return {"engine": engine, "key": key, "stored": True}
        args = ("SET", key, value) + (("EX", expire) if expire else ())
        try:
            d = e.command(*args)
        except CacheError as exc:
            raise CommandError(f"cache.store: {exc}") from None
        return d.addCallbacks(lambda _: {"engine": engine, "key": key, "stored": True},
                              redis_failed("cache.store", e))

    @registry.command("cache.remove")
    def remove(engine: str, key: str) -> dict:
        """Remove a key: 'cache.remove redis example.com:alice' (removed: 0 when absent)."""
        e = engine_of("cache.remove", engine)
        if e.synchronous:
            return {"engine": engine, "key": key, "removed": int(e.remove(key, reactor.seconds()))}
        try:
            d = e.command("DEL", key)
        except CacheError as exc:
            raise CommandError(f"cache.remove: {exc}") from None
        return d.addCallbacks(lambda n: {"engine": engine, "key": key, "removed": int(n)},
                              redis_failed("cache.remove", e))

    @registry.command("cache.stats")
    def stats() -> dict:
        """Per engine: its URL (password masked), keys or connection, operations, hits, misses and errors."""
        return {"engines": cache.stats(), "suspended_now": service.suspender.pending,
                "suspended": service.suspender.suspended,
                "suspend_timeouts": service.suspender.timed_out}
