"""The worker processes' configuration and the supervisor's restart logic
(sipdisp/workers): a fake process spawner and a clock, no processes."""

import os

import pytest
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.internet.error import ProcessTerminated

from sipdisp.config import ConfigError
from sipdisp.schema import config_from_dict
from sipdisp.workers import (CONTROL_ENV, WORKER_ENV, private_port, worker_config,
                             worker_count, worker_number)
from sipdisp.workers.supervisor import RestartPolicy, SupervisorService

SHARED = {"cluster": {"redis": "redis://127.0.0.1:6379/0"},
          "usrloc": {"shared_url": "redis://127.0.0.1:6379/0"},
          "listen": {"udp": ["127.0.0.1:5060"], "tcp": ["127.0.0.1:5060"], "ws": []}}


def cfg_with(**workers):
    raw = dict(SHARED, workers=workers)
    return config_from_dict(raw)


def error(raw):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    return str(info.value)


def test_one_process_by_default_and_auto_is_the_cpu_count():
    assert worker_count(config_from_dict({})) == 1
    assert worker_count(cfg_with(processes="auto")) == (os.cpu_count() or 1)
    assert worker_count(cfg_with(processes=3)) == 3


def test_several_processes_need_redis_shared_registrations_and_shareable_storage():
    assert error({"workers": {"processes": 2}}).startswith("cluster.redis: ")
    raw = {"workers": {"processes": 2}, "cluster": SHARED["cluster"]}
    assert error(raw).startswith("usrloc.shared_url: ")
    raw = dict(SHARED, workers={"processes": 2}, storage={"url": "memory://"})
    assert error(raw).startswith("storage.url: memory:// cannot be shared")
    raw = dict(SHARED, workers={"processes": 2}, listen={"udp": ["127.0.0.1:0"], "ws": []})
    assert error(raw).startswith("listen.udp: 127.0.0.1:0: ")
    assert "workers.processes" in error({"workers": {"processes": 0}})
    assert "workers.processes" in error({"workers": {"processes": "many"}})


def test_a_worker_is_a_cluster_node_with_its_own_stable_port():
    cfg = config_from_dict(dict(SHARED, cluster=dict(SHARED["cluster"], node_id="edge1"),
                                workers={"processes": 2, "port_offset": 200}))
    assert worker_config(cfg, 2).cluster.node_id == "edge1-w2"
    assert worker_config(cfg, 2).listen.udp == cfg.listen.udp
    assert cfg.cluster.node_id == "edge1"  # the supervisor's own stays as it was
    assert private_port(cfg, 5060, 2) == 5262
    assert worker_number({WORKER_ENV: "3"}) == 3
    assert worker_number({}) is None and worker_number({WORKER_ENV: "x"}) is None


def test_restart_delay_doubles_for_quick_exits_and_resets_after_a_long_run():
    policy = RestartPolicy(delay=1.0, delay_max=8.0, window=10.0, max_per_minute=100)
    policy.started(1, 0.0)
    assert policy.exited(1, 100.0) == (1.0, False)  # ran long: the plain delay
    policy.started(1, 101.0)
    assert policy.exited(1, 102.0) == (2.0, False)  # died quickly: doubled
    policy.started(1, 104.0)
    assert policy.exited(1, 105.0) == (4.0, False)
    policy.started(1, 109.0)
    assert policy.exited(1, 110.0) == (8.0, False)
    policy.started(1, 118.0)
    assert policy.exited(1, 119.0) == (8.0, False)  # capped at delay_max
    policy.started(1, 127.0)
    assert policy.exited(1, 500.0) == (1.0, False)  # a long run again: back to the start


def test_restarts_beyond_the_cap_per_minute_wait_for_the_oldest_to_age():
    policy = RestartPolicy(delay=1.0, delay_max=1.0, window=0.5, max_per_minute=3)
    now = 0.0
    for _ in range(3):
        policy.started(2, now)
        delay, capped = policy.exited(2, now + 1.0)
        assert (delay, capped) == (1.0, False)
        now += 2.0
    # restarts at 2, 4, 6: the fourth may come a minute after the first
    policy.started(2, now)
    delay, capped = policy.exited(2, now + 1.0)
    assert capped and now + 1.0 + delay == pytest.approx(62.0)
    assert policy.exited(1, 7.0) == (1.0, False)  # another worker has its own count


class FakeTransport:
    def __init__(self, pid):
        self.pid = pid
        self.signals = []
        self.alive = True

    def closeStdin(self):
        pass

    def signalProcess(self, name):
        self.signals.append(name)


class FakeSpawner:
    """reactor.spawnProcess: records each call and connects a fake transport."""

    def __init__(self):
        self.calls = []
        self.next_pid = 1000

    def __call__(self, protocol, executable, args, env=None, childFDs=None):
        self.next_pid += 1
        transport = FakeTransport(self.next_pid)
        protocol.makeConnection(transport)
        self.calls.append((protocol, executable, args, env))
        return transport

    def end(self, protocol, signal=9):
        protocol.processEnded(Failure(ProcessTerminated(signal=signal)))


def supervisor(**workers):
    settings = {"processes": 2, "restart_delay": 1.0, "restart_delay_max": 4.0,
                "restart_window": 5.0, "restart_max": 10, "stop_timeout": 3.0}
    settings.update(workers)
    clock, spawn = Clock(), FakeSpawner()
    service = SupervisorService(cfg_with(**settings), "/etc/sipdisp.yaml", clock, spawn=spawn)
    return service, clock, spawn


def test_the_supervisor_spawns_each_worker_with_its_number_and_control_socket():
    service, clock, spawn = supervisor()
    service.startService()
    assert sorted(service.workers) == [1, 2]
    (p1, exe, args, env1), (p2, _, _, env2) = spawn.calls
    assert args[1:] == ["-m", "sipdisp.workers", "-c", "/etc/sipdisp.yaml"]
    assert (env1[WORKER_ENV], env2[WORKER_ENV]) == ("1", "2")
    assert env1[CONTROL_ENV] != env2[CONTROL_ENV] and "1" in os.path.basename(env1[CONTROL_ENV])
    assert service.stats["started"] == 2


def test_a_worker_that_exits_is_restarted_after_the_delay():
    service, clock, spawn = supervisor()
    service.startService()
    clock.advance(60)
    first = service.workers[1]
    spawn.end(first)
    assert 1 not in service.workers and service.stats["restarts"] == 1
    clock.advance(0.9)
    assert 1 not in service.workers  # not before restart_delay
    clock.advance(0.2)
    assert service.workers[1] is not first and service.workers[1].pid > first.pid
    assert spawn.calls[-1][3][WORKER_ENV] == "1"
    # it dies again at once: the next restart waits twice as long
    spawn.end(service.workers[1])
    clock.advance(1.5)
    assert 1 not in service.workers
    clock.advance(0.6)
    assert 1 in service.workers
    assert service.stats == {"started": 4, "exits": 2, "restarts": 2, "restarts_deferred": 0}


def test_a_worker_exiting_too_often_is_restarted_when_the_minute_allows():
    service, clock, spawn = supervisor(restart_max=2, restart_delay_max=1.0)
    service.startService()
    for _ in range(2):
        spawn.end(service.workers[1])
        clock.advance(1.0)
    spawn.end(service.workers[1])
    assert service.stats["restarts_deferred"] == 1
    clock.advance(30)
    assert 1 not in service.workers
    clock.advance(31)
    assert 1 in service.workers


def test_sighup_goes_to_every_worker_and_stop_terminates_then_kills():
    service, clock, spawn = supervisor()
    service.startService()
    w1, w2 = service.workers[1], service.workers[2]
    service.reload()
    assert w1.transport.signals == ["HUP"] and w2.transport.signals == ["HUP"]
    stopped = service.stopService()
    assert w1.transport.signals[-1] == "TERM" and w2.transport.signals[-1] == "TERM"
    spawn.end(w1, signal=15)
    assert not stopped.called
    clock.advance(3.1)  # stop_timeout: the other one is killed
    assert w2.transport.signals[-1] == "KILL"
    spawn.end(w2)
    assert stopped.called and service.workers == {}
    clock.advance(100)
    assert len(spawn.calls) == 2  # nothing restarted during or after the stop


def test_stop_cancels_a_pending_restart():
    service, clock, spawn = supervisor()
    service.startService()
    spawn.end(service.workers[1])
    service.stopService()
    spawn.end(service.workers[2])
    clock.advance(100)
    assert len(spawn.calls) == 2 and service.workers == {}


def test_a_worker_records_one_route_for_its_shared_and_own_sockets():
    """A call arriving on the shared port and leaving from the worker's own
    port gets one Record-Route, the own port (both sockets advertise it),
    not RFC 5658's pair; the next hop hears from the own port's Via."""
    from sipdisp.proxy import Listener, ProxyCore
    from sipdisp.sip import parse_message
    from tests.support import sipmsg
    from tests.support.harness import Link
    from tests.support.shipped import shipped_route
    own = Listener("own", "udp", "127.0.0.1", 5161)
    shared = Listener("shared", "udp", "127.0.0.1", 5060, advertised_port=5161)
    link = Link(ProxyCore([own, shared], None))
    shipped_route(link.core, ["sip:127.0.0.1:5080"])
    uac = link.add_peer("uac", "udp", "10.0.0.1", 40000, shared)
    uas = link.add_peer("uas", "udp", "127.0.0.1", 5080, own)
    uac.send(sipmsg.request("INVITE", "sip:bob@example.com", via_host="10.0.0.1",
                            via_port=40000))
    fwd = parse_message(uas.expect("INVITE"))
    (rr,) = fwd.values("record-route")
    assert rr.startswith("<sip:127.0.0.1:5161;lr;") and "r2=on" not in rr
    assert fwd.values("via")[0].startswith("SIP/2.0/UDP 127.0.0.1:5161;branch=")


def test_the_supervisor_command_reports_running_workers_and_counters():
    from sipdisp.commands import CommandRegistry
    from sipdisp.workers.supervisor import register_supervisor_commands
    service, clock, spawn = supervisor()
    registry = CommandRegistry()
    register_supervisor_commands(registry, service)
    service.startService()
    spawn.end(service.workers[2])
    status = []
    registry.call("workers.supervisor").addCallback(status.append)
    (status,) = status
    assert status["processes"] == 2 and list(status["running"]) == ["1"]
    assert status["restarts_pending"] == [2] and status["restarts"] == 1
    assert status["exits"] == 1 and status["started"] == 2
