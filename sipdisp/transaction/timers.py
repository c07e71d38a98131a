"""A deadline heap: the sans-IO core never reads a clock, it is told ``now``.

The edge asks ``next_deadline()`` after every event and arms one reactor
timer for it; when it fires it calls ``pop_due(now)``.
"""

import heapq
import itertools

#: cancelled entries tolerated in the heap before it is rebuilt without them
_COMPACT_AFTER = 1024


class TimerHeap:
    """Named per-owner timers; re-arming or cancelling a name supersedes the old one.

    ``owner.timers[name]`` holds the live heap entry ``[when, seq, owner, name]``.
    Cancelling is lazy (the entry stays in the heap until its deadline) but
    lets go of the owner at once: a cancelled fr_inv timer (120 s) must not
    keep a finished transaction, and through it a whole call, alive."""

    __slots__ = ("_heap", "_seq", "_dead")

    def __init__(self):
        self._heap = []
        self._seq = itertools.count()
        self._dead = 0

    def arm(self, owner, name, when):
        """Arm ``owner``'s timer ``name`` to fire at ``when`` (replacing any)."""
        entry = [when, next(self._seq), owner, name]
        old = owner.timers.get(name)
        owner.timers[name] = entry
        if old is not None:
            self._drop(old)
        heapq.heappush(self._heap, entry)

    def cancel(self, owner, name):
        """Cancel ``owner``'s timer ``name`` if armed."""
        entry = owner.timers.pop(name, None)
        if entry is not None:
            self._drop(entry)

    def _drop(self, entry):
        entry[2] = None
        self._dead += 1
        heap = self._heap
        if self._dead > _COMPACT_AFTER and 2 * self._dead > len(heap):
            self._heap = [e for e in heap if e[2] is not None]
            heapq.heapify(self._heap)
            self._dead = 0

    @staticmethod
    def _live(entry):
        owner = entry[2]
        # an owner may also forget its timers itself (``timers.clear()``)
        return owner is not None and owner.timers.get(entry[3]) is entry

    def next_deadline(self):
        """The earliest live deadline, or None (stale entries are discarded)."""
        heap = self._heap
        live = self._live
        while heap:
            if live(heap[0]):
                return heap[0][0]
            self._discard(heapq.heappop(heap))
        return None

    def _discard(self, entry):
        if entry[2] is None and self._dead:
            self._dead -= 1

    def pop_due(self, now):
        """Remove and return ``(owner, name)`` for every live timer due by ``now``."""
        due = []
        item = self.pop_next(now)
        while item is not None:
            due.append(item)
            item = self.pop_next(now)
        return due

    def pop_next(self, now):
        """Remove and return ``(owner, name)`` of the earliest live timer due by
        ``now``, or None. Popping one at a time lets a timer that an earlier one
        cancelled (or re-armed) in the same wake-up stay silent."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._live(entry):
                owner, name = entry[2], entry[3]
                del owner.timers[name]
                return owner, name
            self._discard(entry)
        return None

    def __len__(self):
        return len(self._heap)
