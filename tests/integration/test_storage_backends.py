"""
The same storage behaviour suite on SQLite (temp dir), PostgreSQL and
MariaDB: CRUD on every table, an existing Kamailio-style schema read as it
is, no write lost across a real server restart in the middle of a burst, a
sipdisp restart during an outage, and LISTEN/NOTIFY on PostgreSQL.

PostgreSQL and MariaDB come from SIPDISP_TEST_PG_URL / SIPDISP_TEST_MYSQL_URL
(scripts/ci-databases.sh creates them). A server that cannot be reached
skips its tests with the URL and the error, except under CI, where it fails.
Tests that stop a server always start it again, whatever happens.
"""

import atexit
import datetime
import os
import shutil
import tempfile

from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from sipdisp.storage import StorageUnavailable, ge, lt, open_storage
from sipdisp.storage import schema as S
from sipdisp.storage.admin import check_schema, init_schema
from sipdisp.storage.testing import (MYSQL_URL, PG_URL, Unreachable,
                                     server_for)

IN_CI = bool(os.environ.get("CI"))
_STOPPABLE = []


@atexit.register
def _restart_everything():
    for server in _STOPPABLE:
        try:
            server.ensure_up()
        except Exception:
            pass


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def wait_until(predicate, seconds, step=0.05):
    deadline = reactor.seconds() + seconds
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError("condition not met within %ss" % seconds)
        yield sleep(step)


def sample_row(table, n):
    """A row for *table* with a value of the right kind in every column."""
    row = {}
    for c in table.columns:
        if c.auto:
            continue
        if c.kind == "string":
            row[c.name] = ("%s-%d" % (c.name, n))[-c.size:]
        elif c.kind == "float":
            row[c.name] = 0.5
        elif c.kind == "datetime":
            row[c.name] = datetime.datetime(2024, 1, 2, 3, 4, 5 + n)
        elif c.kind == "text":
            row[c.name] = "%s-%d" % (c.name, n)
        elif c.kind == "blob":
            row[c.name] = b"%s-%d" % (c.name.encode(), n)
        else:
            row[c.name] = n
    return row


def key_column(table):
    """A string column the sample rows differ in (and unique where it counts)."""
    for index in table.indexes:
        if index.unique and len(index.columns) == 1:
            return index.columns[0]
    for c in table.columns:
        if c.kind == "string" and c.size >= 16:
            return c.name
    return next(c.name for c in table.columns if not c.auto)


def other_values(column):
    """Two new values for *column*, as an update and an upsert would set."""
    return {"string": ("x", "y"), "text": ("x", "y"), "blob": (b"x", b"y"),
            "float": (0.25, 0.75),
            "datetime": (datetime.datetime(2025, 1, 1),
                         datetime.datetime(2025, 1, 2))}.get(column.kind, (77, 78))


# Tables as Kamailio's kamctl creates them (Kamailio 5.x), before sipdisp:
# the acc table lacks the seed's extra columns, and there is no cdrs.
KAMAILIO_DDL = {
    "postgres": [
        """CREATE TABLE version (id SERIAL PRIMARY KEY NOT NULL,
            table_name VARCHAR(32) NOT NULL,
            table_version INTEGER DEFAULT 0 NOT NULL,
            CONSTRAINT version_table_name_idx UNIQUE (table_name))""",
        """CREATE TABLE dispatcher (id SERIAL PRIMARY KEY NOT NULL,
            setid INTEGER DEFAULT 0 NOT NULL,
            destination VARCHAR(192) DEFAULT '' NOT NULL,
            flags INTEGER DEFAULT 0 NOT NULL, priority INTEGER DEFAULT 0 NOT NULL,
            attrs VARCHAR(128) DEFAULT '' NOT NULL,
            description VARCHAR(64) DEFAULT '' NOT NULL)""",
        """CREATE TABLE subscriber (id SERIAL PRIMARY KEY NOT NULL,
            username VARCHAR(64) DEFAULT '' NOT NULL,
            domain VARCHAR(64) DEFAULT '' NOT NULL,
            password VARCHAR(64) DEFAULT '' NOT NULL,
            ha1 VARCHAR(128) DEFAULT '' NOT NULL,
            ha1b VARCHAR(128) DEFAULT '' NOT NULL,
            CONSTRAINT subscriber_account_idx UNIQUE (username, domain))""",
        """CREATE TABLE acc (id SERIAL PRIMARY KEY NOT NULL,
            method VARCHAR(16) DEFAULT '' NOT NULL,
            from_tag VARCHAR(128) DEFAULT '' NOT NULL,
            to_tag VARCHAR(128) DEFAULT '' NOT NULL,
            callid VARCHAR(255) DEFAULT '' NOT NULL,
            sip_code VARCHAR(3) DEFAULT '' NOT NULL,
            sip_reason VARCHAR(128) DEFAULT '' NOT NULL,
            time TIMESTAMP WITHOUT TIME ZONE NOT NULL)""",
    ],
    "mysql": [
        """CREATE TABLE `version` (`id` INT(10) UNSIGNED AUTO_INCREMENT
            PRIMARY KEY NOT NULL, `table_name` VARCHAR(32) NOT NULL,
            `table_version` INT UNSIGNED DEFAULT 0 NOT NULL,
            CONSTRAINT table_name_idx UNIQUE (`table_name`))""",
        """CREATE TABLE `dispatcher` (`id` INT(10) UNSIGNED AUTO_INCREMENT
            PRIMARY KEY NOT NULL, `setid` INT DEFAULT 0 NOT NULL,
            `destination` VARCHAR(192) DEFAULT '' NOT NULL,
            `flags` INT DEFAULT 0 NOT NULL, `priority` INT DEFAULT 0 NOT NULL,
            `attrs` VARCHAR(128) DEFAULT '' NOT NULL,
            `description` VARCHAR(64) DEFAULT '' NOT NULL)""",
        """CREATE TABLE `subscriber` (`id` INT(10) UNSIGNED AUTO_INCREMENT
            PRIMARY KEY NOT NULL, `username` VARCHAR(64) DEFAULT '' NOT NULL,
            `domain` VARCHAR(64) DEFAULT '' NOT NULL,
            `password` VARCHAR(64) DEFAULT '' NOT NULL,
            `ha1` VARCHAR(128) DEFAULT '' NOT NULL,
            `ha1b` VARCHAR(128) DEFAULT '' NOT NULL,
            CONSTRAINT account_idx UNIQUE (`username`, `domain`))""",
        """CREATE TABLE `acc` (`id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY
            NOT NULL, `method` VARCHAR(16) DEFAULT '' NOT NULL,
            `from_tag` VARCHAR(128) DEFAULT '' NOT NULL,
            `to_tag` VARCHAR(128) DEFAULT '' NOT NULL,
            `callid` VARCHAR(255) DEFAULT '' NOT NULL,
            `sip_code` VARCHAR(3) DEFAULT '' NOT NULL,
            `sip_reason` VARCHAR(128) DEFAULT '' NOT NULL,
            `time` DATETIME NOT NULL)""",
    ],
}
KAMAILIO_DDL["sqlite"] = [s.replace("SERIAL", "INTEGER")
                          for s in KAMAILIO_DDL["postgres"]]

KAMAILIO_ROWS = [
    # as the seed does it, and as kamctl would
    "INSERT INTO version (table_name, table_version) VALUES "
    "('version', 1), ('dispatcher', 4), ('subscriber', 7), ('acc', 5)",
    "INSERT INTO dispatcher (setid, destination, priority, flags, description) "
    "VALUES (0, 'sip:192.168.1.20:5080', 1, 0, 'fs1')",
    "INSERT INTO subscriber (username, domain, password, ha1, ha1b) VALUES "
    "('1000', 'example.com', 'secret', 'aaa', 'bbb')",
    "INSERT INTO acc (method, from_tag, to_tag, callid, sip_code, sip_reason, "
    "time) VALUES ('INVITE', 'ft', 'tt', 'kam-call-1', '200', 'OK', "
    "'2024-03-04 05:06:07')",
]


class BackendSuite:
    """The behaviour every backend must show; subclasses give the URL."""

    timeout = 120
    url = None

    def server_url(self):
        return self.url

    @defer.inlineCallbacks
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sipdisp-storage-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.spool_dir = os.path.join(self.tmp, "spool")
        self.server = server_for(self.server_url())
        try:
            self.server.check_reachable()
        except Unreachable as exc:
            if IN_CI:
                raise AssertionError("%s (CI must run this; see "
                                     "scripts/ci-databases.sh)" % exc)
            raise unittest.SkipTest(str(exc))
        self.server.reset()
        self.storage = yield self.open()
        yield init_schema(self.storage)

    @defer.inlineCallbacks
    def open(self, **kw):
        kw.setdefault("spool_dir", self.spool_dir)
        kw.setdefault("retry_initial", 0.05)
        kw.setdefault("retry_max", 0.5)
        kw.setdefault("ping_interval", 0)
        storage = open_storage(self.server_url(), **kw)
        self.addCleanup(storage.stop)
        yield storage.start()
        self.assertEqual(storage.state, "connected", storage.last_error)
        return storage

    def need_control(self):
        if not self.server.controllable:
            reason = ("cannot stop and start the %s server of %s from this test "
                      "run (not local, not root, or no control commands)" % (
                          self.server.name, self.server_url()))
            if IN_CI:
                raise AssertionError(reason)
            raise unittest.SkipTest(reason)
        _STOPPABLE.append(self.server)
        self.addCleanup(self.server.ensure_up)

    def ph(self):
        return "?" if self.storage.dialect == "sqlite" else "%s"

    # -- CRUD ---------------------------------------------------------------

    @defer.inlineCallbacks
    def test_crud_on_every_table(self):
        """Every table takes inserts, selects, updates, upserts and deletes
        through the API, with its values read back as written."""
        st = self.storage
        for table in S.TABLES:
            key = key_column(table)
            a, b = sample_row(table, 1), sample_row(table, 2)
            self.assertEqual((yield st.insert(table.name, a)), 1, table.name)
            yield st.insert(table.name, b)
            [got] = yield st.select(table.name, where={key: a[key]})
            for column, value in a.items():
                if isinstance(value, float):
                    self.assertAlmostEqual(got[column], value, places=3)
                elif isinstance(value, bytes):  # psycopg2 reads BYTEA as a memoryview
                    self.assertEqual(bytes(got[column]), value, (table.name, column))
                else:
                    self.assertEqual(got[column], value, (table.name, column))
            if table.primary_key:
                self.assertIsNotNone(got[table.primary_key])
            other = [c for c in table.columns if not c.auto and c.name != key][-1]
            x, y = other_values(other)
            changed = yield st.update(table.name, {other.name: x}, {key: a[key]})
            self.assertEqual(changed, 1, table.name)
            yield st.upsert(table.name, dict(b, **{other.name: y}), keys=[key])
            got = yield st.select(table.name, where={key: [a[key], b[key]]},
                                  columns=[key, other.name], order_by=[key])
            self.assertEqual([r[other.name] for r in got], [x, y], table.name)
            deleted = yield st.delete(table.name, {key: [a[key], b[key]]})
            self.assertEqual(deleted, 2, table.name)
            self.assertEqual((yield st.select(table.name, where={key: a[key]})), [])

    @defer.inlineCallbacks
    def test_upsert_inserts_then_updates_location(self):
        """A registration refresh is one upsert keyed by ruid."""
        st = self.storage
        row = {"ruid": "r-1", "username": "alice", "domain": "example.com",
               "contact": "sip:alice@192.0.2.1:5060", "q": 0.5,
               "expires": datetime.datetime(2030, 1, 1, 0, 0, 0),
               "callid": "c1", "cseq": 1, "user_agent": "test"}
        self.assertEqual((yield st.upsert("location", row, keys=["ruid"])), 1)
        row.update(cseq=2, expires=datetime.datetime(2030, 1, 1, 0, 1, 0))
        yield st.upsert("location", row, keys=["ruid"])
        got = yield st.select("location", where={"username": "alice"})
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0]["cseq"], 2)
        self.assertEqual(got[0]["expires"], datetime.datetime(2030, 1, 1, 0, 1, 0))
        self.assertIsNone(got[0]["received"])
        self.assertEqual(got[0]["server_id"], 0)

    @defer.inlineCallbacks
    def test_where_operators_order_and_limit(self):
        """lt/ge, IN, NULL, ORDER BY and LIMIT select the same rows everywhere."""
        st = self.storage
        base = datetime.datetime(2030, 1, 1)
        for i in range(5):
            yield st.insert("location", {
                "ruid": "r%d" % i, "username": "u%d" % (i % 2), "contact": "c%d" % i,
                "expires": base + datetime.timedelta(minutes=i),
                "received": None if i % 2 else "sip:192.0.2.%d" % i})
        expired = yield st.select("location", where={
            "expires": lt(base + datetime.timedelta(minutes=2))}, order_by=["ruid"])
        self.assertEqual([r["ruid"] for r in expired], ["r0", "r1"])
        got = yield st.select("location", where={"username": "u0", "received": None})
        self.assertEqual(got, [])
        got = yield st.select("location", where={"ruid": ["r1", "r3", "r9"]},
                              columns=["ruid"], order_by=["-ruid"])
        self.assertEqual(got, [{"ruid": "r3"}, {"ruid": "r1"}])
        got = yield st.select("location", where={"expires": ge(base)},
                              order_by=["-expires"], limit=2)
        self.assertEqual([r["ruid"] for r in got], ["r4", "r3"])
        n = yield st.delete("location", {"expires": lt(base + datetime.timedelta(
            minutes=3))})
        self.assertEqual(n, 3)

    @defer.inlineCallbacks
    def test_hostile_values_are_stored_as_data(self):
        """Quotes, semicolons and SQL in values are stored and read verbatim."""
        st = self.storage
        evil = "x'); DROP TABLE acc; -- \u00e9\u4e2d"
        yield st.insert("acc", {"method": "INVITE", "callid": evil,
                                "sip_reason": evil[:40], "time": datetime.datetime(
                                    2024, 1, 1)})
        got = yield st.select("acc", where={"callid": evil})
        self.assertEqual(got[0]["callid"], evil)
        rows = yield st.run_query("SELECT callid FROM acc WHERE callid = %s"
                                  % self.ph(), (evil,))
        self.assertEqual(rows, [(evil,)])

    # -- schema ---------------------------------------------------------------

    @defer.inlineCallbacks
    def test_fresh_schema_checks_clean_and_init_is_idempotent(self):
        """After db init the check finds nothing; a second init changes nothing."""
        self.assertEqual((yield check_schema(self.storage)), [])
        created, added = yield init_schema(self.storage)
        self.assertEqual((created, added), ([], []))
        versions = yield self.storage.select("version")
        self.assertEqual({r["table_name"]: r["table_version"] for r in versions},
                         {t.name: t.version for t in S.TABLES})

    @defer.inlineCallbacks
    def test_check_reports_other_versions_and_missing_columns(self):
        """db check names a table of another version and a missing table."""
        st = self.storage
        yield st.update("version", {"table_version": 3}, {"table_name": "dispatcher"})
        yield st.run_query("DROP TABLE cdrs")
        problems = yield check_schema(st)
        self.assertEqual(problems, ["missing table cdrs",
                                    "dispatcher: version 3, sipdisp expects 4"])

    @defer.inlineCallbacks
    def test_reads_an_existing_kamailio_schema(self):
        """Tables made by Kamailio's DDL, with rows written the Kamailio way,
        read through the API as they are; db init then adds only what is
        missing (the seed's acc columns, other tables) and keeps the rows."""
        st = self.storage
        self.server.reset()
        for stmt in KAMAILIO_DDL[st.dialect] + KAMAILIO_ROWS:
            yield st.run_query(stmt)
        [dst] = yield st.select("dispatcher", where={"setid": 0})
        self.assertEqual((dst["destination"], dst["priority"], dst["description"]),
                         ("sip:192.168.1.20:5080", 1, "fs1"))
        [sub] = yield st.select("subscriber", where={"username": "1000",
                                                     "domain": "example.com"})
        self.assertEqual((sub["password"], sub["ha1"]), ("secret", "aaa"))
        [call] = yield st.select("acc")
        self.assertEqual(call["time"], datetime.datetime(2024, 3, 4, 5, 6, 7))
        problems = yield check_schema(st)
        self.assertIn("acc: missing column src_user string(64)", problems)
        self.assertIn("missing table location", problems)
        created, added = yield init_schema(st)
        self.assertIn("location", created)
        self.assertNotIn("acc", created)
        self.assertEqual(sorted(added), sorted("acc." + c.name for c in S._ACC_EXTRA))
        self.assertEqual((yield check_schema(st)), [])
        [call] = yield st.select("acc")
        self.assertEqual((call["callid"], call["src_user"]), ("kam-call-1", ""))
        yield st.insert("acc", {"method": "BYE", "callid": "kam-call-1",
                                "time": datetime.datetime(2024, 3, 4, 5, 7, 0),
                                "src_user": "1000", "dst_domain": "example.com"})
        got = yield st.select("acc", where={"src_user": "1000"})
        self.assertEqual(got[0]["dst_domain"], "example.com")

    # -- outages ----------------------------------------------------------------

    @defer.inlineCallbacks
    def test_server_restart_mid_burst_loses_no_write(self):
        """1,000 writes in flight, the database server stopped and started in
        the middle of the burst: every one of them is in the table once, and
        a cached table is read from memory while the server is down."""
        self.need_control()
        st = self.storage
        yield st.insert("dispatcher", {"setid": 7, "destination": "sip:gw1"})
        yield st.cache("dispatcher")
        total, writes, restart = 1000, [], None
        cached_read = []
        t0 = datetime.datetime(2024, 6, 1)
        for i in range(total):
            writes.append(st.insert("acc", {
                "method": "INVITE", "callid": "burst-%04d" % i, "sip_code": "200",
                "sip_reason": "OK", "time": t0 + datetime.timedelta(seconds=i),
                "src_user": "u%d" % i}))
            if i == 300:
                restart = threads.deferToThread(self.server.restart, 0.5)
            if i > 300 and not cached_read and st.state != "connected":
                got = yield st.select("dispatcher", where={"setid": 7})
                cached_read.append(got)
            if i % 10 == 9:
                yield sleep(0.01)
        yield restart
        results = yield defer.gatherResults(writes).addTimeout(90, reactor)
        # 1 row each; None where a COMMIT cut off by the restart was
        # confirmed afterwards through its batch token
        self.assertEqual([r for r in results if r not in (1, None)], [])
        rows = yield threads.deferToThread(
            self.server.execute, "SELECT callid FROM acc WHERE callid LIKE 'burst-%'")
        callids = sorted(r[0] for r in rows)
        self.assertEqual(callids, ["burst-%04d" % i for i in range(total)],
                         "lost or doubled writes")
        self.assertGreaterEqual(st.counters["disconnects"], 1,
                                "the restart was not noticed mid-burst")
        self.assertGreater(st.counters["queue_peak"], 1)
        self.assertEqual(cached_read and [r["destination"] for r in cached_read[0]],
                         ["sip:gw1"])
        self.assertEqual(st.state, "connected")
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_sipdisp_restart_during_outage_keeps_spooled_records(self):
        """Call records and registrations written while the server is down
        are spooled to disk; a new sipdisp process replays them once the
        server is back, and removes the spool."""
        self.need_control()
        st = self.storage
        yield threads.deferToThread(self.server.stop)
        try:
            for i in range(50):
                st.insert("acc", {"method": "BYE", "callid": "spool-%02d" % i,
                                  "time": datetime.datetime(2024, 1, 1, 0, 0, i)})
            st.upsert("location", {"ruid": "spool-r", "username": "bob",
                                   "contact": "sip:bob@192.0.2.7"}, keys=["ruid"])
            yield wait_until(lambda: st.state != "connected", 15)
            path = st.spool_path
            yield st.stop()           # sipdisp goes away during the outage
            self.assertTrue(os.path.exists(path))
        finally:
            yield threads.deferToThread(self.server.start)
        again = yield self.open()
        self.assertTrue((yield again.flushed(timeout=60)))
        self.assertEqual(again.counters["replayed"], 51)
        rows = yield again.select("acc", columns=["callid"], order_by=["callid"])
        self.assertEqual([r["callid"] for r in rows],
                         ["spool-%02d" % i for i in range(50)])
        [loc] = yield again.select("location", where={"ruid": "spool-r"})
        self.assertEqual(loc["contact"], "sip:bob@192.0.2.7")
        self.assertFalse(os.path.exists(path))
        self.flushLoggedErrors()


class SQLiteBackendTests(BackendSuite, unittest.TestCase):
    """The behaviour suite on an SQLite file in a temporary directory."""

    def server_url(self):
        if self.url is None:
            self.url = "sqlite:///%s?timeout=0.05" % os.path.join(self.tmp, "t.db")
        return self.url


class ServerOutageTests:
    """Outage behaviour only a database server shows (an SQLite lock does
    not keep readers out)."""

    @defer.inlineCallbacks
    def test_read_of_uncached_table_during_outage_fails_clearly(self):
        """A table nobody cached cannot be read while the server is down."""
        self.need_control()
        yield threads.deferToThread(self.server.stop)
        try:
            yield self.assertFailure(
                self.storage.select("subscriber", where={"username": "x"}),
                StorageUnavailable)
        finally:
            yield threads.deferToThread(self.server.start)
        self.flushLoggedErrors()


class PostgresBackendTests(ServerOutageTests, BackendSuite, unittest.TestCase):
    """The behaviour suite on PostgreSQL (txpostgres)."""

    url = PG_URL

    @defer.inlineCallbacks
    def test_listen_notify_survives_a_server_restart(self):
        """NOTIFY reaches listen() callbacks, from sipdisp and from another
        client, and again after the server restarted (re-subscribed)."""
        st = self.storage
        got = []
        yield st.listen("sipdisp_test", lambda channel, payload: got.append(payload))
        yield st.notify("sipdisp_test", "one")
        yield wait_until(lambda: "one" in got, 10)
        yield threads.deferToThread(self.server.execute,
                                    "SELECT pg_notify('sipdisp_test', 'two')")
        yield wait_until(lambda: "two" in got, 10)
        self.need_control()
        yield threads.deferToThread(self.server.restart, 0.2)
        for attempt in range(100):
            yield threads.deferToThread(self.server.execute,
                                        "SELECT pg_notify('sipdisp_test', %s)",
                                        ("three-%d" % attempt,))
            yield sleep(0.2)
            if any(p.startswith("three") for p in got):
                break
        self.assertTrue(any(p.startswith("three") for p in got),
                        "no notification after the restart")
        self.flushLoggedErrors()


class MySQLBackendTests(ServerOutageTests, BackendSuite, unittest.TestCase):
    """The behaviour suite on MariaDB/MySQL (pymysql through adbapi)."""

    url = MYSQL_URL
