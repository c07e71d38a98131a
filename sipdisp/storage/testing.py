"""
Test support for the storage backends (as ``twisted.internet.testing`` is
for Twisted): the test database URLs, and blocking helpers to reach, reset,
stop and start the database servers of this machine.

Stopping a server is only attempted when it runs on this host and its
control commands are present; a test that needs it is skipped otherwise.
"""

import os
import shutil
import sqlite3
import subprocess
import time

from .schema import TABLES, quote
from .url import DatabaseURL, redact

PG_URL = os.environ.get(
    "SIPDISP_TEST_PG_URL", "postgres://sipdisp:sipdisp@127.0.0.1:5432/sipdisp_test")
MYSQL_URL = os.environ.get(
    "SIPDISP_TEST_MYSQL_URL", "mysql://sipdisp:sipdisp@127.0.0.1:3306/sipdisp_test")

#: Tables the tests may create besides sipdisp's own (dropped on reset).
EXTRA_TABLES = ("location_attrs", "domain_attrs")

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", None)


class Unreachable(Exception):
    """The server of a test URL cannot be reached (message says why)."""


def _wait(check, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError("%s did not happen within %ss" % (what, seconds))


def _run(args, timeout=60, check=True):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, check=check)


class Server:
    """A database behind a URL, driven with blocking calls."""

    name = "database"

    def __init__(self, url):
        self.url = url
        self.parsed = DatabaseURL(url)

    def connect(self):
        raise NotImplementedError

    def check_reachable(self):
        """Raise Unreachable with the URL and the error if no connection."""
        try:
            self.connect().close()
        except Exception as exc:
            raise Unreachable("%s not reachable at %s: %s" % (
                self.name, redact(self.url), str(exc).strip()))

    def execute(self, sql, params=()):
        """Run one statement on a new connection; return its rows."""
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql, params or None)
            rows = cur.fetchall() if cur.description else []
            conn.commit()
            return rows
        finally:
            conn.close()

    def reset(self):
        """Drop every table the storage tests create."""
        for name in [t.name for t in TABLES] + list(EXTRA_TABLES):
            self.execute("DROP TABLE IF EXISTS %s" % quote(self.dialect, name))

    @property
    def controllable(self):
        """True if this test run may stop and start the server."""
        return False

    def restart(self, down_for=0.5):
        """Stop the server, keep it down for *down_for* s, start it again."""
        self.stop()
        try:
            time.sleep(down_for)
        finally:
            self.start()

    def ensure_up(self):
        """Start the server if a test left it stopped."""
        if self.controllable and not self.is_up():
            self.start()


class PostgresServer(Server):
    """The PostgreSQL cluster of this machine (pg_ctlcluster)."""

    name = "PostgreSQL"
    dialect = "postgres"

    def connect(self):
        import psycopg2
        u = self.parsed
        return psycopg2.connect(host=u.host or "127.0.0.1", port=u.port or 5432,
                                user=u.user, password=u.password,
                                dbname=u.database, connect_timeout=3)

    @property
    def _version(self):
        return sorted(os.listdir("/etc/postgresql"))[-1]

    @property
    def controllable(self):
        return (self.parsed.host in LOCAL_HOSTS and os.geteuid() == 0
                and shutil.which("pg_ctlcluster") is not None
                and os.path.isdir("/etc/postgresql"))

    def is_up(self):
        return _run(["pg_isready", "-q", "-h", self.parsed.host or "127.0.0.1",
                     "-p", str(self.parsed.port or 5432)], check=False).returncode == 0

    def stop(self):
        _run(["pg_ctlcluster", "--skip-systemctl-redirect", self._version, "main",
              "stop", "-m", "fast"])

    def start(self):
        _run(["pg_ctlcluster", "--skip-systemctl-redirect", self._version, "main",
              "start"], check=False)
        _wait(self.is_up, 60, "PostgreSQL start")


class MySQLServer(Server):
    """The MariaDB server of this machine (mysqladmin / start-stop-daemon)."""

    name = "MariaDB"
    dialect = "mysql"

    def connect(self):
        import pymysql
        u = self.parsed
        return pymysql.connect(host=u.host or "127.0.0.1", port=u.port or 3306,
                               user=u.user, password=u.password or "",
                               database=u.database, connect_timeout=3)

    @property
    def controllable(self):
        return (self.parsed.host in LOCAL_HOSTS and os.geteuid() == 0
                and os.path.exists("/usr/sbin/mariadbd")
                and shutil.which("mysqladmin") is not None)

    def is_up(self):
        return _run(["mysqladmin", "--protocol=socket", "-uroot", "ping"],
                    check=False).returncode == 0

    def stop(self):
        _run(["mysqladmin", "--protocol=socket", "-uroot", "shutdown"])
        _wait(lambda: not self.is_up(), 60, "MariaDB shutdown")

    def start(self):
        # mariadbd takes user=mysql from /etc/mysql/my.cnf; it needs /run/mysqld
        _run(["install", "-d", "-o", "mysql", "-g", "mysql", "/run/mysqld"],
             check=False)
        _run(["start-stop-daemon", "--start", "--oknodo", "--background",
              "--exec", "/usr/sbin/mariadbd"])
        _wait(self.is_up, 60, "MariaDB start")


class SQLiteServer(Server):
    """An SQLite file; its "outage" is another connection holding an
    exclusive lock, so writers get 'database is locked'."""

    name = "SQLite"
    dialect = "sqlite"

    def __init__(self, url):
        super().__init__(url)
        self._holder = None

    def connect(self):
        return sqlite3.connect(self.parsed.database, timeout=5)

    def execute(self, sql, params=()):
        conn = self.connect()
        try:
            rows = conn.execute(sql, params or ()).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    @property
    def controllable(self):
        return True

    def is_up(self):
        return self._holder is None

    def stop(self):
        conn = sqlite3.connect(self.parsed.database, timeout=5,
                               check_same_thread=False, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        self._holder = conn

    def start(self):
        holder, self._holder = self._holder, None
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()


def server_for(url):
    """The :class:`Server` helper for a test URL."""
    return {"postgres": PostgresServer, "mysql": MySQLServer,
            "sqlite": SQLiteServer}[DatabaseURL(url).backend](url)
