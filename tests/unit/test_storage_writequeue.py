"""The storage's write queue as a pure state machine: each event and the
actions and effects it yields, with no Deferred, no clock and no backend."""

import collections
import datetime

from sipdisp.storage.writequeue import (Committed, Dropped, QueueFullNotice, Resolve,
                                        SpoolAck, SpoolBatch, SpoolClose, SpoolOpen,
                                        SpoolRemove, SpoolWrite, TokensMissing, WriteBatch,
                                        WriteQueue)
from sipdisp.storage.base import WriteOp

SPOOLED = ("acc", "location")


def queue(spooling=False, **kw):
    kw.setdefault("spool_tables", SPOOLED)
    return WriteQueue("inst", spooling=spooling, **kw)


def add(q, table="acc", callid="x"):
    op, effects = q.add("insert", table, {"callid": callid})
    return op, effects


def ready(q, tokens=True):
    """Bring a fresh queue's link up and settle the token lookup."""
    q.link_restored()
    if q.tokens is None and len(q):
        action = q.next_action()
        assert action == Resolve(describe=True)
        q.tokens_known(tokens)
        assert q.token_to_check() is None
        q.resolved()


def test_writes_get_increasing_sequence_numbers_and_are_counted():
    """add() numbers writes 1, 2, 3 and counts accepted and the queue peak."""
    q = queue()
    ops = [add(q)[0] for _ in range(3)]
    assert [op.seq for op in ops] == [1, 2, 3]
    assert len(q) == 3 and list(q) == ops
    assert q.counters["accepted"] == 3 and q.counters["queue_peak"] == 3


def test_nothing_is_written_while_the_link_is_down():
    """With the link down, next_action() has nothing to run."""
    q = queue()
    add(q)
    assert q.next_action() is None and not q.busy


def test_an_empty_queue_has_nothing_to_run():
    """With the link up and nothing queued, the queue is idle."""
    q = queue()
    q.link_restored()
    assert q.next_action() is None and q.idle


def test_the_token_table_is_looked_up_before_the_first_batch():
    """The first action after the link comes up is a Resolve that describes
    the token table; the queue is busy until resolved()."""
    q = queue()
    add(q)
    q.link_restored()
    assert q.next_action() == Resolve(describe=True)
    assert q.busy and q.next_action() is None
    assert q.tokens_known(True) == []
    assert q.token_to_check() is None
    q.resolved()
    assert not q.busy and q.tokens is True


def test_a_batch_carries_a_token_naming_its_writes():
    """With a token table, a batch's token is instance-first-last and its
    statements insert that token after the writes."""
    q = queue()
    a, _ = add(q, callid="a")
    b, _ = add(q, callid="b")
    ready(q)
    batch = q.next_action()
    assert isinstance(batch, WriteBatch)
    assert batch.ops == [a, b] and batch.token == "inst-1-2" and batch.forget is None
    created = datetime.datetime(2024, 1, 1)
    statements = batch.statements(created)
    assert statements[:2] == [a, b]
    assert (statements[2].kind, statements[2].table, statements[2].row) == (
        "insert", "sipdisp_batches", {"token": "inst-1-2", "created": created})
    assert len(statements) == 3


def test_committed_writes_leave_in_order_with_their_results():
    """batch_committed() pops the batch and yields Committed for each write,
    in order, with its row count."""
    q = queue()
    a, _ = add(q)
    b, _ = add(q)
    ready(q)
    q.next_action()
    assert q.batch_committed([1, 0]) == [Committed(a, 1), Committed(b, 0)]
    assert len(q) == 0 and q.idle and q.counters["written"] == 2
    assert q.last_token == "inst-1-2"


def test_the_next_batch_forgets_the_previous_token():
    """A batch deletes the token of the batch committed before it."""
    q = queue()
    add(q)
    ready(q)
    q.next_action()
    q.batch_committed([1])
    add(q)
    batch = q.next_action()
    assert batch.token == "inst-2-2" and batch.forget == "inst-1-1"
    assert [(s.kind, s.where) for s in batch.statements(None)[1:]] == [
        ("insert", {}), ("delete", {"token": "inst-1-1"})]


def test_batches_hold_at_most_batch_max_writes_from_the_head():
    """A backlog goes out in order, batch_max writes at a time."""
    q = queue(batch_max=2)
    ops = [add(q)[0] for _ in range(5)]
    ready(q)
    sizes = []
    while True:
        batch = q.next_action()
        if batch is None:
            break
        assert batch.ops == ops[sum(sizes):sum(sizes) + len(batch.ops)]
        sizes.append(len(batch.ops))
        q.batch_committed([1] * len(batch.ops))
    assert sizes == [2, 2, 1]


def test_a_statement_error_in_a_batch_isolates_its_writes():
    """A batch of several writes refused by the database is sent again one
    write per batch; only the bad write is dropped, the others commit."""
    q = queue()
    a, _ = add(q, callid="a")
    bad, _ = add(q, callid="bad")
    c, _ = add(q, callid="c")
    d, _ = add(q, callid="d")
    ready(q)
    assert len(q.next_action().ops) == 4
    assert q.batch_failed(transient=False) == []
    assert q.next_action().ops == [a]
    assert q.batch_committed([1]) == [Committed(a, 1)]
    assert q.next_action().ops == [bad]
    assert q.batch_failed(transient=False) == [Dropped(bad)]
    assert q.counters["failed"] == 1
    # isolation lasts for the writes of the failed batch, then batches grow again
    assert q.next_action().ops == [c]
    q.batch_committed([1])
    assert q.next_action().ops == [d]
    q.batch_committed([1])
    e, _ = add(q)
    f, _ = add(q)
    assert q.next_action().ops == [e, f]


def test_a_single_refused_write_is_dropped_at_once():
    """A batch of one write refused by the database drops that write."""
    q = queue()
    op, _ = add(q)
    ready(q)
    q.next_action()
    assert q.batch_failed(transient=False) == [Dropped(op)]
    assert len(q) == 0 and q.idle


def test_a_lost_link_keeps_the_batch_and_makes_it_unsure():
    """A batch cut off by a lost connection stays queued; its token and last
    sequence number become unsure."""
    q = queue()
    add(q)
    add(q)
    ready(q)
    q.next_action()
    assert q.link_lost() == []
    assert q.batch_failed(transient=True) == []
    assert len(q) == 2 and q.unsure == ("inst-1-2", 2)
    assert q.tokens is None and q.next_action() is None


def test_an_unsure_batch_found_committed_is_not_written_again():
    """After the reconnect the token table is described again and the unsure
    token looked up: found, the writes it covers are done (result unknown),
    later writes stay queued."""
    q = queue()
    a, _ = add(q)
    b, _ = add(q)
    ready(q)
    q.next_action()
    q.link_lost()
    q.batch_failed(transient=True)
    c, _ = add(q)
    q.link_restored()
    assert q.next_action() == Resolve(describe=True)
    q.tokens_known(True)
    assert q.token_to_check() == "inst-1-2"
    assert q.token_checked(True) == [Committed(a, None), Committed(b, None)]
    q.resolved()
    assert q.unsure is None and list(q) == [c]
    assert q.counters["commits_confirmed"] == 1 and q.counters["written"] == 2
    batch = q.next_action()
    assert batch.ops == [c] and batch.forget == "inst-1-2"


def test_an_unsure_batch_not_found_is_written_again():
    """When the unsure token is absent, the same writes are sent again."""
    q = queue()
    a, _ = add(q)
    ready(q)
    q.next_action()
    q.link_lost()
    q.batch_failed(transient=True)
    q.link_restored()
    q.next_action()
    q.tokens_known(True)
    q.token_to_check()
    assert q.token_checked(False) == []
    q.resolved()
    batch = q.next_action()
    assert batch.ops == [a] and batch.token == "inst-1-1"


def test_an_unsure_batch_from_the_spool_is_settled_without_a_describe():
    """With the token table already known, an unsure batch (as replayed from
    the spool) is looked up with no describe first."""
    q = queue()
    add(q)
    ready(q)
    q.unsure = ("old-1-1", 1)
    assert q.next_action() == Resolve(describe=False)
    assert q.token_to_check() == "old-1-1"


def test_without_a_token_table_batches_carry_no_token():
    """No token table: a warning effect, the unsure batch is simply written
    again, and batches have no token (at least once)."""
    q = queue()
    a, _ = add(q)
    q.unsure = ("inst-1-1", 1)
    q.link_restored()
    q.next_action()
    assert q.tokens_known(False) == [TokensMissing()]
    assert q.token_to_check() is None and q.unsure is None
    q.resolved()
    batch = q.next_action()
    assert batch.ops == [a] and batch.token is None
    assert batch.statements(None) == [a]


def test_a_lost_link_without_tokens_leaves_nothing_unsure():
    """A batch without a token that is cut off is simply sent again."""
    q = queue()
    add(q)
    ready(q, tokens=False)
    q.next_action()
    q.link_lost()
    assert q.batch_failed(transient=True) == [] and q.unsure is None


def test_a_resolve_error_gives_up_tokens():
    """A statement error while checking tokens gives them up (at least once);
    a lost link during the check keeps them for after the reconnect."""
    q = queue()
    add(q)
    q.unsure = ("inst-1-1", 1)
    q.link_restored()
    q.next_action()
    q.resolve_failed(transient=True)
    assert not q.busy and q.tokens is None and q.unsure == ("inst-1-1", 1)
    q.next_action()
    q.resolve_failed(transient=False)
    assert q.tokens is False and q.unsure is None
    assert q.next_action().token is None


def test_a_full_queue_refuses_writes_and_notices_once():
    """Past the limit add() refuses, counts dropped, and yields the notice
    only for the first refusal until a write is accepted again."""
    q = queue(limit=2)
    add(q)
    add(q)
    assert add(q) == (None, [QueueFullNotice(2)])
    assert add(q) == (None, [])
    assert q.counters["dropped"] == 2 and len(q) == 2
    ready(q)
    q.next_action()
    q.batch_committed([1, 1])
    assert add(q)[0] is not None
    add(q)
    assert add(q) == (None, [QueueFullNotice(2)])


def test_spooled_tables_are_journalled_while_the_link_is_down():
    """Without a link, writes to spooled tables are journalled; others not."""
    q = queue(spooling=True)
    op, effects = add(q, "acc")
    assert effects == [SpoolWrite(op)] and op.spooled
    assert add(q, "dispatcher")[1] == []
    assert q.spool_pending == 1 and q.spool_open and q.counters["spooled"] == 1


def test_nothing_is_journalled_while_the_link_is_up():
    """With the link up and the journal closed, writes are not journalled."""
    q = queue(spooling=True)
    q.link_restored()
    op, effects = add(q, "acc")
    assert effects == [] and not op.spooled


def test_without_a_spool_nothing_is_journalled():
    """A storage without a spool directory never journals."""
    q = queue(spooling=False)
    assert add(q, "acc")[1] == [] and q.link_lost() == [] and q.close() == []


def test_a_lost_link_journals_the_queued_writes_to_spooled_tables():
    """When the loss is noticed, queued writes to spooled tables that are
    not journalled yet are, in order."""
    q = queue(spooling=True)
    q.link_restored()
    a, _ = add(q, "acc")
    add(q, "dispatcher")
    b, _ = add(q, "location")
    assert q.link_lost() == [SpoolWrite(a), SpoolWrite(b)]
    assert q.link_lost() == []


def test_an_open_journal_takes_new_writes_even_when_connected():
    """While the journal still holds writes, new ones to spooled tables go
    into it too (the acknowledgement watermark needs them all)."""
    q = queue(spooling=True)
    add(q, "acc")
    q.link_restored()
    op, effects = add(q, "acc")
    assert effects == [SpoolWrite(op)]


def test_commits_acknowledge_the_journal_then_remove_it():
    """Committed journalled writes are acknowledged by sequence number; the
    last one, while connected, removes the journal."""
    q = queue(spooling=True, batch_max=1)
    a, _ = add(q, "acc")
    add(q, "acc")
    ready(q)
    batch = q.next_action()
    assert batch.journal
    assert q.batch_committed([1]) == [SpoolAck(1), Committed(a, 1)]
    q.next_action()
    assert q.batch_committed([1])[0] == SpoolRemove()
    assert not q.spool_open and q.spool_pending == 0


def test_a_commit_while_the_link_is_down_only_acknowledges():
    """A batch that commits after the loss was noticed acknowledges, and the
    journal stays for the writes still queued."""
    q = queue(spooling=True, batch_max=1)
    q.link_restored()
    a, _ = add(q, "acc")
    ready(q)
    q.next_action()
    q.link_lost()
    assert q.batch_committed([1]) == [SpoolAck(1), Committed(a, 1)]
    assert q.spool_open


def test_a_sent_batch_of_journalled_writes_is_noted_when_cut_off():
    """A batch of journalled writes cut off by a lost link is noted in the
    journal (token and last seq) so a restart can settle it."""
    q = queue(spooling=True)
    add(q, "acc")
    add(q, "acc")
    ready(q)
    assert q.next_action().journal
    q.link_lost()
    assert q.batch_failed(transient=True) == [SpoolBatch("inst-1-2", 2)]


def test_a_dropped_journalled_write_is_acknowledged():
    """A refused write that was journalled counts as done in the journal."""
    q = queue(spooling=True)
    op, _ = add(q, "acc")
    add(q, "dispatcher")
    q.link_restored()
    q.next_action()
    q.tokens_known(False)
    q.resolved()
    q.next_action()
    q.batch_failed(transient=False)
    q.next_action()
    assert q.batch_failed(transient=False) == [SpoolRemove(), Dropped(op)]


def test_replay_continues_the_sequence_and_keeps_the_unsure_batch():
    """Writes read back from the spool queue first, the sequence continues
    after the spool's, and its unsure batch is settled before writing."""
    q = queue(spooling=True)
    replayed = [WriteOp(4, "insert", "acc", {"callid": "a"}, spooled=True)]
    assert q.replay(replayed, 5, ("old-3-4", 4)) == [SpoolOpen()]
    assert q.spool_pending == 1 and q.counters["replayed"] == 1 and q.spool_open
    op, effects = add(q, "acc")
    assert op.seq == 6 and effects == [SpoolWrite(op)]
    assert list(q) == replayed + [op]
    q.link_restored()
    assert q.next_action() == Resolve(describe=True)
    q.tokens_known(True)
    assert q.token_to_check() == "old-3-4"


def test_an_empty_replay_removes_the_journal():
    """A spool with nothing left to commit is removed at start."""
    q = queue(spooling=True)
    assert q.replay([], 7, None) == [SpoolRemove()]
    assert add(q)[0].seq == 8


def test_close_keeps_a_journal_that_holds_writes():
    """Closing keeps the journal file while it holds writes, else removes it."""
    q = queue(spooling=True)
    add(q, "acc")
    assert q.close() == [SpoolClose()]
    assert queue(spooling=True).close() == [SpoolRemove()]


def test_a_drained_queue_removes_an_empty_journal():
    """When the queue runs empty while connected, an open journal with
    nothing pending is removed."""
    q = queue(spooling=True)
    q.replay([], 0, None)
    q.spool_open = True
    assert q.drained() == []          # link down: keep it
    q.link_restored()
    assert q.drained() == [SpoolRemove()] and not q.spool_open
    assert q.drained() == []


def test_a_schema_change_makes_the_queue_look_for_tokens_again():
    """forget_tokens() (db init) brings a describe before the next batch."""
    q = queue()
    add(q)
    ready(q, tokens=False)
    q.forget_tokens()
    assert q.next_action() == Resolve(describe=True)


def test_counters_can_be_shared():
    """The queue counts into the Counter it is given."""
    counters = collections.Counter(disconnects=1)
    q = WriteQueue("i", counters=counters)
    q.add("insert", "acc", {})
    assert counters == {"disconnects": 1, "accepted": 1, "queue_peak": 1}
