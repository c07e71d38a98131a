"""Dialogs in the dialog table through the storage API (db_mode 1 and 2), and
answered calls surviving a restart with their timeout, load and CDR data."""

from sipdisp.dialog.persistence import dialog_from_row, dialog_row
from tests.support.calls import FakeStorage, Switch


def stored(sw, table="dialog"):
    return sw.storage.tables[table]


def test_db_mode_1_writes_answered_dialogs_and_deletes_ended_ones():
    """db_mode 1: nothing for the INVITE, one dialog row at the answer (with the acc variables
    in dialog_vars), none after the BYE."""
    sw = Switch(dialog={"db_mode": 1})
    call = sw.call()
    call.start()
    call.ring()
    assert stored(sw) == []
    call.answer()
    (row,) = stored(sw)
    assert row["callid"] == call.call_id and row["state"] == 4
    assert row["from_tag"] == call.from_tag and row["to_tag"] == call.to_tag
    assert row["timeout"] - row["start_time"] == 21600
    assert row["caller_contact"] == "sip:alice@10.0.0.1:5070"
    assert {v["dialog_key"] for v in stored(sw, "dialog_vars")} >= {"acc.cdr", "acc.src_user"}
    call.hangup()
    assert stored(sw) == [] and stored(sw, "dialog_vars") == []


def test_failed_calls_never_touch_the_dialog_table():
    """An INVITE that fails is not written, in db_mode 1."""
    sw = Switch(dialog={"db_mode": 1})
    call = sw.call()
    call.start()
    call.answer(486, "Busy Here")
    assert [w for w in sw.storage.writes if w[1].startswith("dialog")] == []


def test_db_mode_2_writes_only_at_the_update_period():
    """db_mode 2: the answered call is written at the next flush, its end at the one after."""
    sw = Switch(dialog={"db_mode": 2, "db_update_period": 10.0})
    call = sw.call()
    call.start()
    call.answer()
    assert stored(sw) == []
    sw.advance(10.0)
    assert len(stored(sw)) == 1
    call.hangup()
    assert len(stored(sw)) == 1
    sw.advance(10.0)
    assert stored(sw) == []


def test_row_round_trip_keeps_what_the_byes_need():
    """A dialog written and read back has the same tags, targets, route sets, CSeqs and times."""
    sw = Switch(dialog={"db_mode": 1})
    call = sw.call()
    call.start()
    call.answer()
    dlg = next(iter(sw.dialogs.dialogs.values()))
    dlg.caller_routes = ["<sip:a.example;lr>", "<sip:b.example;lr>"]
    back = dialog_from_row(dialog_row(dlg))
    for name in ("h_entry", "h_id", "callid", "from_tag", "to_tag", "caller_contact",
                 "callee_contact", "caller_routes", "callee_routes", "caller_cseq",
                 "callee_cseq", "answered", "lifetime", "flags", "caller_sock"):
        assert getattr(back, name) == getattr(dlg, name), name
    assert back.caller_addr[:3] == dlg.caller_addr[:3]


def _restarted(storage, now, **dialog):
    """A new proxy on the same storage that reloaded the dialog table."""
    sw = Switch(storage=storage, dialog=dict(dialog, db_mode=1), now=now)
    n = sw.dialogs.restore(storage.tables["dialog"], storage.tables["dialog_vars"], now)
    return sw, n


def test_answered_calls_survive_a_restart_with_load_and_cdr():
    """After a restart the reloaded call still counts on its node, its BYE is matched and
    ends it, and its CDR carries the extras computed before the restart."""
    storage = FakeStorage()
    before = Switch(storage=storage, dialog={"db_mode": 1})
    call = before.call(from_user="carol")
    call.start()
    call.answer()
    after, n = _restarted(storage, before.now + 30)
    assert n == 1 and after.loads() == {"fs1": 1, "fs2": 0}
    call.sw = after  # the caller now talks to the restarted proxy
    call.hangup()
    assert after.dialogs.dialogs == {} and after.loads()["fs1"] == 0
    (cdr,) = storage.tables["cdrs"]
    assert cdr["callid"] == call.call_id and cdr["duration"] == 30.0
    assert cdr["src_user"] == "carol" and cdr["dst_user"] == "1000"
    assert storage.tables["dialog"] == []


def test_a_reloaded_dialog_times_out_at_its_original_deadline():
    """The timeout of a reloaded dialog counts from its answer, not from the restart."""
    storage = FakeStorage()
    before = Switch(storage=storage, dialog={"db_mode": 1, "default_timeout": 100.0})
    call = before.call()
    call.start()
    call.answer()
    after, _ = _restarted(storage, before.now + 60, default_timeout=100.0)
    after.advance(39)
    assert after.dialogs.dialogs
    after.advance(2)
    assert after.dialogs.dialogs == {} and after.dialogs.stats["byes_sent"] == 2
    byes = after.uac.messages()  # the BYE, and its retransmission at T1 (nobody answered)
    assert {(m.method, m.cseq) for m in byes} == {("BYE", 1)}


def _owner(row):
    import json
    return json.loads(row["xdata"]).get("n")


def _node(storage, node_id, now=None, **dialog):
    """A proxy of a cluster node ``node_id`` on ``storage`` that loaded the dialog table."""
    sw = Switch(storage=storage, dialog=dict(dialog, db_mode=1),
                **({} if now is None else {"now": now}))
    sw.dialogs.node_id = node_id
    n = sw.dialogs.restore(storage.tables["dialog"], storage.tables["dialog_vars"], sw.now)
    return sw, n


def test_a_survivor_takes_over_a_dead_nodes_dialog_and_the_node_back_leaves_it():
    """Node A's answered call is written with A as its owner; node B leaves it
    to A at its start, takes it over (re-owned row, load counted, BYE matched,
    CDR written); A restarted finds it re-owned and does not restore it."""
    storage = FakeStorage()
    a, _ = _node(storage, "A")
    call = a.call(from_user="carol")
    call.start()
    call.answer()
    (row,) = storage.tables["dialog"]
    assert _owner(row) == "A"
    b, n = _node(storage, "B", now=a.now + 30)
    assert n == 0 and b.dialogs.foreign_owners == {"A"}
    assert b.dialogs.stats["foreign_skipped"] == 1 and b.loads()["fs1"] == 0
    taken = b.dialogs.take_over(storage.tables["dialog"], storage.tables["dialog_vars"],
                                "A", b.now)
    assert [d.callid for d in taken] == [call.call_id] and taken[0].owner == "B"
    (row,) = storage.tables["dialog"]
    assert _owner(row) == "B" and b.dialogs.stats["taken_over"] == 1
    assert b.loads()["fs1"] == 1
    back, n = _node(storage, "A", now=b.now + 1)
    assert n == 0 and back.dialogs.dialogs == {} and back.dialogs.foreign_owners == {"B"}
    call.sw = b
    call.hangup()
    assert b.dialogs.dialogs == {} and b.loads()["fs1"] == 0
    (cdr,) = storage.tables["cdrs"]
    assert cdr["callid"] == call.call_id and cdr["duration"] == 30.0
    assert cdr["src_user"] == "carol"
    assert storage.tables["dialog"] == []


def test_take_over_takes_only_the_dead_nodes_dialogs_and_keeps_their_deadline():
    """Only the rows of the node taken over are taken (not ours, not a third
    node's); a taken dialog times out on the survivor at its original deadline
    with a BYE to both parties."""
    storage = FakeStorage()
    a, _ = _node(storage, "A", default_timeout=100.0)
    c, _ = _node(storage, "C", default_timeout=100.0)
    for sw in (a, c):
        call = sw.call()
        call.start()
        call.answer()
    b, _ = _node(storage, "B", now=a.now + 60, default_timeout=100.0)
    assert b.dialogs.foreign_owners == {"A", "C"}
    taken = b.dialogs.take_over(storage.tables["dialog"], storage.tables["dialog_vars"],
                                "A", b.now)
    assert len(taken) == 1
    assert sorted(_owner(r) for r in storage.tables["dialog"]) == ["B", "C"]
    assert b.dialogs.take_over(storage.tables["dialog"], storage.tables["dialog_vars"],
                               "A", b.now) == []  # nothing of A left
    b.advance(39)
    assert len(b.dialogs.dialogs) == 1
    b.advance(2)
    assert b.dialogs.dialogs == {} and b.dialogs.stats["byes_sent"] == 2
    assert sorted(_owner(r) for r in storage.tables["dialog"]) == ["C"]


def test_rows_without_an_owner_are_restored_by_any_node():
    """A row written without a cluster (no owner) is restored as before."""
    storage = FakeStorage()
    single = Switch(storage=storage, dialog={"db_mode": 1})
    call = single.call()
    call.start()
    call.answer()
    assert _owner(storage.tables["dialog"][0]) is None
    node, n = _node(storage, "B", now=single.now + 5)
    assert n == 1 and node.dialogs.foreign_owners == set()
