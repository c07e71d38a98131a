"""OpenSIPS 3.x's dispatcher table (version 9, its own DDL) read as is on
SQLite, PostgreSQL and MariaDB: created with OpenSIPS' columns, filled with
OpenSIPS-style rows, read through the storage API and turned into sets.
The shared server databases get Kamailio's table back afterwards."""

import os
import shutil
import tempfile

from twisted.internet import defer
from twisted.trial import unittest

from sipdisp.dispatcher import Dispatcher
from sipdisp.dispatcher.sources import OPENSIPS_TABLE, TableSource
from sipdisp.storage import open_storage
from sipdisp.storage import schema as S
from sipdisp.storage.admin import init_schema
from sipdisp.storage.testing import MYSQL_URL, PG_URL, Unreachable, server_for

IN_CI = bool(os.environ.get("CI"))

#: (setid, destination, socket, state, probe_mode, weight, priority, attrs, description)
ROWS = [
    (1, "sip:127.0.0.1:5081", "udp:127.0.0.1:5060", 0, 1, "1", 0, "duid=fs1", "fs1"),
    (1, "sip:127.0.0.1:5082", None, 0, 0, "3", 0, None, "fs2"),
    (2, "sip:127.0.0.1:5083", None, 2, 0, "1", 0, None, None),
]


class OpensipsTableSuite:
    """The OpenSIPS table read as is; subclasses give the URL."""

    timeout = 60
    url = None

    def server_url(self):
        return self.url

    @defer.inlineCallbacks
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sipdisp-opensips-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        url = self.server_url()
        if not url.startswith("sqlite"):
            try:
                server_for(url).check_reachable()
            except Unreachable as exc:
                if IN_CI:
                    raise AssertionError(str(exc))
                raise unittest.SkipTest(str(exc))
        self.storage = open_storage(url, retry_initial=0.05, retry_max=0.5, ping_interval=0)
        yield self.storage.start()
        self.addCleanup(self.storage.stop)
        self.addCleanup(self.restore_kamailio_table)
        yield self.storage.run_query("DROP TABLE IF EXISTS dispatcher")
        yield self.storage.run_query(S.create_table(self.storage.dialect, OPENSIPS_TABLE))
        ph = "?" if self.storage.dialect == "sqlite" else "%s"
        for row in ROWS:
            yield self.storage.run_query(
                "INSERT INTO dispatcher (setid, destination, socket, state, probe_mode, "
                "weight, priority, attrs, description) VALUES (%s)" % ", ".join([ph] * 9), row)

    @defer.inlineCallbacks
    def restore_kamailio_table(self):
        """Put Kamailio's dispatcher table back for the other tests of the shared database."""
        yield self.storage.run_query("DROP TABLE IF EXISTS dispatcher")
        yield init_schema(self.storage)

    @defer.inlineCallbacks
    def test_the_opensips_table_is_read_as_is(self):
        """Auto-detected from its columns: states, probe modes, weights and sockets become
        sets with AP/AX/IP states, 25/75 % weights and the socket shown by dispatcher.list."""
        columns = yield self.storage.describe("dispatcher")
        self.assertIn("probe_mode", columns)
        self.assertNotIn("flags", columns)
        source = TableSource(self.storage)
        rows = yield source.load()
        self.assertEqual(source.describe(), "table dispatcher (OpenSIPS format)")
        d = Dispatcher()
        summary = d.load(rows, source=source.describe())
        self.assertEqual((summary["sets"], summary["destinations"]), (2, 3))
        self.assertEqual([x.letters for x in d.destinations()], ["AP", "AX", "IP"])
        fs1, fs2 = d.sets[1].dests
        self.assertEqual((fs1.weight, fs2.weight, fs1.rweight, fs2.rweight), (25, 75, 1, 3))
        self.assertEqual((fs1.socket, fs1.duid, fs2.description), ("udp:127.0.0.1:5060",
                                                                   "fs1", "fs2"))
        entry = d.listing()["RECORDS"][0]["SET"]["TARGETS"][0]["DEST"]
        self.assertEqual(entry["SOCKET"], "udp:127.0.0.1:5060")

    @defer.inlineCallbacks
    def test_a_bad_weight_is_refused_naming_the_row(self):
        """A weight OpenSIPS would read as a statistic name is refused with the row id."""
        ph = "?" if self.storage.dialect == "sqlite" else "%s"
        yield self.storage.run_query(
            "UPDATE dispatcher SET weight = %s WHERE destination = %s" % (ph, ph),
            ("load_fs2", "sip:127.0.0.1:5082"))
        error = yield self.assertFailure(TableSource(self.storage).load(), ValueError)
        self.assertIn("weight must be an integer, got 'load_fs2'", str(error))
        self.assertIn("dispatcher table row id", str(error))


class SQLiteOpensipsTable(OpensipsTableSuite, unittest.TestCase):
    """On an SQLite file in a temporary directory."""

    def server_url(self):
        return "sqlite:///%s" % os.path.join(self.tmp, "opensips.db")


class PostgresOpensipsTable(OpensipsTableSuite, unittest.TestCase):
    """On PostgreSQL."""

    url = PG_URL


class MySQLOpensipsTable(OpensipsTableSuite, unittest.TestCase):
    """On MariaDB."""

    url = MYSQL_URL
