"""The write queue, reconnects, read fallback and state of Storage, on the
memory backend with an injected task.Clock (no reactor, no server)."""

import pytest
from twisted.internet import task
from twisted.logger import globalLogPublisher

from sipdisp.storage import (QueueFull, StorageStopped, StorageUnavailable,
                             UnknownColumn, UnknownTable, ge, open_storage)
from sipdisp.storage.backends.memory import MemoryRejected, drop_database
from sipdisp.storage.core import Storage


def result_of(d):
    """The result of an already-fired Deferred (re-raising a failure)."""
    out = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def failure_of(d):
    out = []
    d.addErrback(out.append)
    assert out, "Deferred did not fail"
    return out[0]


@pytest.fixture
def clock():
    return task.Clock()


def make(clock, **kw):
    kw.setdefault("ping_interval", 0)
    kw.setdefault("retry_initial", 1.0)
    kw.setdefault("retry_max", 8.0)
    kw.setdefault("jitter", 0)
    storage = open_storage(kw.pop("url", "memory://"), reactor=clock, **kw)
    storage.start()
    return storage


def acc(callid, **extra):
    row = {"method": "INVITE", "callid": callid, "sip_code": "200",
           "sip_reason": "OK", "time": None}
    row.update(extra)
    return row


def rows(storage, table, **kw):
    return storage.backend.db.tables[table] if not kw else \
        result_of(storage.select(table, **kw))


def test_crud_round_trip(clock):
    """insert, select, update, upsert and delete fire with their row counts."""
    st = make(clock)
    assert st.state == "connected"
    assert result_of(st.insert("dispatcher", {"setid": 1, "destination": "sip:a"})) == 1
    assert result_of(st.update("dispatcher", {"priority": 5}, {"setid": 1})) == 1
    assert result_of(st.upsert("dispatcher", {"setid": 1, "destination": "sip:a",
                                              "flags": 2}, keys=["destination"])) == 1
    assert result_of(st.upsert("dispatcher", {"setid": 2, "destination": "sip:b"},
                               keys=["destination"])) == 1
    got = result_of(st.select("dispatcher", order_by=["setid"]))
    assert [(r["id"], r["destination"], r["priority"], r["flags"]) for r in got] == [
        (1, "sip:a", 5, 2), (2, "sip:b", 0, 0)]
    assert result_of(st.delete("dispatcher", {"setid": ge(2)})) == 1
    assert [r["destination"] for r in result_of(st.select("dispatcher"))] == ["sip:a"]


def test_names_outside_the_schema_are_refused(clock):
    """Unknown tables and columns raise at once; nothing is queued."""
    st = make(clock)
    with pytest.raises(UnknownTable):
        st.insert("acc; drop table x", {})
    with pytest.raises(UnknownColumn):
        st.insert("acc", {"callid": "a", "nope": 1})
    with pytest.raises(UnknownColumn):
        st.select("acc", where={"1=1 or callid": "x"})
    with pytest.raises(UnknownColumn):
        st.select("acc", order_by=["-evil"])
    assert st.queue_depth == 0


def test_outage_queues_writes_and_flushes_them_in_order(clock):
    """Writes made while the database is down are committed, in order, when
    it comes back; their Deferreds fire then."""
    st = make(clock)
    st.backend.available = False
    done = []
    for name in "abc":
        st.insert("acc", acc(name)).addCallback(done.append)
    assert st.state == "disconnected"
    assert st.queue_depth == 3 and done == []
    clock.advance(1.0)            # first retry: still down
    assert st.state == "disconnected"
    st.backend.available = True
    clock.advance(2.0)            # second retry, after a doubled delay
    assert st.state == "connected"
    assert done == [1, 1, 1] and st.queue_depth == 0
    assert [r["callid"] for r in rows(st, "acc")] == ["a", "b", "c"]
    assert st.counters["disconnects"] == 1 and st.counters["reconnects"] == 1


def test_retry_delay_doubles_up_to_the_cap(clock):
    """Reconnect attempts back off 1, 2, 4, 8, 8 ... seconds."""
    st = make(clock)
    st.backend.available = False
    st.insert("acc", acc("a"))
    delays = []
    for _ in range(5):
        call = clock.getDelayedCalls()[0]
        delays.append(call.getTime() - clock.seconds())
        clock.advance(delays[-1])
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_jitter_spreads_retries(clock):
    """With jitter, the retry delay is randomised around the backoff step."""
    import random
    st = make(clock, jitter=0.5, random_source=random.Random(1))
    st.backend.available = False
    st.insert("acc", acc("a"))
    delay = clock.getDelayedCalls()[0].getTime()
    assert 0.5 <= delay <= 1.5 and delay != 1.0


def test_bounded_queue_refuses_writes_when_full(clock):
    """Past write_queue_max, writes fail with QueueFull and are counted."""
    st = make(clock, write_queue_max=3)
    st.backend.available = False
    for name in "abc":
        st.insert("acc", acc(name))
    f = failure_of(st.insert("acc", acc("d")))
    assert f.check(QueueFull)
    assert st.counters["dropped"] == 1 and st.queue_depth == 3


def test_a_bad_write_is_isolated_and_dropped(clock):
    """A write the database rejects fails alone; the writes around it in
    the same batch are committed in order."""
    st = make(clock)
    st.backend.reject = lambda op: op.row.get("callid") == "bad"
    st.backend.available = False
    ds = [st.insert("acc", acc(name)) for name in ("a", "bad", "c")]
    st.backend.available = True
    clock.advance(1.0)
    assert result_of(ds[0]) == 1 and result_of(ds[2]) == 1
    assert failure_of(ds[1]).check(MemoryRejected)
    assert [r["callid"] for r in rows(st, "acc")] == ["a", "c"]
    assert st.counters["failed"] == 1


def test_writes_are_batched(clock):
    """A backlog is committed in transactions of at most batch_max writes."""
    st = make(clock, batch_max=100)
    st.backend.available = False
    for i in range(250):
        st.insert("acc", acc(str(i)))
    st.backend.available = True
    before = st.backend.batches
    clock.advance(1.0)
    assert st.backend.batches - before == 3
    assert len(rows(st, "acc")) == 250


def test_cached_table_answers_reads_during_an_outage(clock):
    """A cached table is read from memory while the database is down, with
    this process's queued writes already visible."""
    st = make(clock)
    st.insert("dispatcher", {"setid": 1, "destination": "sip:a"})
    assert result_of(st.cache("dispatcher")) == 1
    st.backend.available = False
    st.insert("dispatcher", {"setid": 1, "destination": "sip:b"})
    got = result_of(st.select("dispatcher", where={"setid": 1},
                              order_by=["destination"]))
    assert [r["destination"] for r in got] == ["sip:a", "sip:b"]
    assert st.counters["read_fallbacks"] == 1


def test_uncached_read_during_an_outage_fails_clearly(clock):
    """A table nobody cached cannot be read while the database is down."""
    st = make(clock)
    st.backend.available = False
    f = failure_of(st.select("subscriber", where={"username": "alice"}))
    assert f.check(StorageUnavailable)
    assert st.state == "disconnected"


def test_cache_is_reloaded_after_a_reconnect(clock):
    """After an outage the cache is refreshed from the database."""
    st = make(clock)
    st.cache("domain")
    st.backend.available = False
    st.insert("acc", acc("a"))
    # someone else adds a domain while we are cut off
    st.backend.db.tables["domain"].append({"id": 9, "domain": "example.org"})
    st.backend.available = True
    clock.advance(1.0)
    assert st.state == "connected"
    assert [r["domain"] for r in st.cached("domain").rows] == ["example.org"]


def test_state_changes_are_logged_one_line_each(clock):
    """lost, reconnecting and connected are each logged as one event."""
    events = []
    observer = lambda e: events.append(e) if e.get("log_namespace", "").startswith(  # noqa: E731
        "sipdisp.storage") else None
    globalLogPublisher.addObserver(observer)
    try:
        st = make(clock)
        st.backend.available = False
        st.insert("acc", acc("a"))
        clock.advance(1.0)
        st.backend.available = True
        clock.advance(2.0)
    finally:
        globalLogPublisher.removeObserver(observer)
    formats = [e["log_format"].split(":")[1].split("(")[0].strip() for e in events]
    assert formats == ["connected", "connection lost", "reconnecting",
                       "reconnecting", "connected again after {down"]


def test_idle_health_check_notices_an_outage(clock):
    """With no traffic, the periodic ping still notices the database left."""
    st = make(clock, ping_interval=10)
    st.backend.available = False
    clock.advance(10)
    assert st.state == "disconnected"


def test_start_with_the_database_down_still_starts(clock):
    """sipdisp starts while the database is down and connects later."""
    st = open_storage("memory://", reactor=clock, ping_interval=0,
                      retry_initial=1, jitter=0)
    st.backend.available = False
    d = st.start()
    assert result_of(d) is None and st.state == "disconnected"
    st.insert("acc", acc("a"))
    st.backend.available = True
    clock.advance(1)
    assert st.state == "connected" and len(rows(st, "acc")) == 1


def test_stop_flushes_then_refuses_writes(clock):
    """stop() waits for the queue, closes, and later writes fail."""
    st = make(clock)
    st.insert("acc", acc("a"))
    result_of(st.stop())
    assert st.state == "closed"
    assert failure_of(st.insert("acc", acc("b"))).check(StorageStopped)


def test_stop_during_outage_gives_up_after_closing(clock):
    """stop() while the database is down does not hang."""
    st = make(clock)
    st.backend.available = False
    st.insert("dispatcher", {"destination": "sip:x"})
    result_of(st.stop())
    assert st.state == "closed" and clock.getDelayedCalls() == []


def test_flushed_reports_an_empty_queue(clock):
    """flushed() fires True once the backlog is written, False on timeout."""
    st = make(clock)
    st.backend.available = False
    st.insert("acc", acc("a"))
    late = st.flushed(timeout=0.5)
    ok = st.flushed()
    clock.advance(0.5)
    assert result_of(late) is False
    st.backend.available = True
    clock.advance(1.0)
    assert result_of(ok) is True


def test_named_memory_databases_are_shared(clock):
    """Two storages on memory://name see the same rows (as two runs see one
    server)."""
    try:
        a = make(clock, url="memory://shared-test")
        b = make(clock, url="memory://shared-test")
        a.insert("domain", {"domain": "example.com"})
        assert [r["domain"] for r in result_of(b.select("domain"))] == ["example.com"]
    finally:
        drop_database("shared-test")


def test_listen_and_notify_in_memory(clock):
    """listen() callbacks receive notify() payloads on their channel."""
    st = make(clock)
    got = []
    st.listen("dispatcher_reload", lambda ch, payload: got.append((ch, payload)))
    st.notify("dispatcher_reload", "set=1")
    st.notify("other", "x")
    assert got == [("dispatcher_reload", "set=1")]


def test_metrics_surface(clock):
    """state, queue_depth and counters are exposed for metrics."""
    st = make(clock)
    st.backend.available = False
    st.insert("acc", acc("a"))
    stats = st.stats()
    assert stats["state"] == "disconnected" and stats["queue_depth"] == 1
    assert stats["accepted"] == 1 and stats["queue_peak"] == 1
    assert isinstance(st, Storage) and st.dialect == "memory"


def commit_then_drop(st):
    """Make the next batch commit and then lose its connection (what a
    server shutting down can do); returns a list filled with the batches."""
    real, seen = st.backend.write_batch, []

    def write_batch(ops):
        seen.append(ops)
        if len(seen) == 1:
            real(ops)
            st.backend.available = False
        return real(ops) if len(seen) > 1 else real([])
    st.backend.write_batch = write_batch
    return seen


def test_batch_committed_before_the_link_died_is_not_written_twice(clock):
    """When COMMIT succeeded but its reply was lost, the batch token found
    after the reconnect settles it: every write is in the table once."""
    st = make(clock)
    st.backend.available = False
    ds = [st.insert("acc", acc(name)) for name in "abc"]
    st.backend.available = True
    seen = commit_then_drop(st)
    clock.advance(1.0)                     # reconnect, batch commits, link dies
    assert st.state == "disconnected" and callids_of(st) == ["a", "b", "c"]
    st.backend.available = True
    clock.advance(2.0)
    assert st.state == "connected"
    assert callids_of(st) == ["a", "b", "c"]
    assert [result_of(d) for d in ds] == [None, None, None]
    assert st.counters["commits_confirmed"] == 1 and len(seen) == 1
    st.insert("acc", acc("d"))
    assert callids_of(st) == ["a", "b", "c", "d"]
    # the token of the confirmed batch is forgotten with the next batch
    assert len(st.backend.db.tables["sipdisp_batches"]) == 1


def test_batch_not_committed_when_the_link_died_is_written_again(clock):
    """When the batch's token is absent after the reconnect, it is retried."""
    st = make(clock)
    real = st.backend.write_batch
    calls = []

    def write_batch(ops):
        calls.append(ops)
        if len(calls) == 1:
            st.backend.available = False
        return real(ops)
    st.backend.write_batch = write_batch
    d = st.insert("acc", acc("a"))
    assert st.state == "disconnected"
    st.backend.available = True
    clock.advance(1.0)
    assert result_of(d) == 1 and callids_of(st) == ["a"]


def test_without_the_batch_table_writes_still_flow(clock):
    """A database without sipdisp_batches (no db init) still takes writes."""
    from sipdisp.storage.schema import SCHEMA
    schema = {k: v for k, v in SCHEMA.items() if k != "sipdisp_batches"}
    st = make(clock, schema=schema)
    assert result_of(st.insert("acc", acc("a"))) == 1
    assert st.queue.tokens is False


def callids_of(st):
    return [r["callid"] for r in st.backend.db.tables["acc"]]
