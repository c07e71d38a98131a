"""Issue 16's acceptance test, as an operator would watch it: node A is
killed (kill -9) during a 50 calls/s run through two nodes.

Node A (127.0.0.2) and node B (127.0.0.3) share the machine's Redis (under a
key prefix of this test: registrations and the cluster's counters) and its
PostgreSQL (the location table). Their route sends calls to registered users
to their contacts and every other call through the load balancer to two SIPp
FreeSWITCH stand-ins. A few UDP phones (SIPp answering) register through A.

The callers send 25 calls/s to each node (DNS SRV with equal weights), each
call held 4 s. Once A has taken all its calls it is killed; its callers then
fail over to B (25 calls/s more there), the phones registered through A
are called through B and one phone's refresh reaches B. Shown: the only failures are calls A had in progress;
every call through B succeeds, those to the phones answered by them; B counts
A's dead calls until cluster.node_ttl and nothing after.

Every load is bounded in calls (SIPp -m) and every wait has a deadline.
"""

import shutil
import urllib.request

import pytest

from sipdisp.storage.testing import PG_URL
from tests.support.calls import rpc, wait_until
from tests.support.cluster import Cluster, ClusterRedis, kill9, location_db, redis_up, \
    register_udp, sipp_caller, stop_all, total_load, user_name, wait_shared
from tests.support.processes import Sipp, free_port, sipp_available

pytestmark = [
    pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed"),
    pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("redis-cli")
                            and redis_up()),
                       reason="needs redis-server, redis-cli and Redis on 127.0.0.1:6379"),
]

NODE_TTL = 3.0
#: calls/s each caller sends: two at a time, so 50 calls/s in all
RATE = 25
HOLD_MS = 4000
#: A's half of the load until it dies (4 s), B's half through the run (10 s),
#: and A's half sent to B once A is dead (6 s)
CALLS_A, CALLS_B, CALLS_FAILOVER = 100, 250, 150
PHONES, PHONE_CALLS = 3, 4

#: registered users are called at their contacts, anything else goes to the
#: FreeSWITCH nodes through the load balancer; every INVITE makes a dialog
ROUTE = [
    {"if": "has_totag",
     "then": [{"if": "loose_route",
               "then": [{"if": {"not": "t_relay"}, "then": ["sl_reply_error"]}, "exit"]},
              {"if": {"is_method": "ACK"}, "then": ["exit"]},
              {"sl_send_reply": [404, "Not here"]}, "exit"]},
    {"if": {"is_method": "REGISTER"}, "then": [{"save": "location"}, "exit"]},
    {"if": {"not": {"is_method": "INVITE"}},
     "then": [{"sl_send_reply": [405, "Method Not Allowed"]}, "exit"]},
    "record_route",
    {"create_dialog": "B"},
    {"if": {"lookup": "location"},
     "then": [{"if": {"not": "t_relay"}, "then": ["sl_reply_error"]}, "exit"]},
    {"if": {"not": {"lb_start_or_next": [1, "pstn"]}},
     "then": [{"send_reply": [503, "No Capacity"]}, "exit"]},
    {"if": {"not": "t_relay"}, "then": ["sl_reply_error"]},
]


@pytest.fixture
def postgres():
    """The machine's PostgreSQL with sipdisp's tables (skipped when unreachable)."""
    with location_db() as db:
        yield db


def config(redis, fs_ports):
    """Both nodes' configuration: one Redis prefix for usrloc and the counters."""
    return {"storage": {"url": PG_URL},
            "usrloc": {"db_mode": 1, "shared_url": redis.url, "shared_prefix": redis.prefix},
            "registrar": {"accept_any_domain": True},
            "cluster": {"redis": redis.url, "key_prefix": redis.prefix,
                        "sync_interval": 0.2, "node_ttl": NODE_TTL},
            "load_balancer": {"destinations": [
                {"id": n + 1, "group": 1, "uri": f"sip:127.0.0.1:{port}",
                 "resources": "pstn=1000"} for n, port in enumerate(fs_ports)]},
            "routing": {"request_route": ROUTE}}


def peer_load(proxy, peer):
    """The load-balancer calls ``proxy`` counts for node ``peer`` (None: not a live node)."""
    fields = rpc(proxy, "cluster.status")["peers"].get(peer)
    if fields is None:
        return None
    return sum(int(n) for field, n in fields.items() if field.startswith("lb-pstn"))


def metric(proxy, name):
    """One unlabelled value of ``proxy``'s /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.port('http')}/metrics",
                                timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def test_kill_9_of_node_a_during_a_50_calls_per_second_run(tmp_path, postgres):
    """A dies with calls up: those are the only calls lost; B takes every new
    call, reaches the phones registered through A, and stops counting A's
    dead calls after the node TTL."""
    _, users = postgres
    fs_ports = [free_port(), free_port()]
    procs = [Sipp(tmp_path, f"fs{n + 1}", "lb_node.xml", port, "u1", extra=["-aa"]).start()
             for n, port in enumerate(fs_ports)]
    phones = {}
    for _ in range(PHONES):
        name, port = user_name(users, "phone"), free_port()
        phones[name] = (port, Sipp(tmp_path, name, "uas.xml", port, "u1",
                                   extra=["-m", PHONE_CALLS]).start())
        procs.append(phones[name][1])
    per_node = [{"cluster": {"node_id": "A"}}, {"cluster": {"node_id": "B"}}]
    try:
        with ClusterRedis() as redis, \
                Cluster(tmp_path, config(redis, fs_ports), per_node=per_node) as (a, b):
            wait_shared(a, b)
            assert wait_until(lambda: peer_load(a, "B") == 0 and peer_load(b, "A") == 0, 15), \
                (rpc(a, "cluster.status"), rpc(b, "cluster.status"))
            for name, (port, _) in phones.items():
                assert register_udp(a, name, port, call_id=f"reg-{name}").status == 200
                assert wait_until(lambda: f"{redis.prefix}ul:{name}" in redis.keys(), 10)

            # 25 calls/s to each node
            via_a = sipp_caller(tmp_path, a, "via_a", "uac.xml", CALLS_A, RATE, HOLD_MS,
                                extra=["-max_retrans", 3])  # give up on dead A within ~8 s
            via_b = sipp_caller(tmp_path, b, "via_b", "uac.xml", CALLS_B, RATE, HOLD_MS)
            procs += [via_a, via_b]
            # A has taken every call its callers send it: no call starts there now
            assert wait_until(
                lambda: rpc(a, "dlg.stats")["counters"].get("created", 0) >= CALLS_A, 60), \
                (rpc(a, "dlg.stats"), via_a.errors()[-1500:])
            assert wait_until(lambda: peer_load(b, "A"), 10)  # B counts A's calls
            in_progress = rpc(a, "dlg.stats")["total"]
            kill9(a)

            # the callers fail over to B; the phones registered through A are called there
            failover = sipp_caller(tmp_path, b, "failover", "uac.xml", CALLS_FAILOVER, RATE,
                                   HOLD_MS)
            procs.append(failover)
            # one phone's refresh reaches B now (its DNS SRV failover): still one binding
            first, (first_port, _) = next(iter(phones.items()))
            assert register_udp(b, first, first_port, call_id=f"reg-{first}",
                                cseq=2).status == 200
            assert wait_until(lambda: [c["CSeq"] for c in rpc(
                b, "ul.lookup", "location", first)["Contacts"]] == [2], 10), \
                rpc(b, "ul.lookup", "location", first)
            assert redis.cli("HLEN", f"{redis.prefix}ul:{first}") == "1"
            to_phones = {name: sipp_caller(tmp_path, b, f"to_{name}", "uac.xml", PHONE_CALLS,
                                           2, 500, service=name) for name in phones}
            procs += to_phones.values()
            # A's hash expires after the node TTL: its dead calls no longer count on B
            assert wait_until(lambda: peer_load(b, "A") is None, NODE_TTL + 30), \
                rpc(b, "cluster.status")

            codes = {name: proc.wait(90) for name, proc in
                     [("via_a", via_a), ("via_b", via_b), ("failover", failover),
                      *to_phones.items()]}
            phone_codes = {name: uas.wait(30) for name, (_, uas) in phones.items()}
            # every call ended: B counts none, for itself or for A
            assert wait_until(lambda: total_load(b) == 0, 15), rpc(b, "lb.list")
            assert rpc(b, "cluster.status")["peers"] == {}
            assert metric(b, "sipdisp_cluster_nodes") == 1
            assert redis.cli("EXISTS", f"{redis.prefix}counts:A") == "0"
    finally:
        stop_all(*procs)

    got_a = via_a.stats()
    assert got_a["created"] == CALLS_A, (got_a, via_a.errors()[-1500:])
    lost = CALLS_A - got_a["ok"]
    assert 0 < in_progress and lost <= in_progress, (lost, in_progress, via_a.errors()[-1500:])
    for name, proc, calls in [("via_b", via_b, CALLS_B), ("failover", failover, CALLS_FAILOVER),
                              *[(name, proc, PHONE_CALLS) for name, proc in to_phones.items()]]:
        got = proc.stats()
        assert codes[name] == 0 and got["ok"] == calls and got["failed"] == 0, \
            (name, got, proc.errors()[-1500:], b.log_text()[-3000:])
    for name, (_, uas) in phones.items():
        assert phone_codes[name] == 0 and uas.stats()["ok"] == PHONE_CALLS, \
            (name, uas.stats(), uas.errors()[-1500:])
    assert "Traceback" not in b.log_text()
