"""The ``redis://`` engine: a Redis server through txredisapi, which
reconnects by itself (Twisted's ClientService with backoff from 1 s up to
``cache.redis_reconnect_max``).

Routes are synchronous and Redis is not. Writes (``store``, ``remove``,
``add`` without a result) are fire-and-forget: sent at once on the one
connection, at most ``cache.redis_queue_max`` unanswered at a time; their
failures are reported afterwards through ``report``. Reads return a
Deferred that fails after ``cache.redis_timeout`` seconds at the latest.
While the connection is down every operation is refused at once
(:class:`NotConnected`): the route function returns false and the call goes
on instead of waiting for a server that may not come back soon.
"""

import txredisapi
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.endpoints import HostnameEndpoint

from ..logs import Logger
from .local import CacheError

log = Logger(namespace="sipdisp.cache")


class NotConnected(CacheError):
    """The engine has no live connection to its server right now."""

    reason = "not_connected"


class QueueFull(CacheError):
    """``cache.redis_queue_max`` writes are already waiting for their answer."""

    reason = "queue_full"


class _Factory(txredisapi.RedisFactory):
    """txredisapi's connection factory, telling the engine when its
    connection comes and goes (for the log line and the reconnect counter)."""

    def __init__(self, engine, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.engine = engine

    def addConnection(self, conn):
        before = self.size
        super().addConnection(conn)
        if self.size and not before:
            self.engine._up()

    def delConnection(self, conn):
        before = self.size
        super().delConnection(conn)
        if before and not self.size:
            self.engine._down()


class RedisEngine:
    """One ``redis://`` engine. ``report(engine, op, key, failure)`` hears of
    fire-and-forget writes that failed after they were accepted."""

    synchronous = False

    def __init__(self, name, url, reactor, timeout=2.0, queue_max=10000, reconnect_max=5.0,
                 report=None):
        self.name = name
        self.url = url
        self._reactor = reactor
        self.timeout = timeout
        self.queue_max = queue_max
        self.reconnect_max = reconnect_max
        self.report = report
        self.in_flight = 0
        self.connects = 0
        self.disconnects = 0
        self._factory = None
        self._client = None
        self._stopping = False

    # -- life cycle ---------------------------------------------------------------------
    def start(self):
        """Start connecting (and reconnecting for as long as the engine runs)."""
        url = self.url
        factory = _Factory(self, f"{url.host}:{url.port}", url.database, 1, isLazy=True,
                           password=url.password, replyTimeout=self.timeout,
                           convertNumbers=False)
        factory.maxDelay = self.reconnect_max
        # OpenSIPS sends AUTH with the password alone (the URL's user is ignored)
        factory.startConnecting(HostnameEndpoint(self._reactor, url.host, url.port,
                                                 timeout=self.timeout))
        self._factory = factory
        self._client = factory.handler

    def stop(self):
        """Stop reconnecting and close the connection; a Deferred."""
        factory = self._factory
        self._stopping = True
        if factory is None:
            return None
        return factory.disconnect()

    @property
    def connected(self):
        """True while a connection is up (authenticated, database selected)."""
        return self._factory is not None and self._factory.size > 0

    def _up(self):
        self.connects += 1
        log.info("cache {name}: connected to {url}{again}", name=self.name, url=self.url.safe,
                 again=" again" if self.connects > 1 else "")

    def _down(self):
        self.disconnects += 1
        if self._stopping:
            return
        log.warn("cache {name}: lost the connection to {url}; reconnecting", name=self.name,
                 url=self.url.safe)

    # -- commands -----------------------------------------------------------------------
    def command(self, *args):
        """Send one Redis command: a Deferred of its answer (failing after the
        timeout); NotConnected at once while there is no connection."""
        if not self.connected:
            raise NotConnected(f"no connection to {self.url.safe}")
        d = self._client.execute_command(*args)
        # a command issued while the connection dies waits for the next one in
        # txredisapi's pool; nobody waits longer than the timeout
        d.addTimeout(self.timeout, self._reactor)
        return d

    def _write(self, op, key, *args):
        """Send a write without waiting for it: True, or NotConnected / QueueFull."""
        if self.in_flight >= self.queue_max:
            raise QueueFull(f"{self.queue_max} writes wait for their answer "
                            "(cache.redis_queue_max)")
        d = self.command(*args)
        self.in_flight += 1
        d.addBoth(self._written, op, key)
        return True

    def _written(self, result, op, key):
        self.in_flight -= 1
        if hasattr(result, "getErrorMessage"):  # a Failure
            if self.report is not None:
                self.report(self, op, key, result)
        return None

    def store(self, key, value, expire, now):
        """SET key value [EX expire] (fire-and-forget)."""
        if expire > 0:
            return self._write("store", key, "SET", key, value, "EX", int(expire))
        return self._write("store", key, "SET", key, value)

    def remove(self, key, now):
        """DEL key (fire-and-forget)."""
        return self._write("remove", key, "DEL", key)

    def add(self, key, delta, expire, now, want_result=False):
        """INCRBY key delta, then EXPIRE key expire when > 0 (OpenSIPS' order).
        Fire-and-forget (True) unless ``want_result``: then a Deferred of the new value."""
        if not want_result:
            self._write("add", key, "INCRBY", key, int(delta))
            if expire > 0:
                self._write("add", key, "EXPIRE", key, int(expire))
            return True
        d = self.command("INCRBY", key, int(delta))
        if expire > 0:
            self._write("add", key, "EXPIRE", key, int(expire))
        return d.addCallback(int)

    def fetch(self, key, now):
        """GET key: a Deferred of the string or None."""
        return self.command("GET", key)

    def counter_fetch(self, key, now):
        """GET key as a counter: a Deferred of an int or None (NotACounter-like
        failures come as ValueError)."""
        return self.command("GET", key).addCallback(lambda v: None if v is None else int(v))

    def failure_reason(self, failure):
        """The label of a failed command for counters and log lines."""
        if failure.check(DeferredTimeout, txredisapi.TimeoutError):
            return "timeout"
        if failure.check(txredisapi.ConnectionError):
            return "not_connected"
        if failure.check(txredisapi.ResponseError):
            return "redis_error"
        if failure.check(ValueError):
            return "not_a_counter"
        return "error"

    def describe(self):
        """What ``cache.stats`` shows of this engine."""
        return {"url": self.url.safe, "connected": self.connected, "in_flight": self.in_flight,
                "queue_max": self.queue_max, "connects": self.connects,
                "disconnects": self.disconnects}
