"""When Python's cyclic garbage collector runs in a loaded proxy.

A proxy under load holds hundreds of thousands of long-lived objects: the
transactions that linger 32 s for Timers J, L and M, dialogs, bindings. The
collector's full collection walks every one of them, and its own rule runs
one each time the long-lived objects grew by a quarter: at 800 calls/s that
is a stall of 100-800 ms every few seconds, each time finding nothing (the
core breaks its own reference cycles: measured, 0-3 objects per full
collection under load), and each stall costs the callers retransmissions.

So every ``proxy.gc_freeze_interval`` seconds the objects alive are moved out
of the collector's sight (``gc.freeze``, a splice of lists, no walk): its
automatic collections then only ever look at what was made since, which
stays cheap, and still catch the cycles that die young. What was frozen is
looked at by one full collection every ``proxy.gc_full_interval`` seconds
(``gc.unfreeze`` then ``gc.collect``), which frees the cycles that died old,
logs what it found and how long it took, and is counted.
"""

import gc
import time

from sipdisp.logs import Logger

log = Logger()


class CollectorSchedule:
    """Freezes the live objects every ``freeze_interval`` seconds and runs a
    full collection every ``full_interval`` seconds (0: never from here).
    ``stats`` (the core's counters) gets ``gc_freezes``,
    ``gc_full_collections``, ``gc_full_collected`` (objects freed) and
    ``gc_full_pause_ms`` (the longest full collection). ``collector`` is the
    ``gc`` module (a test may pass another)."""

    def __init__(self, freeze_interval, full_interval, stats, collector=gc, clock=time.monotonic):
        self.freeze_interval = freeze_interval
        self.full_interval = full_interval
        self.stats = stats
        self.gc = collector
        self.clock = clock
        self.last_full = clock()

    def tick(self):
        """Freeze, or run the full collection when it is due."""
        now = self.clock()
        if self.full_interval and now - self.last_full >= self.full_interval:
            self.full(now)
        else:
            self.gc.freeze()
            self.stats["gc_freezes"] += 1

    def full(self, now=None):
        """Unfreeze, collect everything, freeze again; returns objects freed."""
        self.last_full = self.clock() if now is None else now
        start = time.perf_counter()
        self.gc.unfreeze()
        tracked = len(self.gc.get_objects())
        freed = self.gc.collect()
        self.gc.freeze()
        pause_ms = round((time.perf_counter() - start) * 1000)
        stats = self.stats
        stats["gc_full_collections"] += 1
        stats["gc_full_collected"] += freed
        if pause_ms > stats["gc_full_pause_ms"]:
            stats["gc_full_pause_ms"] = pause_ms
        log.info("gc: full collection (every {interval:g} s, proxy.gc_full_interval): "
                 "{freed} of {tracked} objects freed in {ms} ms",
                 interval=self.full_interval, freed=freed, tracked=tracked, ms=pause_ms)
        return freed

    def stop(self):
        """Hand everything frozen back to the collector (the service stopped)."""
        self.gc.unfreeze()

    def start(self, reactor):
        """Run :meth:`tick` every ``freeze_interval`` seconds; returns the
        LoopingCall, or None with ``freeze_interval`` 0 (Python's own schedule)."""
        if not self.freeze_interval:
            return None
        from twisted.internet.task import LoopingCall
        loop = LoopingCall(self.tick)
        loop.clock = reactor
        loop.start(self.freeze_interval, now=False)
        return loop
