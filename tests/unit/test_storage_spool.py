"""The disk spool: call records and registrations written during an outage
survive a sipdisp restart, are replayed once, and the file goes away."""

import json
import os

import pytest
from twisted.internet import defer, task

from sipdisp.storage import open_storage
from sipdisp.storage.backends.memory import drop_database
from sipdisp.storage.spool import Spool

DB = "spool-test"


@pytest.fixture
def clock():
    return task.Clock()


@pytest.fixture(autouse=True)
def fresh_db():
    drop_database(DB)
    yield
    drop_database(DB)


def make(clock, spool_dir, **kw):
    kw.setdefault("ping_interval", 0)
    kw.setdefault("retry_initial", 1.0)
    kw.setdefault("jitter", 0)
    kw.setdefault("fsync_interval", 0)
    st = open_storage("memory://" + DB, spool_dir=str(spool_dir), reactor=clock, **kw)
    return st


def acc(callid):
    return {"method": "BYE", "callid": callid, "sip_code": "200", "time": None}


def lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def callids(st):
    return [r["callid"] for r in st.backend.db.tables["acc"]]


def test_only_spooled_tables_are_journalled(clock, tmp_path):
    """During an outage acc and location go to disk; dispatcher does not."""
    st = make(clock, tmp_path)
    st.start()
    st.backend.available = False
    st.insert("dispatcher", {"destination": "sip:x"})
    st.insert("acc", acc("a"))
    st.upsert("location", {"ruid": "r1", "username": "alice", "contact": "sip:a"},
              keys=["ruid"])
    recorded = lines(st.spool_path)
    assert [(r["kind"], r["table"]) for r in recorded] == [
        ("insert", "acc"), ("upsert", "location")]
    assert recorded[1]["keys"] == ["ruid"]


def test_nothing_is_spooled_while_the_database_is_up(clock, tmp_path):
    """A healthy database costs no disk writes."""
    st = make(clock, tmp_path)
    st.start()
    st.insert("acc", acc("a"))
    assert not os.path.exists(st.spool_path)


def test_writes_queued_before_the_outage_is_noticed_are_spooled(clock, tmp_path):
    """When the loss is noticed, queued call records are written to disk too."""
    st = make(clock, tmp_path)
    st.start()
    st.backend.available = False
    st.insert("dispatcher", {"destination": "sip:x"})  # notices the outage
    assert st.state == "disconnected"
    st.insert("missed_calls", {"callid": "m1", "time": None})
    assert [r["table"] for r in lines(st.spool_path)] == ["missed_calls"]


def test_restart_during_outage_keeps_call_records(clock, tmp_path):
    """acc rows written while the database is down, followed by a sipdisp
    restart, reach the database once it is back, in order, exactly once;
    the spool file is removed after the flush."""
    first = make(clock, tmp_path)
    first.start()
    first.backend.available = False
    for name in ("a", "b", "c"):
        first.insert("acc", acc(name))
    first.stop()
    path = first.spool_path
    assert os.path.exists(path) and callids(first) == []

    second = make(clock, tmp_path)
    second.start()
    second.insert("acc", acc("d"))        # a new write goes after the replay
    assert callids(second) == ["a", "b", "c", "d"]
    assert second.counters["replayed"] == 3
    assert not os.path.exists(path)


def test_replay_waits_for_the_database(clock, tmp_path):
    """Replayed writes wait in the queue while the database is still down."""
    first = make(clock, tmp_path)
    first.start()
    first.backend.available = False
    first.insert("acc", acc("a"))
    first.stop()
    second = make(clock, tmp_path)
    second.backend.available = False
    second.start()
    assert second.queue_depth == 1 and callids(second) == []
    second.backend.available = True
    clock.advance(1.0)
    assert callids(second) == ["a"] and not os.path.exists(second.spool_path)


def test_acknowledged_writes_are_not_replayed(clock, tmp_path):
    """After a crash in the middle of a flush, only the writes not yet
    committed are replayed (the ack watermark), so none is doubled."""
    first = make(clock, tmp_path, batch_max=2)
    first.start()
    first.backend.available = False
    for name in "abcd":
        first.insert("acc", acc(name))
    real = first.backend.write_batch
    calls = []

    def write_batch(ops):
        calls.append(ops)
        return real(ops) if len(calls) == 1 else defer.Deferred()  # hangs: crash
    first.backend.write_batch = write_batch
    first.backend.available = True
    clock.advance(1.0)
    assert callids(first) == ["a", "b"]
    # sipdisp dies here: no stop(), the second batch never completes
    second = make(clock, tmp_path)
    second.start()
    assert callids(second) == ["a", "b", "c", "d"]
    assert second.counters["replayed"] == 2


def test_a_torn_last_line_is_skipped(clock, tmp_path):
    """A line cut short by a crash is skipped; later appends stay readable."""
    spool = Spool(str(tmp_path), "x", clock, fsync_interval=0)
    spool.append({"seq": 1, "kind": "insert", "table": "acc", "row": {}})
    spool.close()
    with open(spool.path, "ab") as f:
        f.write(b'{"seq": 2, "kind": "ins')
    records, last, _batch = spool.load()
    assert [r["seq"] for r in records] == [1] and last == 1
    spool.append({"seq": 3, "kind": "insert", "table": "acc", "row": {}})
    spool.close()
    assert [r["seq"] for r in spool.load()[0]] == [1, 3]


def test_fsync_is_batched_on_a_timer(clock, tmp_path, monkeypatch):
    """Appends are flushed at once but fsync'd at most every interval."""
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    spool = Spool(str(tmp_path), "x", clock, fsync_interval=0.2)
    for seq in range(1, 6):
        spool.append({"seq": seq, "kind": "insert", "table": "acc"})
    assert synced == [] and len(spool.load()[0]) == 5
    clock.advance(0.2)
    assert len(synced) == 1
    spool.close()


def test_spool_file_name_does_not_carry_the_password(clock, tmp_path):
    """The spool is per database URL, named without secrets."""
    st = open_storage("memory://" + DB, spool_dir=str(tmp_path), reactor=clock)
    assert os.path.dirname(st.spool_path) == str(tmp_path)
    assert os.path.basename(st.spool_path).startswith("memory-")


def test_writes_before_start_queue_behind_the_replay(clock, tmp_path):
    """A write made before start() goes after the replayed ones, once each."""
    first = make(clock, tmp_path)
    first.start()
    first.backend.available = False
    first.insert("acc", acc("a"))
    first.stop()
    second = make(clock, tmp_path)
    second.insert("acc", acc("b"))          # before start(): journalled too
    second.start()
    assert callids(second) == ["a", "b"]
    assert not os.path.exists(second.spool_path)


def test_crash_after_commit_before_ack_is_settled_by_the_token(clock, tmp_path):
    """If sipdisp dies after a batch committed but before the spool heard
    of it, the replay asks the database and does not write it twice."""
    first = make(clock, tmp_path, batch_max=2)
    first.start()
    first.backend.available = False
    for name in "abcd":
        first.insert("acc", acc(name))
    real = first.backend.write_batch
    calls = []

    def write_batch(ops):
        calls.append(ops)
        if len(calls) == 1:
            return real(ops)
        real(ops)                      # commits ...
        return defer.Deferred()        # ... and sipdisp dies before the reply
    first.backend.write_batch = write_batch
    first.backend.available = True
    clock.advance(1.0)
    assert callids(first) == ["a", "b", "c", "d"]
    second = make(clock, tmp_path)
    second.start()
    assert callids(second) == ["a", "b", "c", "d"]
    assert second.counters["commits_confirmed"] == 1
    assert not os.path.exists(second.spool_path)
