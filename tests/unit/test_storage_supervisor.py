"""The connection supervisor on the memory backend with task.Clock: states,
the injected retry policy, the health check and the writer."""

from twisted.internet import task
from twisted.python.failure import Failure

from sipdisp.storage.backends.memory import MemoryBackend
from sipdisp.storage.retry import RetryPolicy
from sipdisp.storage.schema import SCHEMA
from sipdisp.storage.supervisor import Supervisor
from sipdisp.storage.url import DatabaseURL
from sipdisp.storage.writequeue import WriteQueue


class RecordingPolicy(RetryPolicy):
    """A fixed-pause policy that records the attempts it is asked about."""

    def __init__(self, seconds):
        super().__init__(seconds)
        self.asked = []

    def delay(self, attempt):
        self.asked.append(attempt)
        return super().delay(attempt)


def make(ping_interval=0, policy=None, **hooks):
    clock = task.Clock()
    backend = MemoryBackend(DatabaseURL("memory://"), SCHEMA, clock)
    writes = WriteQueue("inst")
    sup = Supervisor(backend, writes, clock, policy or RecordingPolicy(1.0),
                     ping_interval=ping_interval, **hooks)
    return clock, backend, writes, sup


def test_start_connects_and_writes_flow():
    """After start() the state is connected and a queued write is committed."""
    clock, backend, writes, sup = make()
    sup.start()
    writes.add("insert", "acc", {"callid": "a"})
    sup.pump()
    assert sup.state == "connected" and len(writes) == 0
    assert [r["callid"] for r in backend.db.tables["acc"]] == ["a"]


def test_reconnects_follow_the_injected_policy():
    """A failed start schedules a reconnect after policy.delay(0); each failed
    reconnect asks the policy with the attempts so far."""
    policy = RecordingPolicy(3.0)
    clock, backend, writes, sup = make(policy=policy)
    backend.available = False
    sup.start()
    assert sup.state == "disconnected" and policy.asked == [0]
    clock.advance(3.0)
    assert sup.attempt == 1 and policy.asked == [0, 1]
    backend.available = True
    clock.advance(3.0)
    assert sup.state == "connected" and sup.attempt == 0
    assert sup.counters["disconnects"] == 1 and sup.counters["reconnects"] == 1


def test_a_lost_link_reaches_the_write_queue():
    """lost() while connected marks the queue's link down and forgets tokens."""
    clock, backend, writes, sup = make()
    sup.start()
    writes.tokens = True
    sup.lost(Failure(RuntimeError("gone")))
    assert sup.state == "disconnected" and not writes.link_up and writes.tokens is None
    assert sup.last_error == "gone"


def test_the_idle_health_check_notices_a_lost_database():
    """With no traffic the periodic ping notices the outage."""
    clock, backend, writes, sup = make(ping_interval=10)
    sup.start()
    backend.available = False
    clock.advance(10)
    assert sup.state == "disconnected"


def test_close_stops_reconnecting():
    """close() leaves no reconnect scheduled."""
    clock, backend, writes, sup = make()
    backend.available = False
    sup.start()
    sup.close()
    assert sup.state == "closed" and clock.getDelayedCalls() == []


def test_hooks_run_on_reconnect_and_when_drained():
    """on_reconnected runs after a loss, before the flush; on_drained when the
    queue runs empty."""
    seen = []
    clock, backend, writes, sup = make(
        on_reconnected=lambda: seen.append(("reconnected", len(writes))),
        on_drained=lambda: seen.append(("drained", len(writes))))
    backend.available = False
    sup.start()
    writes.add("insert", "acc", {"callid": "a"})
    backend.available = True
    clock.advance(1.0)
    assert seen == [("reconnected", 1), ("drained", 0)]
