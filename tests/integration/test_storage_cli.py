"""`sipdisp db init|check` run as a command against SQLite, PostgreSQL and
MariaDB (a server that cannot be reached is skipped, or fails under CI)."""

import os
import pathlib
import subprocess
import sys

import pytest

from sipdisp.storage.schema import TABLES
from sipdisp.storage.testing import MYSQL_URL, PG_URL, Unreachable, server_for

ROOT = pathlib.Path(__file__).resolve().parents[2]


def sipdisp(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "sipdisp.cli"] + list(args),
                          cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120)


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def server(request, tmp_path):
    url = {"sqlite": "sqlite:///%s" % (tmp_path / "cli.db"),
           "postgres": PG_URL, "mysql": MYSQL_URL}[request.param]
    srv = server_for(url)
    try:
        srv.check_reachable()
    except Unreachable as exc:
        if os.environ.get("CI"):
            pytest.fail("%s (CI must run this; see scripts/ci-databases.sh)" % exc)
        pytest.skip(str(exc))
    srv.reset()
    yield srv
    srv.reset()


def test_init_then_check(server):
    """check fails on an empty database, init creates everything (twice
    without harm), check then passes, and a dropped column is reported."""
    url = server.url
    out = sipdisp("db", "check", url)
    assert out.returncode == 1 and "missing table acc" in out.stdout
    out = sipdisp("db", "init", url)
    assert out.returncode == 0, out.stdout
    assert f"created {len(TABLES)} table(s)" in out.stdout
    out = sipdisp("db", "init", url)
    assert out.returncode == 0 and "created 0 table(s)" in out.stdout
    out = sipdisp("db", "check", url)
    assert out.returncode == 0 and "schema OK" in out.stdout, out.stdout
    server.execute("DROP TABLE dispatcher")
    server.execute("UPDATE version SET table_version = 4 WHERE table_name = 'location'")
    out = sipdisp("db", "check", url)
    assert out.returncode == 1
    assert "missing table dispatcher" in out.stdout
    assert "location: version 4, sipdisp expects 9" in out.stdout


def test_unreachable_database_is_an_error():
    """A database that cannot be reached makes init/check exit 1 with a reason."""
    out = sipdisp("db", "check", "postgres://nobody:x@127.0.0.1:1/none")
    assert out.returncode == 1
    assert "cannot connect to postgres://nobody:***@127.0.0.1:1/none" in out.stdout


def test_ddl_prints_the_shipped_schema():
    """sipdisp db ddl DIALECT prints etc/schema/DIALECT.sql."""
    out = sipdisp("db", "ddl", "mysql")
    assert out.returncode == 0
    assert out.stdout == (ROOT / "etc" / "schema" / "mysql.sql").read_text()
