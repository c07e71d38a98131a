"""The location service's db_mode 0-3 over the storage API (memory backend):
Kamailio's location rows, write-through, write-back on the timer, database
only with suspended routes, restoring registrations after a restart."""

import datetime
import itertools

import pytest

from sipdisp.storage.backends.memory import drop_database
from tests.support.registrar import Stack, final, invite, requests

NODE = ("127.0.0.1", 5080)
NODES = [(0, "sip:127.0.0.1:5090"), (1, "sip:127.0.0.1:5080")]
_names = itertools.count(1)


@pytest.fixture
def db():
    """A fresh named memory database, shared by the stacks of one test (a restart)."""
    name = f"usrloc{next(_names)}"
    yield f"memory://{name}"
    drop_database(name)


def stack(db, mode, slow=False, **config):
    """The built-in route without auth, usrloc.db_mode ``mode`` on database ``db``."""
    config = dict(config)
    config["usrloc"] = dict({"db_mode": mode, "timer_interval": 10}, **config.get("usrloc", {}))
    return Stack(config, rows=NODES, db=db, slow=slow)


def rows(s):
    """The location table's rows (read synchronously from the memory backend)."""
    got = []
    s.storage.select("location").addCallback(got.extend)
    s.clock.advance(0)
    return got


def test_mode_0_writes_nothing(db):
    """db_mode 0 keeps bindings in memory only."""
    s = stack(db, 0)
    assert s.ua("alice").register().status == 200
    assert rows(s) == [] and s.location.count == 1


def test_mode_1_writes_kamailio_rows_through_and_deletes_them(db):
    """db_mode 1: each REGISTER writes its row at once; a refresh updates it; Expires 0 deletes it."""
    s = stack(db, 1)
    ua = s.ua("alice")
    ua.register(expires=600, extra=["User-Agent: phone/1.0"])
    (row,) = rows(s)
    assert (row["username"], row["contact"], row["callid"], row["cseq"], row["user_agent"]) == \
        ("alice", "sip:alice@10.0.0.1:5070", ua.call_id, 1, "phone/1.0")
    assert row["socket"] == "udp:127.0.0.1:5060" and row["q"] == 1.0
    assert row["expires"] == datetime.datetime.fromtimestamp(int(s.now + 600))
    ua.register(expires=600)
    (row2,) = rows(s)
    assert row2["ruid"] == row["ruid"] and row2["cseq"] == 2
    ua.register(expires=0)
    assert rows(s) == []


def test_mode_2_writes_back_on_the_timer(db):
    """db_mode 2: the row appears only at the next timer_interval, removals likewise."""
    s = stack(db, 2)
    ua = s.ua("alice")
    ua.register()
    assert rows(s) == [] and s.location.dirty == 1
    s.advance(10)
    assert len(rows(s)) == 1 and s.location.dirty == 0
    ua.register(expires=0)
    assert len(rows(s)) == 1
    s.advance(10)
    assert rows(s) == []


def test_mode_2_flushes_on_stop(db):
    """Stopping the service writes what write-back still held."""
    s = stack(db, 2)
    s.ua("alice").register()
    s.service.stopService()
    s.clock.advance(0)
    assert len(rows(s)) == 1


def test_mode_3_keeps_nothing_in_memory_and_reads_the_table(db):
    """db_mode 3: REGISTER and lookup read the table (the route suspends while it does)."""
    s = stack(db, 3, slow=True)
    assert s.ua("alice").register().status == 200
    assert s.location.count == 0 and len(rows(s)) == 1
    out = s.send(invite("sip:alice@example.com"), source=NODE)
    assert [t.host for _, t in requests(out, "INVITE")] == ["10.0.0.1"]
    assert s.service.suspender.suspended >= 2
    assert final(s.send(invite("sip:nobody@example.com"), source=NODE)).status == 404


def test_mode_3_is_shared_by_two_proxies(db):
    """With db_mode 3 a user registered through one proxy is found by another."""
    a = stack(db, 3)
    b = stack(db, 3)
    a.ua("alice").register()
    out = b.send(invite("sip:alice@example.com"), source=NODE)
    assert requests(out, "INVITE")


@pytest.mark.parametrize("mode", [1, 2, 3])
def test_registrations_survive_a_restart(db, mode):
    """After a restart with db_mode 1, 2 or 3 a registered user is still reached."""
    s = stack(db, mode)
    s.ua("alice").register()
    s.ua("bob", host="10.0.0.2").register()
    s.service.stopService()
    s.clock.advance(0)
    again = stack(db, mode)
    if mode != 3:
        assert again.location.count == 2
    out = again.send(invite("sip:bob@example.com"), source=NODE)
    assert [t.host for _, t in requests(out, "INVITE")] == ["10.0.0.2"]


def test_restored_connection_bound_contact_is_unreachable_until_it_registers_again(db):
    """A TCP contact restored from the table has lost its connection: 480 until it re-registers."""
    s = stack(db, 1)
    conn = s.open_conn("tcp", "10.0.0.5", 40000)
    s.ua("alice", host="10.0.0.5", port=40000, proto="tcp", conn=conn).register()
    again = stack(db, 1)
    again.core.flows.connections[conn] = s.core.flows.connections[conn]  # a new connection that happens to get the same id
    assert final(again.send(invite("sip:alice@example.com"), source=NODE)).status == 480
    conn2 = again.open_conn("tcp", "10.0.0.5", 40001)
    again.ua("alice", host="10.0.0.5", port=40001, proto="tcp", conn=conn2).register()
    out = again.send(invite("sip:alice@example.com"), source=NODE)
    assert [t.conn for _, t in requests(out, "INVITE")] == [conn2]


def test_expired_rows_are_deleted_by_the_timer(db):
    """Rows whose expiry passed are deleted from the table at the next timer round."""
    s = stack(db, 1)
    s.ua("alice").register(expires=60)
    s.advance(70)
    assert rows(s) == [] and s.location.count == 0
