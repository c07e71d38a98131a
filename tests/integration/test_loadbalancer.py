"""The load balancer with SIPp standing in for FreeSWITCH nodes, through a
real twistd-started sipdisp: capacity per resource, refusal when full,
failover, and no load or dialog left behind.

Every load is bounded: SIPp runs a fixed number of calls (-m) and every wait
has a deadline."""


import pytest

from tests.support.calls import LB_ROUTE, lb_loads, rpc, wait_until
from tests.support.processes import Sipdisp, Sipp, free_port, sipp_available

pytestmark = pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed")


def start(tmp_path, capacity, nodes=2):
    """sipdisp balancing group 1 over ``nodes`` lb_node.xml SIPp nodes with ``pstn=capacity``."""
    ports = [free_port() for _ in range(nodes)]
    cfg = {"console": {"enabled": False}, "http": {"listen": "127.0.0.1:0"},
           "routing": LB_ROUTE,
           "load_balancer": {"destinations": [
               {"id": n + 1, "group": 1, "uri": f"sip:127.0.0.1:{p}",
                "resources": f"vm=100;conf=100;transc=100;pstn={capacity}",
                "description": f"FS{n + 1}"} for n, p in enumerate(ports)]}}
    proxy = Sipdisp(tmp_path, cfg).start()
    fs = [Sipp(tmp_path, f"fs{n + 1}", "lb_node.xml", p, "u1", extra=["-aa"]).start()
          for n, p in enumerate(ports)]
    return proxy, fs, ports


def caller(tmp_path, proxy, name, scenario, user, calls, rate, hold_ms, extra=()):
    """A SIPp caller placing ``calls`` calls to ``user`` through the proxy."""
    return Sipp(tmp_path, name, scenario, free_port(), "u1",
                target=f"127.0.0.1:{proxy.port('udp')}",
                extra=["-s", user, "-m", calls, "-r", rate, "-d", hold_ms, "-l", 1000,
                       "-timeout", 60, "-timeout_error", *extra]).start()


def active(proxy):
    """Answered dialogs in the proxy."""
    return rpc(proxy, "dlg.stats")["active"]


def stop_all(*procs):
    for proc in procs:
        if proc is not None:
            proc.stop()


def test_ten_long_calls_fill_two_nodes_of_five_the_eleventh_is_refused(tmp_path):
    """With pstn=5 on two nodes, 10 long calls split 5/5, the 11th gets the
    route's 503 No Capacity, a call that ends frees exactly one slot, and
    everything is back to 0 at the end."""
    proxy, fs, ports = start(tmp_path, capacity=5)
    uris = [f"sip:127.0.0.1:{p}" for p in ports]
    procs = list(fs)
    try:
        long = caller(tmp_path, proxy, "long", "uac.xml", "answer", 9, 50, 9000)
        short = caller(tmp_path, proxy, "short", "uac.xml", "answer", 1, 1, 2500)
        procs += [long, short]
        assert wait_until(lambda: active(proxy) == 10, 5), rpc(proxy, "dlg.stats")
        assert lb_loads(proxy) == {uris[0]: 5, uris[1]: 5}

        eleventh = caller(tmp_path, proxy, "eleventh", "lb_refused_uac.xml", "answer", 1, 1, 0,
                          extra=["-trace_msg", "-message_file", tmp_path / "eleventh.msg"])
        procs.append(eleventh)
        assert eleventh.wait(10) == 0, eleventh.errors()[-1500:]
        assert "SIP/2.0 503 No Capacity" in (tmp_path / "eleventh.msg").read_text()

        assert short.wait(15) == 0, short.errors()[-1500:]
        assert wait_until(lambda: active(proxy) == 9, 5)
        assert sorted(lb_loads(proxy).values()) == [4, 5]

        freed = caller(tmp_path, proxy, "freed", "uac.xml", "answer", 1, 1, 2000)
        procs.append(freed)
        assert wait_until(lambda: active(proxy) == 10, 5)
        assert lb_loads(proxy) == {uris[0]: 5, uris[1]: 5}
        twelfth = caller(tmp_path, proxy, "twelfth", "lb_refused_uac.xml", "answer", 1, 1, 0)
        procs.append(twelfth)
        assert twelfth.wait(10) == 0, twelfth.errors()[-1500:]

        assert freed.wait(15) == 0 and long.wait(20) == 0, long.errors()[-1500:]
        assert wait_until(lambda: set(lb_loads(proxy).values()) == {0}, 5), lb_loads(proxy)
        stats = rpc(proxy, "dlg.stats")
        assert stats["total"] == 0 and stats["counters"]["confirmed"] == 11, stats
    finally:
        stop_all(*procs)
        proxy.stop()
    assert long.stats()["ok"] == 9 and short.stats()["ok"] == 1 and freed.stats()["ok"] == 1
    assert "Traceback" not in proxy.log_text()


# 2,000 calls, as the issue asks: 800 answered, 400 cancelled while ringing,
# 200 timed out on both nodes (1 s each, then 408), 600 failed over (503 from
# the first node, answered by the other)
MIX = (("answer", "uac.xml", 800, 40, 100),
       ("cancel", "lb_cancel_uac.xml", 400, 20, 100),
       ("timeout", "lb_timeout_uac.xml", 200, 10, 0),
       ("failover", "uac.xml", 600, 30, 100))


def test_2000_mixed_calls_leave_every_load_at_zero_and_no_dialog(tmp_path):
    """2,000 calls mixing answered, cancelled, timed-out and failed-over calls
    all end as SIPp expects, and leave every destination's load at 0 and no dialog."""
    proxy, fs, ports = start(tmp_path, capacity=500)
    callers = []
    try:
        for user, scenario, calls, rate, hold in MIX:
            callers.append(caller(tmp_path, proxy, user, scenario, user, calls, rate, hold))
        codes = [c.wait(90) for c in callers]
        assert wait_until(lambda: set(lb_loads(proxy).values()) == {0}, 10), lb_loads(proxy)
        stats = rpc(proxy, "dlg.stats")
        core = rpc(proxy, "stats.get", "rcv_reply:")
    finally:
        stop_all(*callers, *fs)
        proxy.stop()
    for c, (user, _, calls, _, _) in zip(callers, MIX):
        got = c.stats()
        assert got["ok"] == calls and got["failed"] == 0, (user, got, c.errors()[-1500:])
    assert codes == [0, 0, 0, 0]
    assert stats["total"] == 0 and stats["profiles"]["lb-pstn"] == {}, stats
    counters = stats["counters"]
    assert counters["created"] == 2000
    assert counters["confirmed"] == 1400 and counters["ended_bye"] == 1400, counters
    assert core.get("rcv_reply:503", 0) == 600      # every failover call failed over once
    assert core.get("rcv_reply:487", 0) >= 400 + 400  # cancelled, and both timed-out branches
    assert "Traceback" not in proxy.log_text()
