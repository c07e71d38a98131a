"""
``mysql://user:pw@host:port/db``: MySQL or MariaDB through pymysql in
adbapi threads, with ``cp_reconnect=True`` so a connection found dead is
dropped and the next query opens a new one; the storage layer retries.

Options: ``?pool=N`` (threads/connections, default 3),
``?connect_timeout=S`` (default 5), ``?read_timeout=S`` (default 30).
"""

from twisted.enterprise import adbapi
from twisted.internet import error as ierror

from ..base import type_family
from ._adbapi import AdbapiBackend, QuietConnectionPool

# MySQL/MariaDB error numbers that mean "the server or the link is gone or
# busy", worth queueing and retrying, as opposed to errors in the statement.
TRANSIENT_CODES = frozenset({
    1040,  # too many connections
    1053,  # server shutdown in progress
    1205,  # lock wait timeout
    1213,  # deadlock
    1290,  # read-only (failover in progress)
    1927,  # connection killed (MariaDB)
    2002, 2003, 2005, 2006, 2013, 2014, 2055,  # client: cannot connect / lost
    4031,  # disconnected by the server for inactivity
})


class MySQLBackend(AdbapiBackend):
    """MySQL/MariaDB via pymysql and a reconnecting adbapi pool."""

    dialect = "mysql"

    def _make_pool(self):
        from pymysql.constants import CLIENT

        u, p = self.url, self.url.params
        size = int(p.get("pool", 3))
        return QuietConnectionPool(
            "pymysql", host=u.host or "127.0.0.1", port=u.port or 3306,
            user=u.user or "root", password=u.password or "",
            database=u.database, charset="utf8mb4", autocommit=False,
            # rowcount of UPDATE = rows matched, not rows changed, which the
            # upsert program relies on
            client_flag=CLIENT.FOUND_ROWS,
            connect_timeout=float(p.get("connect_timeout", 5)),
            read_timeout=float(p.get("read_timeout", 30)),
            write_timeout=float(p.get("read_timeout", 30)),
            cp_min=1, cp_max=size, cp_reconnect=True, cp_good_sql="SELECT 1",
            cp_noisy=False, cp_reactor=self._reactor)

    def describe(self, table):
        d = self.run_query(
            "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION", (table,))

        def parse(rows):
            if not rows:
                return None
            return {name: (type_family(dtype), int(length) if length else None)
                    for name, dtype, length in rows}
        return d.addCallback(parse)

    def is_transient(self, failure):
        import pymysql
        if failure.check(adbapi.ConnectionLost, pymysql.err.InterfaceError,
                         ConnectionError, OSError, ierror.ConnectionLost):
            return True
        if failure.check(pymysql.err.OperationalError, pymysql.err.InternalError):
            args = failure.value.args
            return bool(args) and args[0] in TRANSIENT_CODES
        return False
