"""
Keeping one database backend connected and the write queue flowing.

The :class:`Supervisor` owns the connection state (stopped, connecting,
connected, disconnected, reconnecting, closed), reconnects with a
:class:`~sipdisp.storage.retry.RetryPolicy` on an injected clock, pings an
idle connection, runs the :class:`~sipdisp.storage.writequeue.WriteQueue`'s
actions against the backend and carries out their effects: spool lines,
the Deferreds of committed or refused writes, and the log lines.
"""

import collections
import datetime

from twisted.internet import defer, task
from twisted.python import failure
from sipdisp.logs import Logger

from .schema import BATCH_TABLE
from .writequeue import (Committed, Dropped, QueueFullNotice, Resolve, SpoolAck, SpoolBatch,
                         SpoolClose, SpoolOpen, SpoolRemove, SpoolWrite, TokensMissing)

STOPPED = "stopped"
CONNECTING = "connecting"
CONNECTED = "connected"
DISCONNECTED = "disconnected"
RECONNECTING = "reconnecting"
CLOSED = "closed"


def _describe_failure(f):
    """First line of a failure's message, or its type name."""
    text = f.getErrorMessage().strip()
    return text.splitlines()[0] if text else f.type.__name__


class Supervisor:
    """Connects *backend*, notices when it goes away, reconnects after
    ``policy.delay(attempt)`` seconds on *clock*, and writes the queue
    *writes* through it in order.

    *spool* (or None) receives the journal effects; *ping_interval* (0: off)
    is the idle health check; *counters* receives disconnects and
    reconnects. ``on_reconnected()`` runs when the database answers again
    after a loss, before the queue is flushed; ``on_drained()`` each time the
    queue runs empty.
    """

    log = Logger(namespace="sipdisp.storage")

    def __init__(self, backend, writes, clock, policy, spool=None, ping_interval=30.0,
                 counters=None, on_reconnected=None, on_drained=None):
        self.backend = backend
        self.url = str(backend.url)
        self.writes = writes
        self.policy = policy
        self.ping_interval = ping_interval
        self.counters = counters if counters is not None else collections.Counter()
        self.state = STOPPED
        self.last_error = None
        self.attempt = 0
        self._clock = clock
        self._spool = spool
        self._on_reconnected = on_reconnected or (lambda: None)
        self._on_drained = on_drained or (lambda: None)
        self._retry_call = None
        self._lost_at = None
        self._pinger = None
        self._pumping = False
        self._effects = {
            Committed: self._committed, Dropped: self._dropped,
            SpoolWrite: lambda e, _f: self._spool.append(e.op.to_json()),
            SpoolBatch: lambda e, _f: self._spool.note_batch(e.token, e.upto),
            SpoolAck: lambda e, _f: self._spool.ack(e.seq),
            SpoolOpen: lambda e, _f: self._spool.open(),
            SpoolClose: lambda e, _f: self._spool.close(),
            SpoolRemove: lambda e, _f: self._spool.remove(),
            TokensMissing: self._tokens_missing, QueueFullNotice: self._queue_full,
        }

    # -- life cycle ---------------------------------------------------------------

    def start(self):
        """Connect; fires when the first attempt is over, whatever its outcome."""
        if self.state != STOPPED:
            return defer.succeed(None)
        self.state = CONNECTING
        if self.ping_interval:
            self._pinger = task.LoopingCall(self._health_check)
            self._pinger.clock = self._clock
            self._pinger.start(self.ping_interval, now=False)
        d = defer.maybeDeferred(self.backend.connect)
        d.addCallbacks(lambda _: self._connected(), self.lost)
        return d

    def stop_health_checks(self):
        """No more idle pings (the storage is stopping)."""
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()

    def close(self):
        """Stop reconnecting and writing; the journal is kept if it holds writes."""
        self._cancel_retry()
        self.state = CLOSED
        self.apply(self.writes.close())

    # -- the connection -----------------------------------------------------------

    def _connected(self):
        if self.state in (CLOSED, STOPPED):
            return
        self._cancel_retry()
        self.attempt = 0
        if self._lost_at is not None:
            down = self._clock.seconds() - self._lost_at
            self._lost_at = None
            self.counters["reconnects"] += 1
            self.log.info("storage {url}: connected again after {down:.1f} s; "
                          "flushing {n} queued writes", url=self.url, down=down,
                          n=len(self.writes))
            self._on_reconnected()
        else:
            self.log.info("storage {url}: connected", url=self.url)
        self.state = CONNECTED
        self.writes.link_restored()
        self.pump()

    def lost(self, f):
        """The database is unreachable (*f* says why): queue, spool and
        schedule a reconnect. Harmless when the loss is already known."""
        if self.state in (CLOSED, STOPPED, DISCONNECTED):
            return
        self.last_error = _describe_failure(f)
        if self.state in (CONNECTED, CONNECTING):
            self._lost_at = self._clock.seconds()
            self.counters["disconnects"] += 1
            self.log.warn("storage {url}: connection lost ({error}); {n} "
                          "writes queued", url=self.url, n=len(self.writes),
                          error=self.last_error)
        self.state = DISCONNECTED
        self.apply(self.writes.link_lost())
        self._schedule_retry()

    def _schedule_retry(self):
        if self._retry_call is not None or self.state == CLOSED:
            return
        self._retry_call = self._clock.callLater(self.policy.delay(self.attempt),
                                                 self._reconnect)

    def _cancel_retry(self):
        if self._retry_call is not None:
            if self._retry_call.active():
                self._retry_call.cancel()
            self._retry_call = None

    def _reconnect(self):
        self._retry_call = None
        if self.state != DISCONNECTED:
            return
        self.attempt += 1
        self.state = RECONNECTING
        if self.attempt <= 3 or self.attempt % 10 == 0:
            self.log.info("storage {url}: reconnecting (attempt {n}, {q} writes "
                          "queued)", url=self.url, n=self.attempt, q=len(self.writes))
        d = defer.maybeDeferred(self.backend.ping)
        d.addCallbacks(lambda _: self._connected(), self._reconnect_failed)

    def _reconnect_failed(self, f):
        if self.state != RECONNECTING:
            return
        self.last_error = _describe_failure(f)
        if not self.backend.is_transient(f) and self.attempt == 1:
            self.log.error("storage {url}: cannot use the database: {error}",
                           url=self.url, error=self.last_error)
        self.state = DISCONNECTED
        self._schedule_retry()

    def _health_check(self):
        if self.state != CONNECTED or self.writes.busy:
            return
        d = defer.maybeDeferred(self.backend.ping)
        d.addErrback(self._transient_or_log)

    def _transient_or_log(self, f):
        if self.backend.is_transient(f):
            self.lost(f)
        else:
            self.log.warn("storage {url}: health check failed: {error}",
                          url=self.url, error=f.getErrorMessage())

    # -- the writer -----------------------------------------------------------------

    def pump(self):
        """Run the queue's actions: one in flight at a time, in queue order."""
        if self._pumping:
            return
        self._pumping = True
        try:
            action = self.writes.next_action()
            while action is not None:
                if isinstance(action, Resolve):
                    self._resolve(action)
                else:
                    self._write(action)
                action = self.writes.next_action()
        finally:
            self._pumping = False
        if self.writes.idle:
            self.apply(self.writes.drained())
            self._on_drained()

    def _resolve(self, action):
        """Learn whether batch tokens can be used, then settle a batch whose
        COMMIT may or may not have happened."""
        d = defer.succeed(None)
        if action.describe:
            d.addCallback(lambda _: self.backend.describe(BATCH_TABLE))
            d.addCallback(lambda live: self.apply(self.writes.tokens_known(live is not None)))
        d.addCallback(lambda _: self._check_token())

        def done(result):
            if isinstance(result, failure.Failure):
                transient = self.backend.is_transient(result)
                self.writes.resolve_failed(transient)
                if transient:
                    self.lost(result)
                else:
                    self.log.warn("storage {url}: cannot check {table}: "
                                  "{error}", url=self.url, table=BATCH_TABLE,
                                  error=result.getErrorMessage())
            else:
                self.writes.resolved()
            self.pump()
        d.addBoth(done)

    def _check_token(self):
        token = self.writes.token_to_check()
        if token is None:
            return None
        d = self.backend.select(BATCH_TABLE, {"token": token})
        return d.addCallback(lambda rows: self.apply(self.writes.token_checked(bool(rows))))

    def _write(self, batch):
        if batch.journal:
            self._spool.note_batch(batch.token, batch.ops[-1].seq)
        created = datetime.datetime.now(datetime.timezone.utc).replace(
            tzinfo=None, microsecond=0)
        d = defer.maybeDeferred(self.backend.write_batch, batch.statements(created))
        d.addCallbacks(self._batch_done, self._batch_failed)
        d.addErrback(lambda f: self.log.failure("storage {url}: writer error", f, url=self.url))

    def _batch_done(self, results):
        self.apply(self.writes.batch_committed(results))
        self.pump()

    def _batch_failed(self, f):
        transient = self.backend.is_transient(f)
        if transient:
            self.lost(f)
        self.apply(self.writes.batch_failed(transient), f)
        self.pump()

    # -- effects ------------------------------------------------------------------

    def apply(self, effects, error=None):
        """Carry out the queue's *effects*; *error* is the failure of a
        refused write (:class:`~sipdisp.storage.writequeue.Dropped`)."""
        for effect in effects:
            self._effects[type(effect)](effect, error)

    def _committed(self, effect, _error):
        if effect.op.deferred is not None:
            effect.op.deferred.callback(effect.result)

    def _dropped(self, effect, error):
        op = effect.op
        self.log.warn("storage {url}: {kind} on {table} failed and was "
                      "dropped: {error}", url=self.url, kind=op.kind,
                      table=op.table, error=error.getErrorMessage())
        if op.deferred is not None:
            op.deferred.errback(error)

    def _tokens_missing(self, _effect, _error):
        self.log.warn("storage {url}: no {table} table (run sipdisp db "
                      "init): a batch interrupted at COMMIT may be "
                      "written twice", url=self.url, table=BATCH_TABLE)

    def _queue_full(self, effect, _error):
        self.log.error("storage {url}: write queue full ({n}); "
                       "refusing writes", url=self.url, n=effect.depth)
