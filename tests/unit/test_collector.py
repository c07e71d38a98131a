"""The garbage collector's schedule (sipdisp/collector.py): freezes between
full collections, and a full collection that frees the cycles frozen before."""

import gc
import weakref
from collections import Counter

from twisted.internet.task import Clock

from sipdisp.collector import CollectorSchedule


class Node:
    """An object that can sit in a reference cycle and be watched by a weakref."""


def test_a_cycle_frozen_while_alive_is_freed_by_the_next_full_collection():
    now = [0.0]
    stats = Counter()
    schedule = CollectorSchedule(1.0, 600.0, stats, clock=lambda: now[0])
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        watch = weakref.ref(a)
        schedule.tick()  # frozen while alive
        assert gc.get_freeze_count() > 0
        del a, b  # now garbage, out of the collector's sight
        gc.collect()
        assert watch() is not None  # frozen: the automatic collections do not see it
        now[0] = 600.0
        schedule.tick()  # the full collection is due
        assert watch() is None
        assert stats["gc_full_collections"] == 1 and stats["gc_full_collected"] >= 2
        assert stats["gc_freezes"] == 1
        assert gc.get_freeze_count() > 0  # frozen again after it
    finally:
        gc.unfreeze()


class FakeCollector:
    """Records the schedule's calls instead of moving this process's objects."""

    def __init__(self):
        self.calls = []

    def freeze(self):
        self.calls.append("freeze")

    def unfreeze(self):
        self.calls.append("unfreeze")

    def collect(self):
        self.calls.append("collect")
        return 3

    def get_objects(self):
        return [object()] * 10


def test_freezes_every_interval_and_collects_in_full_when_due_and_never_with_zero():
    clock = Clock()
    stats = Counter()
    fake = FakeCollector()
    schedule = CollectorSchedule(1.0, 5.0, stats, collector=fake, clock=clock.seconds)
    loop = schedule.start(clock)
    clock.pump([1.0] * 12)
    loop.stop()
    schedule.stop()
    assert fake.calls[-1] == "unfreeze"
    fake.calls.pop()
    # 4 freezes, then the full collection at 5 s, 4 freezes, the next at 10 s, 2 freezes
    assert fake.calls.count("collect") == 2
    assert fake.calls[:7] == ["freeze"] * 4 + ["unfreeze", "collect", "freeze"]
    assert stats["gc_full_collections"] == 2 and stats["gc_full_collected"] == 6
    assert stats["gc_freezes"] == 10

    never = CollectorSchedule(1.0, 0, Counter(), collector=FakeCollector(), clock=clock.seconds)
    for _ in range(1000):
        clock.advance(1.0)
        never.tick()
    assert never.gc.calls == ["freeze"] * 1000
    assert CollectorSchedule(0, 600, Counter(), collector=FakeCollector()).start(clock) is None
