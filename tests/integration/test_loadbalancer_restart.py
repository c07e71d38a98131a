"""Load balancer loads across a sipdisp restart, with the destinations in
PostgreSQL's load_balancer table and dialogs kept in its dialog table
(db_mode 1): a call up before the restart still counts on its node after
it, and a new call respects the capacity. SIPp stands in for the caller and
the FreeSWITCH nodes; every wait has a deadline."""


import pytest

from tests.support.calls import LB_ROUTE, lb_loads, rpc, wait_until
from tests.support.processes import Sipdisp, Sipp, free_port, sipp_available

pytestmark = pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed")


@pytest.fixture
def pg():
    """The PostgreSQL test database with sipdisp's tables and no dialogs or destinations."""
    from sipdisp.storage.testing import PG_URL
    from tests.support.cluster import postgres_with_schema
    server = postgres_with_schema()
    for table in ("dialog", "dialog_vars", "load_balancer"):
        server.execute(f"DELETE FROM {table}")
    yield server, PG_URL
    for table in ("dialog", "dialog_vars", "load_balancer"):
        server.execute(f"DELETE FROM {table}")


def proxy(tmp_path, url):
    """sipdisp reading the load_balancer table, dialogs in db_mode 1."""
    tmp_path.mkdir(exist_ok=True)
    cfg = {"console": {"enabled": False}, "http": {"listen": "127.0.0.1:0"},
           "routing": LB_ROUTE, "storage": {"url": url},
           "dialog": {"db_mode": 1},
           "load_balancer": {"source": "db", "probing_interval": 0}}
    return Sipdisp(tmp_path, cfg).start()


def caller(tmp_path, proxy, name, scenario, calls, hold_ms):
    return Sipp(tmp_path, name, scenario, free_port(), "u1",
                target=f"127.0.0.1:{proxy.port('udp')}",
                extra=["-s", "answer", "-m", calls, "-r", 1, "-d", hold_ms, "-l", 10,
                       "-timeout", 60]).start()


def test_a_call_up_before_a_restart_still_counts_after_it(tmp_path, pg):
    """pstn=1 on two nodes: one call up, sipdisp restarted, lb.list shows the call on its
    node, a new call goes to the other node and a third is refused with 503."""
    server, url = pg
    ports = [free_port(), free_port()]
    uris = [f"sip:127.0.0.1:{p}" for p in ports]
    for n, uri in enumerate(uris, 1):
        server.execute("INSERT INTO load_balancer (id, group_id, dst_uri, resources, probe_mode, "
                       "description) VALUES (%s, %s, %s, %s, %s, %s)",
                       (n, 1, uri, "vm=100;pstn=1", 0, f"FS{n}"))
    procs = [Sipp(tmp_path, f"fs{n}", "lb_node.xml", p, "u1", extra=["-aa"]).start()
             for n, p in enumerate(ports, 1)]
    first = second = None
    try:
        first = proxy(tmp_path / "first", url)
        procs.append(first)
        assert wait_until(lambda: sum(lb_loads(first).values()) == 0 and lb_loads(first), 10)
        held = caller(tmp_path, first, "held", "uac.xml", 1, 30000)
        procs.append(held)
        assert wait_until(lambda: rpc(first, "dlg.stats")["active"] == 1, 10)
        before = lb_loads(first)
        assert sorted(before.values()) == [0, 1]
        assert wait_until(lambda: server.execute("SELECT count(*) FROM dialog_vars "
                                                 "WHERE dialog_key = 'lb_dst'")[0][0] == 1, 5)
        first.stop()

        second = proxy(tmp_path / "second", url)
        procs.append(second)
        assert wait_until(lambda: lb_loads(second) == before, 10), (lb_loads(second), before)
        fits = caller(tmp_path, second, "fits", "uac.xml", 1, 8000)
        procs.append(fits)
        assert wait_until(lambda: rpc(second, "dlg.stats")["active"] == 2, 10)
        assert lb_loads(second) == {uri: 1 for uri in uris}
        refused = Sipp(tmp_path, "refused", "lb_refused_uac.xml", free_port(), "u1",
                       target=f"127.0.0.1:{second.port('udp')}",
                       extra=["-s", "answer", "-m", 1, "-timeout", 20,
                              "-trace_msg", "-message_file", tmp_path / "refused.msg"]).start()
        procs.append(refused)
        assert refused.wait(15) == 0, refused.errors()[-1500:]
        assert "SIP/2.0 503 No Capacity" in (tmp_path / "refused.msg").read_text()
    finally:
        for proc in procs:
            if proc is not None:
                proc.stop()
