"""
The storage API every subsystem uses: a small table-oriented interface over
one backend, with an ordered, bounded write queue, a disk spool for call
records and registrations, and in-memory copies for reads during outages.

Writes (``insert``, ``update``, ``delete``, ``upsert``) go into one FIFO
queue and are committed in order, in batches of up to ``batch_max`` per
transaction. A write's Deferred fires when it is committed. While the
database is unreachable writes wait in the queue; writes to spooled tables
are also journalled to disk so a restart during the outage keeps them.
The database is re-tried with a capped, jittered backoff; when it answers,
the queue (and any spool replayed at start) is flushed in order.

Reads go to the database; if it is unreachable, tables registered with
:meth:`Storage.cache` are answered from memory, others fail with
:class:`~sipdisp.storage.base.StorageUnavailable`.
"""

import collections
import datetime
import hashlib
import itertools
import random
import uuid

from twisted.internet import defer, task
from twisted.python import failure
from sipdisp.logs import Logger

from . import query
from .base import (QueueFull, StorageStopped, StorageUnavailable, UnknownColumn,
                   UnknownTable, WriteOp)
from .schema import BATCH_TABLE, NO_DEFAULT, SCHEMA
from .spool import Spool

STOPPED = "stopped"
CONNECTING = "connecting"
CONNECTED = "connected"
DISCONNECTED = "disconnected"
RECONNECTING = "reconnecting"
CLOSED = "closed"


def _describe(f):
    """First line of a failure's message, or its type name."""
    text = f.getErrorMessage().strip()
    return text.splitlines()[0] if text else f.type.__name__


class TableCache:
    """The in-memory copy of one table, kept current by this process's writes."""

    def __init__(self, table):
        self.table = table
        self.rows = []
        self.loaded = False
        self._defaults = {c.name: (None if c.default is NO_DEFAULT else c.default)
                          for c in table.columns if not c.auto}

    def replace(self, rows):
        self.rows = [dict(r) for r in rows]
        self.loaded = True

    def apply(self, op):
        query.apply_write(self.rows, op, self._defaults)

    def select(self, where=None, columns=None, order_by=None, limit=None):
        return query.select_rows(self.rows, where, columns, order_by, limit)


class Storage:
    """Asynchronous table storage over one backend (see module docstring).

    ``state`` is one of stopped, connecting, connected, disconnected,
    reconnecting, closed; ``queue_depth`` and ``counters`` are for metrics.
    """

    log = Logger()

    def __init__(self, backend, schema=None, spool_dir=None,
                 write_queue_max=100000, spool_tables=None, batch_max=100,
                 retry_initial=0.25, retry_max=5.0, jitter=0.1,
                 ping_interval=30.0, fsync_interval=0.2, stop_timeout=5.0,
                 reactor=None, random_source=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.backend = backend
        self.url = str(backend.url)
        self.schema = schema if schema is not None else SCHEMA
        self.write_queue_max = write_queue_max
        self.batch_max = batch_max
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.jitter = jitter
        self.ping_interval = ping_interval
        self.stop_timeout = stop_timeout
        self._random = random_source or random.Random()
        self.spool_tables = frozenset(
            spool_tables if spool_tables is not None
            else (t.name for t in self.schema.values() if t.spool))
        self._spool = None
        if spool_dir:
            digest = hashlib.sha1(self.url.encode()).hexdigest()[:10]
            self._spool = Spool(spool_dir, "%s-%s" % (backend.dialect, digest),
                                reactor, fsync_interval)
        self.state = STOPPED
        self.last_error = None
        self.counters = collections.Counter()
        self._queue = collections.deque()
        self._seq = 0
        self._writing = False
        self._kicking = False
        self._isolate = 0
        self._spool_pending = 0
        self._caches = {}
        self._refresh_caches = False
        self._retry_call = None
        self._attempt = 0
        self._lost_at = None
        self._full_logged = False
        self._drain_waiters = []
        self._pinger = None
        # exactly-once commits: each batch also inserts a token row; when
        # the connection dies around COMMIT, (token, last seq) is "unsure"
        # until the database says whether the token is there
        self._instance = uuid.uuid4().hex[:16]
        self._tokens = None     # None: not yet known if BATCH_TABLE exists
        self._last_token = None
        self._unsure = None
        # replay now, so sequence numbers continue the spool's and writes
        # made before start() queue behind the replayed ones
        self._replay_spool()

    # -- metrics ------------------------------------------------------------

    @property
    def queue_depth(self):
        """Writes accepted and not yet committed."""
        return len(self._queue)

    @property
    def spool_path(self):
        """Path of the disk spool, or None when there is no spool dir."""
        return self._spool.path if self._spool else None

    def stats(self):
        """A dict for the console and metrics."""
        out = dict(self.counters)
        out.update(state=self.state, queue_depth=self.queue_depth,
                   spool_pending=self._spool_pending)
        return out

    # -- life cycle ---------------------------------------------------------

    def start(self):
        """Connect (the spool was loaded when the Storage was made). Fires when the first attempt is over,
        whatever its outcome (``state`` tells); never fails for an outage."""
        if self.state != STOPPED:
            return defer.succeed(None)
        self.state = CONNECTING
        if self.ping_interval:
            self._pinger = task.LoopingCall(self._health_check)
            self._pinger.clock = self._reactor
            self._pinger.start(self.ping_interval, now=False)
        d = defer.maybeDeferred(self.backend.connect)
        d.addCallbacks(lambda _: self._connected(), self._connect_failed)
        return d

    def stop(self):
        """Flush what can be flushed within ``stop_timeout``, then close.
        Writes still queued for spooled tables stay in the spool file."""
        if self.state in (STOPPED, CLOSED):
            self.state = CLOSED
            return defer.succeed(None)
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()
        d = (self.flushed(self.stop_timeout) if self.state == CONNECTED
             else defer.succeed(None))
        d.addBoth(lambda _: self._close())
        return d

    def _close(self):
        self._cancel_retry()
        self.state = CLOSED
        left = len(self._queue)
        unspooled = sum(1 for op in self._queue if not op.spooled)
        if self._spool is not None:
            if self._spool_pending:
                self._spool.close()
            else:
                self._spool.remove()
        self._fire_drain(False)
        self.log.info("storage {url}: closed ({left} writes still queued, "
                      "{lost} of them not spooled)", url=self.url, left=left,
                      lost=unspooled)
        return self.backend.close()

    def flushed(self, timeout=None):
        """Fire with True when the write queue is empty, or with False after
        *timeout* seconds or when the storage closes first."""
        if not self._queue and not self._writing:
            return defer.succeed(True)
        d = defer.Deferred()
        self._drain_waiters.append(d)
        if timeout is not None:
            call = self._reactor.callLater(timeout, self._drain_timeout, d)
            d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
        return d

    def _drain_timeout(self, d):
        if d in self._drain_waiters:
            self._drain_waiters.remove(d)
            d.callback(False)

    def _fire_drain(self, result):
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            d.callback(result)

    # -- connection state -----------------------------------------------------

    def _connected(self):
        if self.state in (CLOSED, STOPPED):
            return
        self._cancel_retry()
        self._attempt = 0
        if self._lost_at is not None:
            down = self._reactor.seconds() - self._lost_at
            self._lost_at = None
            self.counters["reconnects"] += 1
            self.log.info("storage {url}: connected again after {down:.1f} s; "
                          "flushing {n} queued writes", url=self.url, down=down,
                          n=len(self._queue))
            self._refresh_caches = bool(self._caches)
        else:
            self.log.info("storage {url}: connected", url=self.url)
        self.state = CONNECTED
        self._kick()

    def schema_changed(self):
        """Tell the storage its tables were (re)created (``db init``)."""
        self._tokens = None

    def _resolve(self):
        """Before writing: learn whether batch tokens can be used, and
        settle a batch whose COMMIT may or may not have happened. Holds the
        writer until done, then runs it."""
        self._writing = True
        d = defer.succeed(None)
        if self._tokens is None:
            d.addCallback(lambda _: self.backend.describe(BATCH_TABLE))
            d.addCallback(self._set_tokens)
        d.addCallback(lambda _: self._settle_unsure())

        def done(result):
            self._writing = False
            if isinstance(result, failure.Failure):
                if self.backend.is_transient(result):
                    self._lost(result)
                else:
                    self.log.warn("storage {url}: cannot check {table}: "
                                  "{error}", url=self.url, table=BATCH_TABLE,
                                  error=result.getErrorMessage())
                    self._tokens, self._unsure = False, None
            self._kick()
        d.addBoth(done)

    def _set_tokens(self, live):
        self._tokens = live is not None
        if not self._tokens:
            self.log.warn("storage {url}: no {table} table (run sipdisp db "
                          "init): a batch interrupted at COMMIT may be "
                          "written twice", url=self.url, table=BATCH_TABLE)

    def _settle_unsure(self):
        if self._unsure is None:
            return None
        token, upto = self._unsure
        if not self._tokens:
            self._unsure = None
            return None

        def found(rows):
            self._unsure = None
            if not rows:
                return            # not committed: the batch is written again
            done = []
            while self._queue and self._queue[0].seq <= upto:
                done.append(self._queue.popleft())
            self._last_token = token
            self.counters["written"] += len(done)
            self.counters["commits_confirmed"] += 1
            self._finish_spooled(done)
            for op in done:
                if op.deferred is not None:
                    op.deferred.callback(None)   # committed; count unknown
        return self.backend.select(BATCH_TABLE, {"token": token}).addCallback(found)

    def _connect_failed(self, f):
        self._lost(f)

    def _lost(self, f):
        """The database is unreachable: queue, spool and schedule a retry."""
        if self.state in (CLOSED, STOPPED, DISCONNECTED):
            return
        self.last_error = _describe(f)
        if self.state in (CONNECTED, CONNECTING):
            self._lost_at = self._reactor.seconds()
            self.counters["disconnects"] += 1
            self.log.warn("storage {url}: connection lost ({error}); {n} "
                          "writes queued", url=self.url, n=len(self._queue),
                          error=self.last_error)
        self.state = DISCONNECTED
        self._tokens = None           # look again after the reconnect
        if self._spool is not None:
            for op in self._queue:
                if not op.spooled and op.table in self.spool_tables:
                    self._spool_op(op)
        self._schedule_retry()

    def _schedule_retry(self):
        if self._retry_call is not None or self.state == CLOSED:
            return
        delay = min(self.retry_max, self.retry_initial * (2 ** self._attempt))
        delay *= 1 + self.jitter * (2 * self._random.random() - 1)
        self._retry_call = self._reactor.callLater(delay, self._reconnect)

    def _cancel_retry(self):
        if self._retry_call is not None:
            if self._retry_call.active():
                self._retry_call.cancel()
            self._retry_call = None

    def _reconnect(self):
        self._retry_call = None
        if self.state != DISCONNECTED:
            return
        self._attempt += 1
        self.state = RECONNECTING
        if self._attempt <= 3 or self._attempt % 10 == 0:
            self.log.info("storage {url}: reconnecting (attempt {n}, {q} writes "
                          "queued)", url=self.url, n=self._attempt,
                          q=len(self._queue))
        d = defer.maybeDeferred(self.backend.ping)
        d.addCallbacks(lambda _: self._connected(), self._reconnect_failed)

    def _reconnect_failed(self, f):
        if self.state != RECONNECTING:
            return
        self.last_error = _describe(f)
        if not self.backend.is_transient(f) and self._attempt == 1:
            self.log.error("storage {url}: cannot use the database: {error}",
                           url=self.url, error=self.last_error)
        self.state = DISCONNECTED
        self._schedule_retry()

    def _health_check(self):
        if self.state != CONNECTED or self._writing:
            return
        d = defer.maybeDeferred(self.backend.ping)
        d.addErrback(self._transient_or_log)

    def _transient_or_log(self, f):
        if self.backend.is_transient(f):
            self._lost(f)
        else:
            self.log.warn("storage {url}: health check failed: {error}",
                          url=self.url, error=f.getErrorMessage())

    # -- validation -------------------------------------------------------------

    def _table(self, name):
        table = self.schema.get(name)
        if table is None:
            raise UnknownTable("no table %r in the storage schema" % (name,))
        return table

    def _check_columns(self, table, names):
        for name in names:
            if name not in table.by_name:
                raise UnknownColumn("no column %r in table %r" % (name, table.name))

    def _check_where(self, table, where):
        if where is None:
            return None
        if not isinstance(where, dict):
            raise TypeError("where must be a dict of column: condition")
        self._check_columns(table, where)
        return dict(where)

    # -- writes -----------------------------------------------------------------

    def insert(self, table, row):
        """Queue ``INSERT``; fires with 1 when committed."""
        t = self._table(table)
        self._check_columns(t, row)
        return self._enqueue("insert", t.name, dict(row))

    def update(self, table, values, where):
        """Queue ``UPDATE table SET values WHERE where``; fires with the
        number of rows matched. ``where={}`` updates every row."""
        t = self._table(table)
        self._check_columns(t, values)
        if not values:
            raise ValueError("update needs at least one column to set")
        return self._enqueue("update", t.name, dict(values),
                             self._check_where(t, where) or {})

    def delete(self, table, where):
        """Queue ``DELETE FROM table WHERE where``; fires with rows deleted.
        ``where={}`` deletes every row."""
        t = self._table(table)
        return self._enqueue("delete", t.name, None,
                             self._check_where(t, where) or {})

    def upsert(self, table, row, keys):
        """Queue "update the row whose *keys* columns match, else insert it"
        (portable; needs no unique index). Fires with rows touched."""
        t = self._table(table)
        self._check_columns(t, row)
        keys = tuple(keys)
        if not keys or any(k not in row for k in keys):
            raise ValueError("upsert keys must be columns present in the row")
        return self._enqueue("upsert", t.name, dict(row), None, keys)

    def _enqueue(self, kind, table, row, where=None, keys=None):
        if self.state == CLOSED:
            return defer.fail(StorageStopped("storage %s is closed" % self.url))
        if len(self._queue) >= self.write_queue_max:
            self.counters["dropped"] += 1
            if not self._full_logged:
                self._full_logged = True
                self.log.error("storage {url}: write queue full ({n}); "
                               "refusing writes", url=self.url, n=len(self._queue))
            return defer.fail(QueueFull("write queue of %s is full (%d)" % (
                self.url, self.write_queue_max)))
        self._full_logged = False
        self._seq += 1
        op = WriteOp(self._seq, kind, table, row, where, keys, defer.Deferred())
        cache = self._caches.get(table)
        if cache is not None:
            cache.apply(op)
        if self._spool is not None and table in self.spool_tables and (
                self._spool.is_open or self.state != CONNECTED):
            self._spool_op(op)
        self._queue.append(op)
        self.counters["accepted"] += 1
        if len(self._queue) > self.counters["queue_peak"]:
            self.counters["queue_peak"] = len(self._queue)
        d = op.deferred
        self._kick()
        return d

    def _spool_op(self, op):
        self._spool.append(op.to_json())
        op.spooled = True
        self._spool_pending += 1
        self.counters["spooled"] += 1

    def _replay_spool(self):
        if self._spool is None:
            return
        records, last, batch = self._spool.load()
        self._seq = max(self._seq, last)
        self._unsure = batch
        replayed = 0
        for record in records:
            if record.get("table") not in self.schema:
                self.log.warn("storage spool: dropping write to unknown table "
                              "{table}", table=record.get("table"))
                continue
            self._queue.append(WriteOp.from_json(record))
            replayed += 1
        self._spool_pending = replayed
        self.counters["replayed"] += replayed
        if replayed:
            self._spool.open()
            self.log.info("storage {url}: replaying {n} spooled writes from "
                          "{path}", url=self.url, n=replayed, path=self._spool.path)
        else:
            self._spool.remove()

    def _kick(self):
        """Run the writer: one batch in flight at a time, in queue order."""
        if self._kicking:
            return
        self._kicking = True
        try:
            while (not self._writing and self._queue and self.state == CONNECTED):
                if self._tokens is None or self._unsure is not None:
                    self._resolve()
                    continue
                size = 1 if self._isolate else self.batch_max
                batch = list(itertools.islice(self._queue, size))
                ops, token = batch, None
                if self._tokens:
                    token = "%s-%d-%d" % (self._instance, batch[0].seq,
                                          batch[-1].seq)
                    ops = batch + self._token_ops(token)
                    if self._spool is not None and self._spool.is_open and \
                            any(op.spooled for op in batch):
                        self._spool.note_batch(token, batch[-1].seq)
                self._writing = True
                d = defer.maybeDeferred(self.backend.write_batch, ops)
                d.addCallbacks(self._batch_done, self._batch_failed,
                               callbackArgs=(batch, token),
                               errbackArgs=(batch, token))
                d.addErrback(lambda f: self.log.failure(
                    "storage {url}: writer error", f, url=self.url))
        finally:
            self._kicking = False
        if not self._queue and not self._writing:
            self._drained()

    def _token_ops(self, token):
        """Insert this batch's token; forget the previous (committed) one."""
        ops = [WriteOp(0, "insert", BATCH_TABLE, {
            "token": token, "created": datetime.datetime.now(
                datetime.timezone.utc).replace(tzinfo=None, microsecond=0)})]
        if self._last_token is not None:
            ops.append(WriteOp(0, "delete", BATCH_TABLE,
                               where={"token": self._last_token}))
        return ops

    def _batch_done(self, results, batch, token):
        if token is not None:
            self._last_token = token
        for _ in batch:
            self._queue.popleft()
        self._isolate = max(0, self._isolate - len(batch))
        self.counters["written"] += len(batch)
        self._finish_spooled(batch)
        self._writing = False
        for op, result in zip(batch, results):
            if op.deferred is not None:
                op.deferred.callback(result)
        self._kick()

    def _batch_failed(self, f, batch, token):
        self._writing = False
        if self.backend.is_transient(f):
            self._lost(f)
            if token is not None:
                self._unsure = (token, batch[-1].seq)
                if self._spool is not None and self._spool.is_open:
                    self._spool.note_batch(token, batch[-1].seq)
        elif len(batch) > 1:
            # one of these is bad: retry them one at a time to find it
            self._isolate = len(batch)
        else:
            op = self._queue.popleft()
            self._isolate = max(0, self._isolate - 1)
            self.counters["failed"] += 1
            self._finish_spooled([op])
            self.log.warn("storage {url}: {kind} on {table} failed and was "
                          "dropped: {error}", url=self.url, kind=op.kind,
                          table=op.table, error=f.getErrorMessage())
            if op.deferred is not None:
                op.deferred.errback(f)
        self._kick()

    def _finish_spooled(self, ops):
        seqs = [op.seq for op in ops if op.spooled]
        if not seqs:
            return
        self._spool_pending -= len(seqs)
        if self._spool_pending <= 0 and self.state == CONNECTED:
            self._spool_pending = 0
            self._spool.remove()
        else:
            self._spool.ack(max(seqs))

    def _drained(self):
        if self._spool is not None and self._spool.is_open and \
                not self._spool_pending and self.state == CONNECTED:
            self._spool.remove()
        if self._refresh_caches and self.state == CONNECTED:
            self._refresh_caches = False
            for name in list(self._caches):
                self._load_cache(name).addErrback(lambda f: None)
        self._fire_drain(True)

    # -- reads ------------------------------------------------------------------

    def select(self, table, where=None, columns=None, order_by=None, limit=None):
        """Fire with a list of row dicts. *columns* (default: all), *order_by*
        (names, ``-name`` for descending) and *limit* are optional. Answered
        from the in-memory copy when the table is cached and the database is
        unreachable."""
        t = self._table(table)
        where = self._check_where(t, where)
        if columns:
            self._check_columns(t, columns)
            columns = list(columns)
        if order_by:
            order_by = [order_by] if isinstance(order_by, str) else list(order_by)
            self._check_columns(t, [c.lstrip("-") for c in order_by])
        args = (t.name, where, columns, order_by, limit)
        cache = self._caches.get(t.name)
        if cache is not None and self.state in (DISCONNECTED, RECONNECTING):
            self.counters["read_fallbacks"] += 1
            return defer.succeed(cache.select(*args[1:]))
        d = defer.maybeDeferred(self.backend.select, *args)
        d.addCallbacks(self._read_done, self._read_failed,
                       callbackArgs=(args,), errbackArgs=(args, False))
        return d

    def _read_done(self, rows, args):
        table, where, columns, _order, limit = args
        cache = self._caches.get(table)
        if cache is not None and not where and not columns and limit is None:
            self._refill(cache, rows)
        return rows

    def _refill(self, cache, rows):
        cache.replace(rows)
        for op in self._queue:  # writes not committed yet stay visible
            if op.table == cache.table.name:
                cache.apply(op)

    def _read_failed(self, f, args, retried):
        if not self.backend.is_transient(f):
            return f
        if not retried and self.state == CONNECTED:
            # a server restart costs at most one retried query
            d = defer.maybeDeferred(self.backend.select, *args)
            d.addCallbacks(self._read_done, self._read_failed,
                           callbackArgs=(args,), errbackArgs=(args, True))
            return d
        if self.state == CONNECTED:
            self._lost(f)
        cache = self._caches.get(args[0])
        if cache is not None:
            self.counters["read_fallbacks"] += 1
            return cache.select(*args[1:])
        return defer.fail(StorageUnavailable("cannot read %s from %s: %s" % (
            args[0], self.url, f.getErrorMessage())))

    def cache(self, table):
        """Keep an in-memory copy of *table* for reads during outages.

        The copy is loaded now, follows this process's writes at once, and
        is reloaded after a reconnect. Fires with the number of rows loaded;
        fails with StorageUnavailable if the database cannot be read now
        (the table stays registered and is loaded when it comes back).
        """
        t = self._table(table)
        if t.name not in self._caches:
            self._caches[t.name] = TableCache(t)
        return self._load_cache(t.name)

    def _load_cache(self, name):
        cache = self._caches[name]
        d = defer.maybeDeferred(self.backend.select, name)

        def loaded(rows):
            self._refill(cache, rows)
            return len(rows)

        def failed(f):
            if self.backend.is_transient(f):
                if self.state == CONNECTED:
                    self._lost(f)
                self._refresh_caches = True
                return defer.fail(StorageUnavailable(
                    "cannot load %s from %s: %s" % (name, self.url,
                                                    f.getErrorMessage())))
            return f
        return d.addCallbacks(loaded, failed)

    def cached(self, table):
        """The :class:`TableCache` of *table*, or None."""
        return self._caches.get(table)

    # -- backend specific -------------------------------------------------------

    def run_query(self, sql, params=()):
        """Run one backend-specific statement *now* (not queued) with bound
        *params* (``?`` for SQLite, ``%s`` otherwise); fires with its rows as
        tuples. Never put values into *sql* itself."""
        d = defer.maybeDeferred(self.backend.run_query, sql, tuple(params or ()))

        def failed(f):
            if self.backend.is_transient(f) and self.state == CONNECTED:
                self._lost(f)
            return f
        return d.addErrback(failed)

    def describe(self, table):
        """Fire with ``{column: (family, length)}`` of the live table, or None."""
        return defer.maybeDeferred(self.backend.describe, table)

    def listen(self, channel, callback):
        """Call ``callback(channel, payload)`` on each notification on
        *channel* (PostgreSQL LISTEN; memory backend in-process).
        Re-subscribed after reconnects."""
        return defer.maybeDeferred(self.backend.listen, channel, callback)

    def notify(self, channel, payload):
        """Send *payload* (a string) to *channel*'s listeners (pg_notify)."""
        return defer.maybeDeferred(self.backend.notify, channel, payload)

    @property
    def dialect(self):
        """The backend's name: memory, sqlite, postgres or mysql."""
        return self.backend.dialect
