"""
``postgres://user:pw@host:port/db``: PostgreSQL through txpostgres.

Every pooled connection carries a txpostgres ``DeadConnectionDetector``:
txpostgres only reconnects a connection that has one. When the server goes
away, each detector reconnects its connection with a capped backoff, while
queries on it fail at once with ``ConnectionDead`` (the storage layer
queues writes meanwhile). LISTEN uses a dedicated connection with its own
detector; after it reconnects, it subscribes again to every channel.

Options: ``?pool=N`` (connections, default 3), ``?connect_timeout=S``.
"""

from twisted.internet import defer
from twisted.internet import error as ierror
from sipdisp.logs import Logger
from txpostgres import reconnection, retrying, txpostgres
from txpostgres.psycopg2_impl import psycopg2

from .. import query
from ..base import Backend, type_family
from ..schema import check_identifier


class _Detector(reconnection.DeadConnectionDetector):
    """A dead-connection detector whose reconnect loop can be cancelled
    and which reports death and recovery to its backend."""

    def __init__(self, backend, label, **kw):
        super().__init__(**kw)
        self.backend = backend
        self.label = label
        self._retrying = None

    def startReconnecting(self, f):
        self.backend._connection_died(self, f)
        call = retrying.RetryingCall(self.reconnect)
        call.reactor = self.reactor
        d = self._retrying = call.start(self.reconnectionIterator())
        d.addCallback(lambda _: self.connectionRecovered())
        d.addErrback(self._stopped)

    def _stopped(self, f):
        if not f.check(defer.CancelledError) and not self.backend.closing:
            self.backend.log.warn("storage {url}: {label} reconnect loop ended: "
                                  "{error}", url=str(self.backend.url),
                                  label=self.label, error=f.getErrorMessage())

    def reconnect(self):
        if self.backend.closing:
            return defer.fail(defer.CancelledError())
        return super().reconnect()

    def connectionRecovered(self):
        self._retrying = None
        self.backend._connection_recovered(self)
        return super().connectionRecovered()

    def shutdown(self):
        if self._retrying is not None:
            d, self._retrying = self._retrying, None
            try:
                d.cancel()
            except Exception:
                pass  # a connection attempt is underway; close() ends it


def _close(conn):
    if getattr(conn, "_connection", None) is not None:
        try:
            conn.close()
        except Exception:
            pass


@defer.inlineCallbacks
def _run_async(cursor, programs):
    """Drive query programs on a txpostgres cursor (inside a transaction)."""
    results = []
    for program in programs:
        try:
            stmt = next(program)
            while True:
                yield cursor.execute(stmt.sql, stmt.params or None)
                if cursor.description is not None:
                    res = query.Result(cursor.rowcount,
                                       [d[0] for d in cursor.description],
                                       cursor.fetchall())
                else:
                    res = query.Result(cursor.rowcount)
                stmt = program.send(res)
        except StopIteration as stop:
            results.append(stop.value)
    return results


class _Connection(txpostgres.Connection):
    """A txpostgres connection that reports a server gone away while the
    connection is idle as a lost connection (its detector then reconnects)
    rather than as an unhandled-error traceback in the reactor."""

    def doRead(self):
        try:
            return txpostgres.Connection.doRead(self)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            return exc  # the reactor calls connectionLost(Failure(exc))


class _Pool(txpostgres.ConnectionPool):
    def __init__(self, backend, *args, **kw):
        self.backend = backend
        self.reactor = backend._reactor
        super().__init__(*args, **kw)

    def connectionFactory(self, reactor, cooperator):
        return _Connection(reactor, cooperator,
                           detector=self.backend._detector("pool"))


class PostgresBackend(Backend):
    """PostgreSQL via a txpostgres pool of self-reconnecting connections."""

    dialect = "postgres"
    log = Logger()

    def __init__(self, url, schema, reactor=None, retry=(0.25, 5.0)):
        if reactor is None:
            from twisted.internet import reactor
        self.url = url
        self.schema = schema
        self._reactor = reactor
        self.retry = retry
        self.sql = query.DIALECTS["postgres"]
        self.pool = None
        self.closing = False
        self._detectors = []
        self._listener = None
        self._channels = {}
        p = url.params
        self.connkw = {
            "host": url.host or "127.0.0.1", "port": url.port or 5432,
            "user": url.user, "password": url.password, "dbname": url.database,
            "connect_timeout": int(float(p.get("connect_timeout", 5))),
        }
        self.connkw = {k: v for k, v in self.connkw.items() if v is not None}
        self.size = int(p.get("pool", 3))

    def _detector(self, label):
        initial, maximum = self.retry
        det = _Detector(
            self, label, reactor=self._reactor,
            reconnectionIterator=lambda: retrying.simpleBackoffIterator(
                initialDelay=initial, maxDelay=maximum, factor=2.0,
                maxRetries=0, now=True))
        self._detectors.append(det)
        return det

    # detector hooks: the storage layer logs the pool's state; the LISTEN
    # connection is logged here since nothing else watches it
    def _connection_died(self, detector, f):
        if detector.label == "listen" and not self.closing:
            self.log.info("storage {url}: LISTEN connection lost ({error}); "
                          "reconnecting", url=str(self.url),
                          error=f.getErrorMessage().strip())

    def _connection_recovered(self, detector):
        if detector.label == "listen" and not self.closing:
            self.log.info("storage {url}: LISTEN connection reconnected",
                          url=str(self.url))

    def _open(self, conn):
        d = conn.connect(**self.connkw)
        # a failed first connect also starts the detector's reconnect loop
        return d.addErrback(conn.detector.checkForDeadConnection)

    def connect(self):
        if self.pool is None:
            self.pool = _Pool(self, None, min=self.size)
            d = defer.DeferredList([self._open(c) for c in self.pool.connections],
                                   fireOnOneErrback=True, consumeErrors=True)
            d.addErrback(lambda f: f.value.subFailure)
            return d.addCallback(lambda _: None)
        return self.ping()

    def close(self):
        self.closing = True
        for det in self._detectors:
            det.shutdown()
        if self._listener is not None:
            _close(self._listener)
        if self.pool is not None:
            for conn in list(self.pool.connections):
                _close(conn)
        # let psycopg2/txpostgres callbacks already scheduled run out
        return self._sleep(0.05)

    def _sleep(self, seconds):
        d = defer.Deferred()
        self._reactor.callLater(seconds, d.callback, None)
        return d

    def _interaction(self, programs):
        if self.pool is None:
            return defer.fail(reconnection.ConnectionDead("not connected"))
        return self.pool.runInteraction(_run_async, programs)

    def ping(self):
        if self.pool is None:
            return defer.fail(reconnection.ConnectionDead("not connected"))
        return self.pool.runQuery("SELECT 1")

    def write_batch(self, ops):
        return self._interaction([query.write_program(self.sql, op) for op in ops])

    def select(self, table, where=None, columns=None, order_by=None, limit=None):
        d = self._interaction([query.select_program(
            self.sql, table, where, columns, order_by, limit)])
        return d.addCallback(lambda results: results[0])

    def run_query(self, sql, params=()):
        d = self._interaction([query.raw_program(sql, params)])
        return d.addCallback(lambda results: results[0])

    def describe(self, table):
        d = self.run_query(
            "SELECT column_name, data_type, character_maximum_length "
            "FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,))

        def parse(rows):
            if not rows:
                return None
            return {name: (type_family(dtype), int(length) if length else None)
                    for name, dtype, length in rows}
        return d.addCallback(parse)

    # -- LISTEN/NOTIFY ------------------------------------------------------

    def _on_notify(self, notify):
        for callback in list(self._channels.get(notify.channel, ())):
            try:
                callback(notify.channel, notify.payload)
            except Exception:
                self.log.failure("storage NOTIFY callback for {channel} failed",
                                 channel=notify.channel)

    def _subscribe(self, channel):
        return self._listener.runOperation("LISTEN %s" % self.sql.q(channel))

    def _resubscribe(self):
        d = defer.gatherResults([self._subscribe(c) for c in self._channels],
                                consumeErrors=True)

        def done(_):
            self.log.info("storage {url}: LISTEN re-subscribed to {n} channel(s)",
                          url=str(self.url), n=len(self._channels))
        return d.addCallback(done)

    def listen(self, channel, callback):
        """Call ``callback(channel, payload)`` for each NOTIFY on *channel*.

        The subscription survives reconnects. The Deferred fires once the
        LISTEN is active, or fails if the server cannot be reached now (the
        channel is still subscribed when the connection comes back).
        """
        check_identifier(channel)
        first = channel not in self._channels
        self._channels.setdefault(channel, []).append(callback)
        if self._listener is None:
            det = self._detector("listen")
            self._listener = _Connection(self._reactor, detector=det)
            self._listener.addNotifyObserver(self._on_notify)
            det.addRecoveryHandler(self._resubscribe)
            d = self._open(self._listener)
            d.addCallback(lambda _: self._subscribe(channel))
            return d.addCallback(lambda _: None)
        if not first:
            return defer.succeed(None)
        return self._subscribe(channel).addCallback(lambda _: None)

    def notify(self, channel, payload):
        check_identifier(channel)
        if self.pool is None:
            return defer.fail(reconnection.ConnectionDead("not connected"))
        return self.pool.runOperation("SELECT pg_notify(%s, %s)",
                                      (channel, payload))

    def is_transient(self, failure):
        return failure.check(
            psycopg2.OperationalError, psycopg2.InterfaceError,
            reconnection.ConnectionDead, txpostgres.RollbackFailed,
            txpostgres.AlreadyConnected, ierror.ConnectionLost,
            ierror.ConnectionDone) is not None
