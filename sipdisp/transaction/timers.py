"""A deadline heap: the sans-IO core never reads a clock, it is told ``now``.

The edge asks ``next_deadline()`` after every event and arms one reactor
timer for it; when it fires it calls ``pop_due(now)``.
"""

import heapq
import itertools


class TimerHeap:
    """Named per-owner timers; re-arming or cancelling a name supersedes the old one."""

    __slots__ = ("_heap", "_seq")

    def __init__(self):
        self._heap = []
        self._seq = itertools.count()

    def arm(self, owner, name, when):
        """Arm ``owner``'s timer ``name`` to fire at ``when`` (replacing any)."""
        seq = next(self._seq)
        owner.timers[name] = seq
        heapq.heappush(self._heap, (when, seq, owner, name))

    @staticmethod
    def cancel(owner, name):
        """Cancel ``owner``'s timer ``name`` if armed."""
        owner.timers.pop(name, None)

    def next_deadline(self):
        """The earliest live deadline, or None (stale entries are discarded)."""
        heap = self._heap
        while heap:
            when, seq, owner, name = heap[0]
            if owner.timers.get(name) == seq:
                return when
            heapq.heappop(heap)
        return None

    def pop_due(self, now):
        """Remove and return ``(owner, name)`` for every live timer due by ``now``."""
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            when, seq, owner, name = heapq.heappop(heap)
            if owner.timers.get(name) == seq:
                del owner.timers[name]
                due.append((owner, name))
        return due

    def pop_next(self, now):
        """Remove and return ``(owner, name)`` of the earliest live timer due by
        ``now``, or None. Popping one at a time lets a timer that an earlier one
        cancelled (or re-armed) in the same wake-up stay silent."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, seq, owner, name = heapq.heappop(heap)
            if owner.timers.get(name) == seq:
                del owner.timers[name]
                return owner, name
        return None

    def __len__(self):
        return len(self._heap)
