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

:class:`Storage` composes the parts: the write queue's decisions
(:mod:`~sipdisp.storage.writequeue`, pure), the connection and the writer
(:mod:`~sipdisp.storage.supervisor`), the spool (:mod:`~sipdisp.storage.spool`),
and here the validation of names, the reads and the table caches.
"""

import collections
import hashlib
import uuid

from twisted.internet import defer
from sipdisp.logs import Logger

from . import query
from .base import (QueueFull, StorageStopped, StorageUnavailable, UnknownColumn,
                   UnknownTable, WriteOp)
from .retry import RECONNECT, RetryPolicy
from .schema import NO_DEFAULT, SCHEMA
from .spool import Spool
from .supervisor import CLOSED, CONNECTED, DISCONNECTED, RECONNECTING, STOPPED, Supervisor
from .writequeue import WriteQueue


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
    ``queue`` is the :class:`~sipdisp.storage.writequeue.WriteQueue` and
    ``supervisor`` the :class:`~sipdisp.storage.supervisor.Supervisor`.
    """

    log = Logger(namespace="sipdisp.storage")

    def __init__(self, backend, schema=None, spool_dir=None,
                 write_queue_max=100000, spool_tables=None, batch_max=100,
                 retry_initial=RECONNECT.initial, retry_max=RECONNECT.maximum,
                 jitter=RECONNECT.jitter, ping_interval=30.0, fsync_interval=0.2,
                 stop_timeout=5.0, reactor=None, random_source=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.backend = backend
        self.url = str(backend.url)
        self.schema = schema if schema is not None else SCHEMA
        self.stop_timeout = stop_timeout
        self.counters = collections.Counter()
        self._spool = None
        if spool_dir:
            digest = hashlib.sha1(self.url.encode()).hexdigest()[:10]
            self._spool = Spool(spool_dir, "%s-%s" % (backend.dialect, digest),
                                reactor, fsync_interval)
        self.queue = WriteQueue(
            uuid.uuid4().hex[:16], batch_max=batch_max, limit=write_queue_max,
            spool_tables=(spool_tables if spool_tables is not None
                          else (t.name for t in self.schema.values() if t.spool)),
            spooling=self._spool is not None, counters=self.counters)
        self.supervisor = Supervisor(
            backend, self.queue, reactor,
            RetryPolicy(retry_initial, retry_max, jitter, random_source),
            spool=self._spool, ping_interval=ping_interval, counters=self.counters,
            on_reconnected=self._reconnected, on_drained=self._drained)
        self._caches = {}
        self._refresh_caches = False
        self._drain_waiters = []
        # replay now, so sequence numbers continue the spool's and writes
        # made before start() queue behind the replayed ones
        self._replay_spool()

    # -- metrics ------------------------------------------------------------

    @property
    def state(self):
        """The connection state (see the class docstring)."""
        return self.supervisor.state

    @property
    def last_error(self):
        """Why the database was last unreachable, or None."""
        return self.supervisor.last_error

    @property
    def queue_depth(self):
        """Writes accepted and not yet committed."""
        return len(self.queue)

    @property
    def spool_path(self):
        """Path of the disk spool, or None when there is no spool dir."""
        return self._spool.path if self._spool else None

    def stats(self):
        """A dict for the console and metrics."""
        out = dict(self.counters)
        out.update(state=self.state, queue_depth=self.queue_depth,
                   spool_pending=self.queue.spool_pending)
        return out

    # -- life cycle ---------------------------------------------------------

    def start(self):
        """Connect (the spool was loaded when the Storage was made). Fires when the first attempt is over,
        whatever its outcome (``state`` tells); never fails for an outage."""
        return self.supervisor.start()

    def stop(self):
        """Flush what can be flushed within ``stop_timeout``, then close.
        Writes still queued for spooled tables stay in the spool file."""
        if self.state in (STOPPED, CLOSED):
            # never started: no connection to end, the replayed journal stays as it is
            self.supervisor.state = CLOSED
            return defer.succeed(None)
        self.supervisor.stop_health_checks()
        d = (self.flushed(self.stop_timeout) if self.state == CONNECTED
             else defer.succeed(None))
        d.addBoth(lambda _: self._close())
        return d

    def _close(self):
        left = len(self.queue)
        unspooled = sum(1 for op in self.queue if not op.spooled)
        self.supervisor.close()
        self._fire_drain(False)
        self.log.info("storage {url}: closed ({left} writes still queued, "
                      "{lost} of them not spooled)", url=self.url, left=left,
                      lost=unspooled)
        return self.backend.close()

    def flushed(self, timeout=None):
        """Fire with True when the write queue is empty, or with False after
        *timeout* seconds or when the storage closes first."""
        if self.queue.idle:
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

    def _reconnected(self):
        self._refresh_caches = bool(self._caches)

    def _drained(self):
        if self._refresh_caches and self.state == CONNECTED:
            self._refresh_caches = False
            for name in list(self._caches):
                self._load_cache(name).addErrback(lambda f: None)
        self._fire_drain(True)

    def schema_changed(self):
        """Tell the storage its tables were (re)created (``db init``)."""
        self.queue.forget_tokens()

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
        op, effects = self.queue.add(kind, table, row, where, keys)
        if op is None:
            self.supervisor.apply(effects)
            return defer.fail(QueueFull("write queue of %s is full (%d)" % (
                self.url, self.queue.limit)))
        d = op.deferred = defer.Deferred()
        cache = self._caches.get(table)
        if cache is not None:
            cache.apply(op)
        self.supervisor.apply(effects)
        self.supervisor.pump()
        return d

    def _replay_spool(self):
        if self._spool is None:
            return
        records, last, batch = self._spool.load()
        ops = []
        for record in records:
            if record.get("table") not in self.schema:
                self.log.warn("storage spool: dropping write to unknown table "
                              "{table}", table=record.get("table"))
                continue
            ops.append(WriteOp.from_json(record))
        self.supervisor.apply(self.queue.replay(ops, last, batch))
        if ops:
            self.log.info("storage {url}: replaying {n} spooled writes from "
                          "{path}", url=self.url, n=len(ops), path=self._spool.path)

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
        for op in self.queue:  # writes not committed yet stay visible
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
            self.supervisor.lost(f)
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
                    self.supervisor.lost(f)
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
                self.supervisor.lost(f)
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
