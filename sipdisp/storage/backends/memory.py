"""
``memory://[name]``: the tables as lists of dicts, for unit tests.

Databases with a name are shared in the process (two Storage objects on
``memory://db1`` see the same rows, as two sipdisp runs see one server).
``available`` switches an outage on and off; ``reject`` makes chosen
writes fail the way a constraint violation would.
"""

from twisted.internet import defer

from .. import query
from ..base import Backend
from ..schema import NO_DEFAULT

_DATABASES = {}


class MemoryUnavailable(Exception):
    """The memory database is switched off (a simulated outage)."""


class MemoryRejected(Exception):
    """A write refused by the ``reject`` hook (a simulated constraint error)."""


class MemoryDatabase:
    """Rows and id counters, per table."""

    def __init__(self):
        self.tables = {}
        self.ids = {}
        self.channels = {}


def drop_database(name):
    """Forget a named memory database (test clean-up)."""
    _DATABASES.pop(name, None)


class MemoryBackend(Backend):
    """An in-process database with the same semantics as the SQL backends."""

    dialect = "memory"

    def __init__(self, url, schema, reactor=None):
        self.url = url
        self.schema = schema
        name = url.database
        self.db = (_DATABASES.setdefault(name, MemoryDatabase()) if name
                   else MemoryDatabase())
        self.available = True
        self.reject = None
        self.batches = 0
        for table in schema.values():
            self.db.tables.setdefault(table.name, [])
            self.db.ids.setdefault(table.name, 0)

    def _check(self):
        if not self.available:
            raise MemoryUnavailable("memory database %r is down" % self.url.database)

    def connect(self):
        return defer.maybeDeferred(self._check)

    def close(self):
        return defer.succeed(None)

    def ping(self):
        return defer.maybeDeferred(self._check)

    def _defaults(self, table):
        return {c.name: (None if c.default is NO_DEFAULT else c.default)
                for c in self.schema[table].columns if not c.auto}

    def _next_id(self, table):
        def next_id():
            self.db.ids[table] += 1
            return self.schema[table].primary_key, self.db.ids[table]
        return next_id

    def _write_batch(self, ops):
        self._check()
        self.batches += 1
        snapshot = {op.table: [dict(r) for r in self.db.tables[op.table]]
                    for op in ops}
        try:
            results = []
            for op in ops:
                if self.reject is not None and self.reject(op):
                    raise MemoryRejected("rejected %r" % (op,))
                results.append(query.apply_write(
                    self.db.tables[op.table], op, self._defaults(op.table),
                    self._next_id(op.table)))
            return results
        except Exception:
            self.db.tables.update(snapshot)
            raise

    def write_batch(self, ops):
        return defer.maybeDeferred(self._write_batch, ops)

    def _select(self, table, where, columns, order_by, limit):
        self._check()
        return query.select_rows(self.db.tables[table], where, columns,
                                 order_by, limit)

    def select(self, table, where=None, columns=None, order_by=None, limit=None):
        return defer.maybeDeferred(self._select, table, where, columns,
                                   order_by, limit)

    def run_query(self, sql, params=()):
        return defer.fail(NotImplementedError("memory backend has no SQL"))

    def describe(self, table):
        if table not in self.schema:
            return defer.succeed(None)
        return defer.succeed({c.name: (c.family, c.size)
                              for c in self.schema[table].columns})

    def listen(self, channel, callback):
        self.db.channels.setdefault(channel, []).append(callback)
        return defer.succeed(None)

    def notify(self, channel, payload):
        def deliver():
            self._check()
            for callback in list(self.db.channels.get(channel, ())):
                callback(channel, payload)
        return defer.maybeDeferred(deliver)

    def is_transient(self, failure):
        return failure.check(MemoryUnavailable) is not None
