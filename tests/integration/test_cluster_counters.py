"""Two real sipdisp nodes (127.0.0.2 and 127.0.0.3) sharing their counters
and states through Redis (cluster.*, docs/cluster.md), with SIPp as the
caller and as the FreeSWITCH nodes: load-balancer capacities are global, a
killed node's calls stop counting after cluster.node_ttl, a Redis restart
under load refuses no call, and a dispatcher destination marked inactive on
one node is skipped by the other.

Every load is bounded (SIPp -m) and every wait has a deadline; each test has
its own key prefix and deletes its keys."""

import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.support.calls import LB_ROUTE, lb_loads, rpc, wait_until
from tests.support.cluster import REDIS, redis_cli, redis_up, sipp_caller, stop_all, total_load
from tests.support.cluster import PrivateRedis as RedisServer
from tests.support.processes import Sipdisp, Sipp, free_port, sipp_available

NODE_TTL = 3.0
_ids = itertools.count(1)


pytestmark = [
    pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed"),
    pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("redis-cli")
                            and redis_up(*REDIS)),
                       reason="needs redis-server, redis-cli and Redis on 127.0.0.1:6379")]


@pytest.fixture
def prefix():
    """A key prefix of this test alone; its keys are deleted afterwards."""
    text = f"sdtest:{os.getpid()}:{next(_ids)}:"
    yield text
    keys = redis_cli(REDIS[1], "--scan", "--pattern", text + "*").split()
    if keys:
        redis_cli(REDIS[1], "DEL", *keys)


def node(tmp_path, name, address, prefix, extra, redis_port=REDIS[1]):
    """A sipdisp node listening on ``address`` in the cluster ``prefix``."""
    home = tmp_path / name
    home.mkdir(exist_ok=True)
    cfg = {"listen": {"udp": [f"{address}:0"], "tcp": [f"{address}:0"], "ws": []},
           "console": {"enabled": False}, "http": {"listen": "127.0.0.1:0"},
           "cluster": {"redis": f"redis://127.0.0.1:{redis_port}/0", "node_id": name,
                       "key_prefix": prefix, "sync_interval": 0.2, "node_ttl": NODE_TTL}}
    cfg.update(extra)
    proxy = Sipdisp(home, cfg).start()
    proxy.host = address
    return proxy


def lb_nodes(tmp_path, prefix, capacity, redis_port=REDIS[1]):
    """Two proxy nodes balancing over two SIPp FreeSWITCH stand-ins with ``pstn=capacity``."""
    ports = [free_port() for _ in range(2)]
    extra = {"routing": LB_ROUTE, "load_balancer": {"destinations": [
        {"id": n + 1, "group": 1, "uri": f"sip:127.0.0.1:{p}",
         "resources": f"pstn={capacity}"} for n, p in enumerate(ports)]}}
    fs = [Sipp(tmp_path, f"fs{n + 1}", "lb_node.xml", p, "u1", extra=["-aa"]).start()
          for n, p in enumerate(ports)]
    a = node(tmp_path, "A", "127.0.0.2", prefix, extra, redis_port)
    b = node(tmp_path, "B", "127.0.0.3", prefix, extra, redis_port)
    return a, b, fs, [f"sip:127.0.0.1:{p}" for p in ports]


def lb_enabled(proxy):
    """``{destination uri: "yes" / "no"}`` (enabled) from ``lb.list``."""
    return {dest["uri"]: dest["enabled"] for dest in rpc(proxy, "lb.list")["destinations"]}


def test_pstn_5_on_two_nodes_is_10_calls_across_both_proxies_the_11th_refused_anywhere(
        tmp_path, prefix):
    """5 long calls through A and 5 through B fill pstn=5 on both FreeSWITCH
    stand-ins; both proxies see the 10; an 11th call is refused with 503 at A
    and at B; when the calls end both see 0; a destination disabled on A
    (lb.status) is disabled on B."""
    a, b, fs, uris = lb_nodes(tmp_path, prefix, capacity=5)
    procs = list(fs)
    try:
        via_a = sipp_caller(tmp_path, a, "via_a", "uac.xml", 5, 5, 20000)
        procs.append(via_a)
        assert wait_until(lambda: total_load(b) == 5, 15), (lb_loads(a), lb_loads(b))
        via_b = sipp_caller(tmp_path, b, "via_b", "uac.xml", 5, 5, 20000)
        procs.append(via_b)
        assert wait_until(lambda: total_load(a) == 10 and total_load(b) == 10, 15), \
            (lb_loads(a), lb_loads(b))
        # the view is global: 5 on each destination, whichever proxy sent them
        assert lb_loads(a) == lb_loads(b) == {uris[0]: 5, uris[1]: 5}
        for proxy in (a, b):
            name = f"eleventh_{proxy.host}"
            eleventh = sipp_caller(tmp_path, proxy, name, "lb_refused_uac.xml", 1, 1, 0,
                              extra=["-trace_msg", "-message_file", tmp_path / f"{name}.msg"])
            procs.append(eleventh)
            assert eleventh.wait(15) == 0, eleventh.errors()[-1500:]
            assert "SIP/2.0 503 No Capacity" in (tmp_path / f"{name}.msg").read_text()
        assert via_a.wait(60) == 0 and via_b.wait(60) == 0, via_b.errors()[-1500:]
        assert wait_until(lambda: total_load(a) == 0 and total_load(b) == 0, 15), \
            (lb_loads(a), lb_loads(b))
        # lb.status 1 0 on A: B takes destination 1 out of selection too
        rpc(a, "lb.status", 1, 0)
        assert wait_until(lambda: lb_enabled(b) == {uris[0]: "no", uris[1]: "yes"}, 10), lb_enabled(b)
        status = rpc(a, "cluster.status")
        with urllib.request.urlopen(f"http://127.0.0.1:{a.port('http')}/metrics",
                                    timeout=10) as resp:
            metrics = resp.read().decode()
    finally:
        stop_all(*procs)
        a.stop()
        b.stop()
    assert via_a.stats()["ok"] == 5 and via_b.stats()["ok"] == 5
    assert "sipdisp_cluster_nodes 2" in metrics
    assert "sipdisp_cluster_sync_failures_total 0" in metrics
    assert status["node"] == "A" and status["connected"] and status["stats"]["nodes"] == 2
    for proxy in (a, b):
        assert "Traceback" not in proxy.log_text()


def test_a_killed_nodes_calls_stop_counting_after_node_ttl(tmp_path, prefix):
    """kill -9 node A with 4 calls up: B counts them until cluster.node_ttl,
    then nothing is left of A (its hash expired, gone from the node set) and
    B fills the whole capacity (10) with new calls."""
    a, b, fs, uris = lb_nodes(tmp_path, prefix, capacity=5)
    procs = list(fs)
    try:
        held = sipp_caller(tmp_path, a, "held", "uac.xml", 4, 10, 60000)
        procs.append(held)
        assert wait_until(lambda: total_load(b) == 4, 15), lb_loads(b)
        assert redis_cli(REDIS[1], "EXISTS", prefix + "counts:A") == "1"
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        killed = time.monotonic()
        assert wait_until(lambda: total_load(b) == 0, NODE_TTL + 15), lb_loads(b)
        # not before the ttl: a node is not dropped for one late round
        assert time.monotonic() - killed >= NODE_TTL - 1.0
        assert redis_cli(REDIS[1], "EXISTS", prefix + "counts:A") == "0"
        assert redis_cli(REDIS[1], "ZRANGE", prefix + "nodes", 0, -1).split() == ["B"]
        held.stop()
        fresh = sipp_caller(tmp_path, b, "fresh", "uac.xml", 10, 20, 3000)
        procs.append(fresh)
        assert wait_until(lambda: total_load(b) == 10, 15), lb_loads(b)
        assert fresh.wait(30) == 0, fresh.errors()[-1500:]
    finally:
        stop_all(*procs)
        b.stop()
        a.stop()
    assert fresh.stats()["ok"] == 10 and fresh.stats()["failed"] == 0
    assert "Traceback" not in b.log_text()


def test_a_redis_restart_under_load_refuses_no_call_and_counts_are_right_after(
        tmp_path, prefix):
    """Calls through both nodes while their private Redis stops for 3 s and
    comes back empty: every call succeeds, nothing crashes, each node logs the
    outage once and its end, and afterwards the counts are global again."""
    redis = RedisServer(tmp_path).start()
    a, b, fs, uris = lb_nodes(tmp_path, prefix, capacity=500, redis_port=redis.port)
    procs = list(fs)
    try:
        load = [sipp_caller(tmp_path, proxy, f"load_{proxy.host}", "uac.xml", 120, 15, 1000)
                for proxy in (a, b)]
        procs += load
        assert wait_until(lambda: total_load(a) > 0 and total_load(b) > 0, 10)
        time.sleep(2.0)
        redis.stop()
        assert wait_until(lambda: not rpc(a, "cluster.status")["synced"], 10)
        time.sleep(3.0)
        redis.start()
        assert wait_until(lambda: rpc(a, "cluster.status")["synced"]
                          and rpc(b, "cluster.status")["synced"], 20)
        codes = [c.wait(60) for c in load]
        assert wait_until(lambda: total_load(a) == 0 and total_load(b) == 0, 15), \
            (lb_loads(a), lb_loads(b))
        # the restarted Redis knows both nodes again and sums their calls
        held = sipp_caller(tmp_path, a, "held", "uac.xml", 3, 10, 15000)
        procs.append(held)
        assert wait_until(lambda: total_load(a) == 3 and total_load(b) == 3, 15), \
            (lb_loads(a), lb_loads(b))
        status = rpc(b, "cluster.status")
        held.stop()
    finally:
        stop_all(*procs)
        a.stop()
        b.stop()
        redis.stop()
    for c in load:
        got = c.stats()
        assert got["ok"] == 120 and got["failed"] == 0, (got, c.errors()[-1500:])
    assert codes == [0, 0]
    assert status["stats"]["failures"] >= 1 and status["stats"]["nodes"] == 2
    for proxy in (a, b):
        text = proxy.log_text()
        assert "Traceback" not in text
        assert text.count("cluster: cannot sync with Redis") == 1, text[-3000:]
        assert text.count("cluster: Redis answers again") == 1


def ds_states(proxy):
    """``{uri: two-letter state}`` from ``dispatcher.list``."""
    return {target["DEST"]["URI"]: target["DEST"]["FLAGS"]
            for record in rpc(proxy, "dispatcher.list")["RECORDS"]
            for target in record["SET"]["TARGETS"]}


def test_a_destination_marked_inactive_on_a_is_skipped_by_b(tmp_path, prefix):
    """dispatcher.set_state i on A: B shows the destination inactive and its
    round robin sends every call to the other one; set active on B, A sees it."""
    ports = [free_port(), free_port()]
    uris = [f"sip:127.0.0.1:{p}" for p in ports]
    path = tmp_path / "dispatcher.list"
    path.write_text("".join(f"0 {uri}\n" for uri in uris))
    extra = {"dispatcher": {"source": "file", "list_file": str(path), "ping_interval": 0}}
    fs = [Sipp(tmp_path, f"fs{n}", "uas.xml", p, "u1", extra=["-aa"]).start()
          for n, p in enumerate(ports)]
    a = node(tmp_path, "A", "127.0.0.2", prefix, extra)
    b = node(tmp_path, "B", "127.0.0.3", prefix, extra)
    uac = None
    try:
        assert ds_states(b) == {uris[0]: "AX", uris[1]: "AX"}
        rpc(a, "dispatcher.set_state", "i", 0, uris[0])
        assert wait_until(lambda: ds_states(b)[uris[0]] == "IX", 10), ds_states(b)
        uac = Sipp(tmp_path, "uac", "uac.xml", free_port(), "u1",
                   target=f"127.0.0.3:{b.port('udp')}",
                   extra=["-m", 6, "-r", 6, "-d", 100, "-timeout", 60, "-timeout_error"]).start()
        assert uac.wait(30) == 0, uac.errors()[-1500:]
        rpc(b, "dispatcher.set_state", "a", 0, uris[0])
        assert wait_until(lambda: ds_states(a)[uris[0]] == "AX", 10), ds_states(a)
    finally:
        stop_all(uac, *fs)
        a.stop()
        b.stop()
    assert uac.stats()["ok"] == 6
    assert [f.stats()["incoming"] for f in fs] == [0, 6]
    for proxy in (a, b):
        assert "Traceback" not in proxy.log_text()


def options(call_id):
    """An OPTIONS from 127.0.0.9 as bytes."""
    return (f"OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.9;branch=z9hG4bK{call_id};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.9>;tag=1\r\nTo: <sip:ping@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def banned(proxy):
    """The addresses ``proxy`` bans now (ipban.list)."""
    return {entry["address"] for entry in rpc(proxy, "ipban.list")}


def test_pike_counts_a_sources_requests_across_nodes_and_bans_reach_every_node(
        tmp_path, prefix):
    """flood.reqs_density_per_unit 20: 15 requests to A and 8 to B from one
    source (neither node over 20 alone) get it banned, on B and then on A;
    ipban.remove on A lifts the ban on B too."""
    extra = {"flood": {"enabled": True, "reqs_density_per_unit": 20,
                       "sampling_time_unit": 10.0, "ban_time": 60.0}}
    a = node(tmp_path, "A", "127.0.0.2", prefix, extra)
    b = node(tmp_path, "B", "127.0.0.3", prefix, extra)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.9", 0))
    try:
        for i in range(15):
            sock.sendto(options(f"a{i}"), ("127.0.0.2", a.port("udp")))
        assert wait_until(lambda: rpc(b, "cluster.status")["stats"]["rounds"] > 0, 10)
        time.sleep(1.0)  # a few sync rounds: B reads A's count of the source
        assert banned(a) == banned(b) == set()
        for i in range(8):
            sock.sendto(options(f"b{i}"), ("127.0.0.3", b.port("udp")))
        assert wait_until(lambda: "127.0.0.9" in banned(b), 10), rpc(b, "pike.top")
        assert wait_until(lambda: "127.0.0.9" in banned(a), 10)
        rpc(a, "ipban.remove", "127.0.0.9")
        assert wait_until(lambda: "127.0.0.9" not in banned(b), 10)
    finally:
        sock.close()
        a.stop()
        b.stop()
    assert "banning 127.0.0.9" in b.log_text()
    for proxy in (a, b):
        assert "Traceback" not in proxy.log_text()


class Resp:
    """A blocking RESP2 client, enough to run the sync script by hand."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def call(self, *args):
        """Send one command; its decoded answer."""
        out = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.file.readline()[:-2]
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind in (b"+", b":"):
            return int(rest) if kind == b":" else rest.decode()
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2].decode()
        n = int(rest)
        return None if n < 0 else [self._read() for _ in range(n)]

    def close(self):
        """Close the connection."""
        self.file.close()
        self.sock.close()


def test_the_sync_script_against_redis_counts_expiry_loss_and_bans(prefix):
    """Two ClusterSync objects exchanging through the real script: each sees
    the other's counts; a node that stops is gone after its ttl; a deleted
    hash is reported lost and written whole; a ban reaches the other node
    and its keys are removed from Redis once it ended; a second process
    writing under the same node id is noticed."""
    from sipdisp.dialog.profiles import Profiles
    from sipdisp.flood.guard import FloodGuard
    from sipdisp.flood.htable import HTable
    from sipdisp.flood.pike import Pike
    from sipdisp.shared.sync import ClusterSync

    class Dialog:
        def __init__(self):
            self.profiles = []

    def member(name, ttl):
        profiles = Profiles()
        profiles.define("lb-pstn", True)
        guard = FloodGuard(HTable("ipban", autoexpire=300), Pike(unit=2.0, density=10))
        return profiles, guard, ClusterSync(name, prefix, ttl, profiles=profiles, flood=guard,
                                            secret=f"secret-{name}")

    def round_(client, sync):
        now = time.time()
        sync.answered(client.call(*sync.request(now)), now)

    client = Resp(REDIS[1])
    try:
        pa, ga, a = member("A", 1.0)
        pb, gb, b = member("B", 30.0)
        for _ in range(3):
            pa.add(Dialog(), "lb-pstn", "1")
        pb.add(Dialog(), "lb-pstn", "1")
        for sync in (a, b, a):
            round_(client, sync)
        assert pa.size("lb-pstn", "1") == pb.size("lb-pstn", "1") == 4
        assert a.secret == b.secret == b"secret-A"
        # B's hash deleted behind its back (a flush): reported, written whole again
        client.call("DEL", prefix + "counts:B")
        round_(client, b)
        assert b.stats["lost"] == 1
        round_(client, b)
        round_(client, a)
        assert pa.size("lb-pstn", "1") == 4
        # a short ban made on B reaches A with the time it has left
        gb.ban("192.0.2.77", time.time(), seconds=1.0)
        round_(client, b)
        round_(client, a)
        assert ga.bans.get("192.0.2.77", time.time()) is not None
        # A stops syncing: after its ttl (1 s) B no longer counts its 3 calls,
        # and the ended ban is gone from Redis
        deadline = time.monotonic() + 15
        while pb.size("lb-pstn", "1") != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
            round_(client, b)
        assert pb.size("lb-pstn", "1") == 1
        assert client.call("ZRANGE", prefix + "nodes", 0, -1) == ["B"]
        assert client.call("EXISTS", prefix + "counts:A") == 0
        assert client.call("HGET", prefix + "banx", "192.0.2.77") is None
        assert client.call("ZCARD", prefix + "banexp") == 0
        # two processes configured with the same node id: the first one notices
        pc1, _, c1 = member("C", 30.0)
        pc2, _, c2 = member("C", 30.0)
        round_(client, c1)
        time.sleep(0.01)  # marks are milliseconds
        pc2.add(Dialog(), "lb-pstn", "1")
        round_(client, c2)
        round_(client, c1)
        assert c1.stats["node_id_clashes"] == 1 and c2.stats["node_id_clashes"] == 0
    finally:
        client.close()


def test_a_nonce_from_node_a_is_accepted_by_node_b(tmp_path, prefix):
    """Without auth.secret each node starts with a random nonce secret and
    takes the cluster's from Redis: a REGISTER challenged by A and answered
    to B is accepted by B (200), as it would not be with per-node secrets."""
    import sqlite3
    import sys

    from sipdisp.auth.subscribers import subscriber_row
    from sipdisp.sip import parse_message
    from tests.support.processes import ROOT
    from tests.support.registrar import UA

    for name in ("A", "B"):
        home = tmp_path / name
        home.mkdir()
        path = home / "sipdisp.db"
        subprocess.run([sys.executable, "-m", "sipdisp.cli", "db", "init", f"sqlite:///{path}"],
                       cwd=ROOT, check=True, timeout=60, stdout=subprocess.DEVNULL)
        with sqlite3.connect(path) as db:
            db.execute("INSERT INTO subscriber (username, domain, password, ha1, ha1b) "
                       "VALUES (:username, :domain, :password, :ha1, :ha1b)",
                       subscriber_row("carol", "example.com", "pw-carol"))
    extra = {"auth": {"enabled": True, "secret": None}, "proxy": {"domains": ["example.com"]}}
    a = node(tmp_path, "A", "127.0.0.2", prefix, extra)
    b = node(tmp_path, "B", "127.0.0.3", prefix, extra)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    try:
        assert wait_until(lambda: all(rpc(p, "cluster.status")["stats"]["rounds"] > 0
                                      for p in (a, b)), 15)
        ua = UA(None, "carol", "127.0.0.1", sock.getsockname()[1], "udp", None,
                domain="example.com", password="pw-carol")
        sock.sendto(ua.register_bytes(), ("127.0.0.2", a.port("udp")))
        challenge = parse_message(sock.recv(65535))
        assert challenge.status == 401, challenge
        auth = ua.answer(challenge.get("www-authenticate"), "REGISTER", "sip:example.com")
        sock.sendto(ua.register_bytes(auth=auth), ("127.0.0.3", b.port("udp")))
        answer = parse_message(sock.recv(65535))
    finally:
        sock.close()
        a.stop()
        b.stop()
    assert answer.status == 200, answer
    for proxy in (a, b):
        assert "nonces are signed with the cluster's shared secret" in proxy.log_text()
