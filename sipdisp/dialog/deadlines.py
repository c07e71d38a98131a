"""Deadlines of many dialogs behind one timer.

Every dialog has a deadline (its timeout, or the expiry of an unanswered
INVITE) that moves when it is answered and disappears when it ends. Arming
one timer per dialog in the core's heap would leave a stale entry there, and
the dialog with it, for the whole 6 h default timeout; this queue keeps
``key -> deadline`` and a heap it compacts when stale entries outnumber live
ones, and the dialog table arms a single core timer for its earliest entry.
"""

import heapq
import itertools


class DeadlineQueue:
    """``schedule(key, when)``, ``cancel(key)``, ``pop_due(now)``, ``next()``."""

    __slots__ = ("_heap", "_live", "_seq")

    def __init__(self):
        self._heap = []
        self._live = {}  # key -> (when, seq)
        self._seq = itertools.count()

    def schedule(self, key, when):
        """Set (or move) the deadline of ``key``."""
        seq = next(self._seq)
        self._live[key] = (when, seq)
        heapq.heappush(self._heap, (when, seq, key))
        if len(self._heap) > 64 + 2 * len(self._live):
            self._compact()

    def cancel(self, key):
        """Forget the deadline of ``key`` (if any)."""
        self._live.pop(key, None)

    def deadline(self, key):
        """The deadline of ``key``, or None."""
        entry = self._live.get(key)
        return None if entry is None else entry[0]

    def next(self):
        """The earliest live deadline, or None (stale heap entries are dropped)."""
        heap = self._heap
        live = self._live
        while heap:
            when, seq, key = heap[0]
            entry = live.get(key)
            if entry is not None and entry[1] == seq:
                return when
            heapq.heappop(heap)
        return None

    def pop_due(self, now):
        """Remove and return the keys whose deadline is ``<= now``, earliest first."""
        heap = self._heap
        live = self._live
        due = []
        while heap and heap[0][0] <= now:
            when, seq, key = heapq.heappop(heap)
            entry = live.get(key)
            if entry is not None and entry[1] == seq:
                del live[key]
                due.append(key)
        return due

    def _compact(self):
        self._heap = [(when, seq, key) for key, (when, seq) in self._live.items()]
        heapq.heapify(self._heap)

    def __len__(self):
        return len(self._live)

    def __contains__(self, key):
        return key in self._live
