"""alias_db and dialplan against real peers: the dbaliases and dialplan
tables on SQLite, PostgreSQL and MariaDB (rows written and read through the
storage API as the services do), and a twistd-started sipdisp on SQLite
where plain UDP sockets register, call an alias and dial a national number
that a dialplan rule rewrites.

PostgreSQL and MariaDB come from SIPDISP_TEST_PG_URL / SIPDISP_TEST_MYSQL_URL
(scripts/ci-databases.sh); an unreachable server skips its tests. The
tables are shared with other tests running at the same time, so these
tests never drop them: they use values of their own and delete them."""

import os
import socket
import subprocess
import sys
import tempfile
import shutil
import uuid

from twisted.internet import defer
from twisted.trial import unittest

from sipdisp.aliases import Aliases
from sipdisp.dialplan import Dialplan
from sipdisp.storage import open_storage
from sipdisp.storage.admin import check_schema, init_schema
from sipdisp.storage.schema import SCHEMA
from sipdisp.storage.testing import MYSQL_URL, PG_URL, Unreachable, server_for
from tests.support.calls import rpc
from tests.support.processes import ROOT, Sipdisp

IN_CI = bool(os.environ.get("CI"))


class TablesSuite:
    """dbaliases and dialplan on one backend; subclasses give the URL."""

    timeout = 60
    url = None

    def server_url(self):
        return self.url

    @defer.inlineCallbacks
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sipdisp-aliases-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        url = self.server_url()
        if not url.startswith("sqlite"):
            try:
                server_for(url).check_reachable()
            except Unreachable as exc:
                if IN_CI:
                    raise AssertionError(str(exc))
                raise unittest.SkipTest(str(exc))
        self.storage = open_storage(url, ping_interval=0, retry_initial=0.05, retry_max=0.5)
        self.addCleanup(self.storage.stop)
        yield self.storage.start()
        self.assertEqual(self.storage.state, "connected", self.storage.last_error)
        yield init_schema(self.storage)
        self.tag = uuid.uuid4().hex[:8]  # this run's rows, apart from a parallel run's

    @defer.inlineCallbacks
    def test_tables_check_clean_against_sipdisps_schema(self):
        """dbaliases (version 1) and dialplan (version 2) have every column and version sipdisp expects."""
        tables = [SCHEMA["dbaliases"], SCHEMA["dialplan"]]
        self.assertEqual((yield check_schema(self.storage, tables)), [])
        live = yield self.storage.describe("dialplan")
        self.assertEqual(set(live), {"id", "dpid", "pr", "match_op", "match_exp", "match_len",
                                     "subst_exp", "repl_exp", "attrs"})

    @defer.inlineCallbacks
    def test_aliases_are_written_found_both_ways_and_removed(self):
        """An alias added through the table is found per lookup (with use_domain), reversed, removed."""
        aliases = Aliases(self.storage, use_domain=True)
        alias, user = f"9{self.tag}", f"alice{self.tag}"
        self.addCleanup(self.storage.delete, "dbaliases", {"alias_username": alias})
        self.assertTrue((yield aliases.add(f"{alias}@Example.com", f"{user}@example.com")))
        self.assertFalse((yield aliases.add(f"{alias}@example.com", f"{user}@example.com")))
        self.assertEqual((yield aliases.find(alias, "EXAMPLE.COM")), f"sip:{user}@example.com")
        self.assertIsNone((yield aliases.find(alias, "other.org")))
        self.assertEqual((yield aliases.find(alias, "other.org", use_domain=False)),
                         f"sip:{user}@example.com")
        self.assertEqual((yield aliases.find(user, "example.com", reverse=True)),
                         f"sip:{alias}@example.com")
        listed = yield aliases.list(f"{user}@example.com")
        self.assertEqual(listed, [{"alias": f"{alias}@example.com",
                                   "target": f"{user}@example.com"}])
        self.assertEqual((yield aliases.remove(f"{alias}@example.com")), 1)
        self.assertIsNone((yield aliases.find(alias, "example.com")))

    @defer.inlineCallbacks
    def test_dialplan_rows_load_and_translate(self):
        """Rules written to the dialplan table load in priority order and translate; a bad one is refused."""
        dpid = int(self.tag[:6], 16) % 1000000 + 1000
        self.addCleanup(self.storage.delete, "dialplan", {"dpid": dpid})
        rows = [
            dict(dpid=dpid, pr=2, match_op=1, match_exp="^0[1-9]", match_len=0,
                 subst_exp="^0(.*)$", repl_exp="+49\\1", attrs="de"),
            dict(dpid=dpid, pr=1, match_op=0, match_exp="112", match_len=3,
                 subst_exp="", repl_exp="911", attrs="emergency"),
            dict(dpid=dpid, pr=3, match_op=1, match_exp="([0-9", match_len=0,
                 subst_exp="", repl_exp="", attrs=""),
        ]
        for row in rows:
            yield self.storage.insert("dialplan", row)
        got = yield self.storage.select("dialplan", where={"dpid": dpid},
                                        order_by=["dpid", "pr", "id"])
        dialplan = Dialplan()
        summary = dialplan.load(got)
        self.assertEqual((summary["rules"], len(summary["refused"])), (2, 1))
        self.assertIn("does not compile", summary["refused"][0][1])
        result = dialplan.translate(dpid, "0301234")
        self.assertEqual((result.output, result.attrs), ("+49301234", "de"))
        self.assertEqual(dialplan.translate(dpid, "112").output, "911")
        self.assertIsNone(dialplan.translate(dpid, "999"))


class SQLiteTables(TablesSuite, unittest.TestCase):
    """The tables on SQLite (a file in a temporary directory)."""

    def server_url(self):
        return "sqlite:///%s" % os.path.join(self.tmp, "t.db")

    @defer.inlineCallbacks
    def test_tables_made_by_kamctl_are_read_as_they_are(self):
        """The DDL of kamctl's db_sqlite alias_db and dialplan scripts checks clean and is used."""
        path = os.path.join(self.tmp, "kamailio.db")
        import sqlite3
        with sqlite3.connect(path) as conn:
            conn.executescript(KAMCTL_SQLITE)
        storage = open_storage("sqlite:///" + path, ping_interval=0)
        self.addCleanup(storage.stop)
        yield storage.start()
        tables = [SCHEMA["dbaliases"], SCHEMA["dialplan"]]
        self.assertEqual((yield check_schema(storage, tables)), [])
        yield Aliases(storage).add("1000@example.com", "alice@example.com")
        self.assertEqual((yield Aliases(storage).find("1000", "x")), "sip:alice@example.com")


# kamctl's utils/kamctl/db_sqlite/{alias_db,dialplan}-create.sql (Kamailio 5.x)
KAMCTL_SQLITE = """
CREATE TABLE version (id INTEGER PRIMARY KEY NOT NULL, table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL, CONSTRAINT version_table_name_idx UNIQUE (table_name));
CREATE TABLE dbaliases (
    id INTEGER PRIMARY KEY NOT NULL,
    alias_username VARCHAR(64) DEFAULT '' NOT NULL,
    alias_domain VARCHAR(64) DEFAULT '' NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT '' NOT NULL
);
CREATE INDEX dbaliases_alias_user_idx ON dbaliases (alias_username);
CREATE INDEX dbaliases_alias_idx ON dbaliases (alias_username, alias_domain);
CREATE INDEX dbaliases_target_idx ON dbaliases (username, domain);
INSERT INTO version (table_name, table_version) values ('dbaliases','1');
CREATE TABLE dialplan (
    id INTEGER PRIMARY KEY NOT NULL,
    dpid INTEGER NOT NULL,
    pr INTEGER NOT NULL,
    match_op INTEGER NOT NULL,
    match_exp VARCHAR(64) NOT NULL,
    match_len INTEGER NOT NULL,
    subst_exp VARCHAR(64) NOT NULL,
    repl_exp VARCHAR(64) NOT NULL,
    attrs VARCHAR(64) NOT NULL
);
INSERT INTO version (table_name, table_version) values ('dialplan','2');
"""


class PostgresTables(TablesSuite, unittest.TestCase):
    """The tables on PostgreSQL."""

    url = PG_URL


class MySQLTables(TablesSuite, unittest.TestCase):
    """The tables on MariaDB/MySQL."""

    url = MYSQL_URL


# -- through real sockets ---------------------------------------------------------------

ROUTE = {
    "request_route": [
        {"if": {"is_method": "REGISTER"}, "then": [{"save": "location"}, "exit"]},
        {"alias_db_lookup": "dbaliases"},
        {"dp_translate": [0, "$rU/$rU", "$var(attrs)"]},
        {"if": {"lookup": "location"}, "then": ["t_relay", "exit"]},
        {"if": {"match": ["$rU", "^\\+[1-9][0-9]+$"]},
         "then": [{"set": {"$du": "GATEWAY"}},
                  {"append_hf": "X-Dialplan-Attrs: $var(attrs)\r\n"}, "t_relay", "exit"]},
        {"sl_send_reply": [404, "Not Found"]},
    ]}


class UA:
    """A UDP socket on 127.0.0.1 sending and receiving SIP text."""

    def __init__(self, name):
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]
        self.n = 0

    def request(self, method, ruri, proxy_port, to, extra=()):
        self.n += 1
        lines = [f"{method} {ruri} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{self.name}{self.n}",
                 f"From: <sip:{self.name}@127.0.0.1>;tag={self.name}{self.n}",
                 f"To: <{to}>", f"Call-ID: {self.name}-{self.n}-{uuid.uuid4().hex[:6]}",
                 f"CSeq: {self.n} {method}", "Max-Forwards: 70",
                 f"Contact: <sip:{self.name}@127.0.0.1:{self.port}>", *extra,
                 "Content-Length: 0", "", ""]
        self.sock.sendto("\r\n".join(lines).encode(), ("127.0.0.1", proxy_port))

    def receive(self, want):
        """The first message received whose first line contains ``want`` (skipping 100s)."""
        while True:
            data = self.sock.recv(65535).decode()
            if want in data.split("\r\n", 1)[0]:
                return data

    def close(self):
        self.sock.close()


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "sipdisp.cli", *args], env=env, timeout=60,
                          capture_output=True, text=True)


def test_an_alias_reaches_its_user_and_a_dialplan_rule_rewrites_a_number(tmp_path):
    """Over UDP: INVITE 1000 reaches alice (an alias made with sipdisp alias add), 0301234
    leaves as +49301234 with the rule's attrs; a bad row is refused in one line."""
    db = tmp_path / "sipdisp.db"
    url = f"sqlite:///{db}"
    added = _cli("alias", "add", "1000@127.0.0.1", "alice@127.0.0.1", "--url", url)
    assert added.returncode == 0 and "added 1000@127.0.0.1 -> alice@127.0.0.1" in added.stdout
    import sqlite3
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO dialplan (dpid, pr, match_op, match_exp, match_len, subst_exp, "
            "repl_exp, attrs) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(0, 1, 1, "^0[1-9][0-9]+$", 0, "^0(.*)$", "+49\\1", "national"),
             (0, 2, 1, "([bad", 0, "", "", "")])
        bad_id = conn.execute("SELECT id FROM dialplan WHERE match_exp = '([bad'").fetchone()[0]
    alice, caller, gateway = UA("alice"), UA("caller"), UA("gw")
    cfg = {"aliases": {"enabled": True}, "dialplan": {"enabled": True},
           "console": {"enabled": False},
           "routing": _with_gateway(ROUTE, f"sip:127.0.0.1:{gateway.port}")}
    proxy = Sipdisp(tmp_path, cfg).start()
    try:
        port = proxy.port("udp")
        alice.request("REGISTER", f"sip:127.0.0.1:{port}", port, "sip:alice@127.0.0.1",
                      extra=["Expires: 600"])
        assert "200" in alice.receive("SIP/2.0 200")
        caller.request("INVITE", f"sip:1000@127.0.0.1:{port}", port, "sip:1000@127.0.0.1")
        got = alice.receive("INVITE")
        assert got.startswith(f"INVITE sip:alice@127.0.0.1:{alice.port} SIP/2.0")
        caller.request("INVITE", f"sip:0301234@127.0.0.1:{port}", port,
                       "sip:0301234@127.0.0.1")
        got = gateway.receive("INVITE")
        assert got.startswith(f"INVITE sip:+49301234@127.0.0.1:{port} SIP/2.0")
        assert "X-Dialplan-Attrs: national" in got
        caller.request("INVITE", f"sip:2000@127.0.0.1:{port}", port, "sip:2000@127.0.0.1")
        assert caller.receive("SIP/2.0 404")
        assert rpc(proxy, "dp.translate", 0, "0221")["Output"] == "+49221"
        assert rpc(proxy, "alias.list") == [{"alias": "1000@127.0.0.1",
                                             "target": "alice@127.0.0.1"}]
        log = proxy.log_text()
        assert f"dialplan: row id {bad_id} of dialplan refused, rule skipped" in log
        assert "dialplan: loaded 1 rule(s) of 1 dialplan id(s) from dialplan (1 refused)" in log
    finally:
        proxy.stop()
        for ua in (alice, caller, gateway):
            ua.close()
    listed = _cli("alias", "list", "--url", url)
    assert listed.stdout.strip() == "1000@127.0.0.1 -> alice@127.0.0.1"
    assert _cli("alias", "rm", "1000@127.0.0.1", "--url", url).returncode == 0
    assert _cli("alias", "rm", "1000@127.0.0.1", "--url", url).returncode == 1


def _with_gateway(route, uri):
    """``route`` with the gateway URI in place of the GATEWAY placeholder."""
    import copy
    out = copy.deepcopy(route)
    for step in out["request_route"]:
        for inner in step.get("then", []) if isinstance(step, dict) else []:
            if isinstance(inner, dict) and "set" in inner:
                inner["set"] = {"$du": uri}
    return out
