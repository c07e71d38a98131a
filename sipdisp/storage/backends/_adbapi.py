"""
Shared code of the backends that run a DB-API driver in adbapi threads
(SQLite and MySQL/MariaDB).
"""

from twisted.enterprise import adbapi
from twisted.internet import defer

from .. import query
from ..base import Backend


class _Connection(adbapi.Connection):
    """adbapi's reconnecting connection, minus its traceback per outage.

    A failed rollback means the connection is dead: drop it (the next
    interaction opens a new one) and report ConnectionLost; the storage
    layer logs the outage once.
    """

    def rollback(self):
        try:
            self._connection.rollback()
            if self._pool.reconnect:
                cursor = self._connection.cursor()
                cursor.execute(self._pool.good_sql)
                cursor.close()
                self._connection.commit()
        except BaseException:
            self._pool.disconnect(self._connection)
            raise adbapi.ConnectionLost()


class QuietConnectionPool(adbapi.ConnectionPool):
    """adbapi.ConnectionPool that leaves outage logging to the caller."""

    connectionFactory = _Connection

    def _runInteraction(self, interaction, *args, **kw):
        conn = self.connectionFactory(self)
        trans = self.transactionFactory(self, conn)
        try:
            result = interaction(trans, *args, **kw)
            trans.close()
            conn.commit()
            return result
        except BaseException:
            try:
                conn.rollback()
            except BaseException:
                pass  # the connection was dropped; the original error follows
            raise


class AdbapiBackend(Backend):
    """Runs query programs on blocking cursors in the adbapi thread pool."""

    def __init__(self, url, schema, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.url = url
        self.schema = schema
        self._reactor = reactor
        self.pool = None
        self.sql = query.DIALECTS[self.dialect]

    def _make_pool(self):
        raise NotImplementedError

    def connect(self):
        if self.pool is None:
            self.pool = self._make_pool()
        return self.ping()

    def close(self):
        if self.pool is not None:
            pool, self.pool = self.pool, None
            pool.close()
        return defer.succeed(None)

    def _run(self, programs):
        if self.pool is None:
            return defer.fail(adbapi.ConnectionLost("not connected"))
        return self.pool.runInteraction(query.run_blocking, programs)

    def ping(self):
        return self._run([query.raw_program("SELECT 1", ())])

    def write_batch(self, ops):
        return self._run([query.write_program(self.sql, op) for op in ops])

    def select(self, table, where=None, columns=None, order_by=None, limit=None):
        d = self._run([query.select_program(self.sql, table, where, columns,
                                            order_by, limit)])
        return d.addCallback(lambda results: results[0])

    def run_query(self, sql, params=()):
        d = self._run([query.raw_program(sql, params)])
        return d.addCallback(lambda results: results[0])
