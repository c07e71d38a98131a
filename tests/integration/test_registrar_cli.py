"""``sipdisp user add|rm|list`` as an operator runs it, against the embedded
SQLite default of the working directory and against a configuration file."""

import os
import sqlite3
import subprocess
import sys

import yaml

from sipdisp.auth.digest import calc_ha1
from tests.support.processes import ROOT


def sipdisp(cwd, *argv):
    """Run ``sipdisp ARGV`` (bounded); returns (exit code, stdout)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "sipdisp.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def test_user_add_list_rm_on_the_embedded_default(tmp_path):
    """Without a configuration file the default sqlite:///var/sipdisp.db is created and used."""
    assert sipdisp(tmp_path, "user", "add", "alice@Example.com", "s3cret") == \
        (0, "added alice@example.com\n")
    assert sipdisp(tmp_path, "user", "add", "bob@example.com", "pw")[0] == 0
    assert sipdisp(tmp_path, "user", "add", "alice@example.com", "new")[1] == \
        "updated alice@example.com\n"
    assert sipdisp(tmp_path, "user", "list") == (0, "alice@example.com\nbob@example.com\n")
    with sqlite3.connect(tmp_path / "var" / "sipdisp.db") as db:
        row = db.execute("SELECT password, ha1, ha1b FROM subscriber WHERE username='alice'"
                         ).fetchone()
    assert row == ("new", calc_ha1("MD5", "alice", "example.com", "new"),
                   calc_ha1("MD5", "alice@example.com", "example.com", "new"))
    assert sipdisp(tmp_path, "user", "rm", "bob@example.com") == (0, "removed bob@example.com\n")
    code, out = sipdisp(tmp_path, "user", "rm", "bob@example.com")
    assert code == 1 and "no subscriber" in out
    assert sipdisp(tmp_path, "user", "add", "nodomain", "pw")[0] == 2


def test_user_add_uses_the_configured_database_and_can_skip_the_password(tmp_path):
    """-c FILE takes storage.url from the file; --no-plaintext stores only the hashes."""
    db = tmp_path / "elsewhere.db"
    cfg = tmp_path / "sipdisp.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"url": f"sqlite:///{db}"}}))
    assert sipdisp(tmp_path, "user", "add", "carol@example.com", "pw", "-c", str(cfg),
                   "--no-plaintext")[0] == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT password, ha1 FROM subscriber").fetchone() == \
            ("", calc_ha1("MD5", "carol", "example.com", "pw"))
    assert sipdisp(tmp_path, "user", "list", "example.com", "-c", str(cfg)) == \
        (0, "carol@example.com\n")
