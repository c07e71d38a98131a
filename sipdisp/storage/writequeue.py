"""
The storage's ordered write queue as a state machine: events in, decisions
out. No Twisted, no clock, no I/O: the supervisor
(:mod:`sipdisp.storage.supervisor`) runs the actions it asks for against the
backend, reports their outcome, and carries out the effects it returns
(spool lines, Deferreds to fire).

Writes get increasing sequence numbers and are committed in that order, one
batch in flight at a time (the head of the queue, up to ``batch_max``
writes). A batch ends one of three ways:

* committed: its writes leave the queue;
* failed on a statement error: with several writes, they are retried one at
  a time until the bad one is found; that one alone is dropped;
* failed because the connection went away (transient): the writes stay, and
  if the batch carried a token it is *unsure*: COMMIT may have happened.

Exactly once: when the ``sipdisp_batches`` table exists, each batch also
inserts a token naming it (``instance-first-last``) and deletes the previous
batch's token. Before writing after a reconnect (or a restart that replayed
the spool) the queue asks for the unsure token to be looked up: found, its
writes are done; absent, they are written again.

Spool hand-off: writes to spooled tables are journalled when accepted while
the link is down or the journal is open, and all still queued are journalled
when the link is lost; commits acknowledge them, and the journal is removed
once nothing in it is left to commit while connected.
"""

import collections
import itertools

from .base import WriteOp
from .schema import BATCH_TABLE

# -- actions: what the supervisor should run against the backend next --------


class Resolve(collections.namedtuple("Resolve", "describe")):
    """Before writing: look up the token table (when *describe*), then the
    unsure token (:meth:`WriteQueue.token_to_check`)."""


class WriteBatch(collections.namedtuple("WriteBatch", "ops token forget journal")):
    """Write *ops* in one transaction, with the token rows when *token* is
    set (inserting *token*, deleting *forget*, the previous one). *journal*:
    note the batch in the spool before sending it."""

    def statements(self, created):
        """The writes to send: the batch, then its token rows stamped *created*."""
        if self.token is None:
            return list(self.ops)
        out = list(self.ops) + [WriteOp(0, "insert", BATCH_TABLE,
                                        {"token": self.token, "created": created})]
        if self.forget is not None:
            out.append(WriteOp(0, "delete", BATCH_TABLE, where={"token": self.forget}))
        return out


# -- effects: what the supervisor carries out --------------------------------

class SpoolWrite(collections.namedtuple("SpoolWrite", "op")):
    """Journal *op* (the journal opens if it is not open)."""


class SpoolBatch(collections.namedtuple("SpoolBatch", "token upto")):
    """Note in the journal that batch *token* (writes up to seq *upto*) is sent."""


class SpoolAck(collections.namedtuple("SpoolAck", "seq")):
    """Note in the journal that every write up to *seq* is committed."""


class SpoolOpen(collections.namedtuple("SpoolOpen", "")):
    """Reopen the journal replayed at start, to append to it."""


class SpoolClose(collections.namedtuple("SpoolClose", "")):
    """Close the journal, keeping the file: it holds writes not committed."""


class SpoolRemove(collections.namedtuple("SpoolRemove", "")):
    """Delete the journal: everything in it is committed."""


class Committed(collections.namedtuple("Committed", "op result")):
    """*op* is committed; *result* is its row count (None: committed by a
    batch whose token was found, count unknown)."""


class Dropped(collections.namedtuple("Dropped", "op")):
    """*op* failed on its own (a statement error) and left the queue."""


class QueueFullNotice(collections.namedtuple("QueueFullNotice", "depth")):
    """The first write refused because the queue is full (later ones are
    refused silently until a write is accepted again)."""


class TokensMissing(collections.namedtuple("TokensMissing", "")):
    """There is no token table: a batch cut off at COMMIT may be written twice."""


class WriteQueue:
    """Queued writes, the batch in flight, the exactly-once token and the
    spool bookkeeping of one storage.

    *instance* names this process in batch tokens; *limit* bounds the queue;
    *spool_tables* are journalled when *spooling* (a spool directory is
    configured). *counters* (a ``collections.Counter``) receives accepted,
    queue_peak, dropped, spooled, replayed, written, failed and
    commits_confirmed.

    ``link_up`` mirrors the storage's connected state; ``busy`` is True while
    an action is out; ``tokens`` is None (not known yet), True or False
    (no token table); ``unsure`` is ``(token, last seq)`` of a batch that may
    have committed, or None.
    """

    def __init__(self, instance, batch_max=100, limit=100000, spool_tables=(),
                 spooling=False, counters=None):
        self.instance = instance
        self.batch_max = batch_max
        self.limit = limit
        self.spool_tables = frozenset(spool_tables)
        self.spooling = spooling
        self.counters = counters if counters is not None else collections.Counter()
        self.seq = 0
        self.link_up = False
        self.busy = False
        self.tokens = None
        self.last_token = None
        self.unsure = None
        self.spool_open = False
        self.spool_pending = 0
        self._ops = collections.deque()
        self._isolate = 0         # writes left to send one per batch
        self._inflight = None
        self._full_noticed = False

    # -- looking -----------------------------------------------------------------

    def __len__(self):
        return len(self._ops)

    def __iter__(self):
        """The queued writes, oldest first."""
        return iter(self._ops)

    @property
    def idle(self):
        """Nothing queued and nothing in flight."""
        return not self._ops and not self.busy

    # -- accepting -----------------------------------------------------------------

    def add(self, kind, table, row=None, where=None, keys=None):
        """Accept a write. Returns ``(op, effects)``; *op* is None when the
        queue is full (and counted as dropped)."""
        if len(self._ops) >= self.limit:
            self.counters["dropped"] += 1
            if self._full_noticed:
                return None, []
            self._full_noticed = True
            return None, [QueueFullNotice(len(self._ops))]
        self._full_noticed = False
        self.seq += 1
        op = WriteOp(self.seq, kind, table, row, where, keys)
        effects = []
        if self._spooled_table(op) and (self.spool_open or not self.link_up):
            effects.append(self._journal(op))
        self._ops.append(op)
        self.counters["accepted"] += 1
        if len(self._ops) > self.counters["queue_peak"]:
            self.counters["queue_peak"] = len(self._ops)
        return op, effects

    def replay(self, ops, last_seq, unsure):
        """Queue *ops* read back from the spool (already journalled): the
        sequence continues after *last_seq*, and *unsure* is the spool's
        batch that may have committed. Returns effects."""
        self.seq = max(self.seq, last_seq)
        self.unsure = unsure
        for op in ops:
            op.spooled = True
            self._ops.append(op)
        self.spool_pending = len(ops)
        self.counters["replayed"] += len(ops)
        if not self.spooling:
            return []
        if ops:
            self.spool_open = True
            return [SpoolOpen()]
        return [SpoolRemove()]

    # -- the link ------------------------------------------------------------------

    def link_restored(self):
        """The database answers again: writing may resume."""
        self.link_up = True

    def link_lost(self):
        """The database went away: learn the token table again afterwards,
        and journal the queued writes to spooled tables. Returns effects."""
        self.link_up = False
        self.tokens = None
        return [self._journal(op) for op in self._ops
                if not op.spooled and self._spooled_table(op)]

    def close(self):
        """The storage closes: keep the journal if it holds writes. Returns effects."""
        self.link_up = False
        if not self.spooling:
            return []
        self.spool_open = False
        return [SpoolClose()] if self.spool_pending else [SpoolRemove()]

    def forget_tokens(self):
        """The tables were (re)created: look for the token table again."""
        self.tokens = None

    # -- writing -------------------------------------------------------------------

    def next_action(self):
        """What to run now: a :class:`Resolve`, a :class:`WriteBatch`, or None
        (nothing queued, link down, or an action already out)."""
        if self.busy or not self.link_up or not self._ops:
            return None
        self.busy = True
        if self.tokens is None or self.unsure is not None:
            return Resolve(self.tokens is None)
        size = 1 if self._isolate else self.batch_max
        ops = list(itertools.islice(self._ops, size))
        token, forget, journal = None, None, False
        if self.tokens:
            token = "%s-%d-%d" % (self.instance, ops[0].seq, ops[-1].seq)
            forget = self.last_token
            journal = self.spool_open and any(op.spooled for op in ops)
        self._inflight = WriteBatch(ops, token, forget, journal)
        return self._inflight

    def tokens_known(self, exists):
        """Resolve: the token table exists or not. Returns effects."""
        self.tokens = bool(exists)
        return [] if self.tokens else [TokensMissing()]

    def token_to_check(self):
        """Resolve: the unsure token to look up now, or None (none, or no
        token table to look in: its writes are simply written again)."""
        if self.unsure is None:
            return None
        if not self.tokens:
            self.unsure = None
            return None
        return self.unsure[0]

    def token_checked(self, found):
        """Resolve: the unsure token is in the table (*found*) or not.
        Found, the writes it covers are committed. Returns effects."""
        token, upto = self.unsure
        self.unsure = None
        if not found:
            return []
        done = []
        while self._ops and self._ops[0].seq <= upto:
            done.append(self._ops.popleft())
        self.last_token = token
        self.counters["written"] += len(done)
        self.counters["commits_confirmed"] += 1
        return self._finish_spooled(done) + [Committed(op, None) for op in done]

    def resolved(self):
        """Resolve is over: writing may go on."""
        self.busy = False

    def resolve_failed(self, transient):
        """Resolve failed. On a lost link it is tried again after the
        reconnect; on any other error tokens are given up (at least once)."""
        self.busy = False
        if not transient:
            self.tokens, self.unsure = False, None

    def batch_committed(self, results):
        """The batch in flight is committed; *results* has one row count per
        write. Returns effects."""
        batch, self._inflight = self._inflight, None
        if batch.token is not None:
            self.last_token = batch.token
        for _ in batch.ops:
            self._ops.popleft()
        self._isolate = max(0, self._isolate - len(batch.ops))
        self.counters["written"] += len(batch.ops)
        effects = self._finish_spooled(batch.ops)
        self.busy = False
        return effects + [Committed(op, result) for op, result in zip(batch.ops, results)]

    def batch_failed(self, transient):
        """The batch in flight failed: the link went away (*transient*; report
        :meth:`link_lost` first when that is news) or a statement was refused.
        Returns effects."""
        batch, self._inflight = self._inflight, None
        self.busy = False
        if transient:
            if batch.token is None:
                return []
            self.unsure = (batch.token, batch.ops[-1].seq)
            return [SpoolBatch(*self.unsure)] if self.spool_open else []
        if len(batch.ops) > 1:
            # one of these is bad: retry them one at a time to find it
            self._isolate = len(batch.ops)
            return []
        op = self._ops.popleft()
        self._isolate = max(0, self._isolate - 1)
        self.counters["failed"] += 1
        return self._finish_spooled([op]) + [Dropped(op)]

    def drained(self):
        """The queue ran empty: drop the journal if nothing in it is left.
        Returns effects."""
        if self.spool_open and not self.spool_pending and self.link_up:
            self.spool_open = False
            return [SpoolRemove()]
        return []

    # -- spool bookkeeping ----------------------------------------------------------

    def _spooled_table(self, op):
        return self.spooling and op.table in self.spool_tables

    def _journal(self, op):
        op.spooled = True
        self.spool_pending += 1
        self.counters["spooled"] += 1
        self.spool_open = True
        return SpoolWrite(op)

    def _finish_spooled(self, ops):
        seqs = [op.seq for op in ops if op.spooled]
        if not seqs:
            return []
        self.spool_pending -= len(seqs)
        if self.spool_pending <= 0 and self.link_up:
            self.spool_pending = 0
            self.spool_open = False
            return [SpoolRemove()]
        return [SpoolAck(max(seqs))] if self.spool_open else []
