"""The UDP hand-off between worker processes (workers.handoff, issue 16):
every call of ONE source (one SIPp socket, one 4-tuple, which SO_REUSEPORT
hashes to one worker) is spread over both workers by Call-ID, and the
caller sees every answer from the shared port it sent to."""

import json
import os
import re
import shutil
import socket
import time

import pytest

from sipdisp.schema import load_config
from sipdisp.workers.control import worker_control_path
from tests.support.cluster import ClusterRedis, redis_up
from tests.support.processes import Sipp, free_port, sipp_available
from tests.support.workers import Workers

pytestmark = [
    pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed; .ci/run installs it"),
    pytest.mark.skipif(not (shutil.which("redis-cli") and redis_up()),
                       reason="needs Redis on 127.0.0.1:6379"),
]


def config(redis, uas_port, **extra):
    cfg = {"cluster": {"redis": redis.url, "key_prefix": redis.prefix},
           "usrloc": {"shared_url": redis.url, "shared_prefix": redis.prefix},
           "proxy": {"next_hop": f"sip:127.0.0.1:{uas_port}"}}
    cfg.update(extra)
    return cfg


def control(path, method, timeout=10):
    """One JSON-RPC line to a worker's control socket; its result."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps({"jsonrpc": "2.0", "method": method, "params": [],
                              "id": 1}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            assert chunk, "control socket closed without answering"
            data += chunk
    return json.loads(data)["result"]


def worker_stats(proxy, monkeypatch):
    """``stats.get`` of each worker, over its control socket."""
    monkeypatch.chdir(proxy.tmp_path)  # the socket paths are relative to the node's directory
    cfg = load_config(str(proxy.config_path))
    return {k: control(os.path.abspath(worker_control_path(cfg, k)), "stats.get")
            for k in (1, 2)}


def via_ports(trace_file, method="INVITE"):
    """The proxy's Via ports on each ``method`` SIPp's UAS saw (the relaying worker)."""
    text = trace_file.read_text(errors="replace")
    return re.findall(rf"^{method} sip:.*?^Via: SIP/2.0/UDP 127\.0\.0\.1:(\d+)", text,
                      re.S | re.M)


def test_one_source_at_200_cps_is_spread_over_both_workers_with_no_retransmission(
        tmp_path, monkeypatch):
    """2,000 calls at 200 calls/s from one SIPp socket: both workers relay
    INVITEs (each under its own Via port), datagrams are handed off in both
    directions, no call fails and SIPp retransmits nothing."""
    uas_port = free_port()
    with ClusterRedis() as redis, Workers(tmp_path, config(redis, uas_port)) as proxy:
        trace = tmp_path / "uas_messages.log"
        uas = Sipp(tmp_path, "uas", "uas.xml", uas_port, "u1",
                   extra=["-trace_msg", "-message_file", str(trace)]).start()
        try:
            uac = Sipp(tmp_path, "uac", "uac.xml", free_port(), "u1",
                       target=f"127.0.0.1:{proxy.port('udp')}",
                       extra=["-m", 2000, "-r", 200, "-l", 400, "-d", 200,
                              "-timeout", 120, "-timeout_error"]).start()
            rc = uac.wait(150)
        finally:
            uas.stop()
        stats = uac.stats()
        assert stats["ok"] == 2000 and stats["failed"] == 0 and rc == 0, \
            (stats, uac.errors()[-2000:], proxy.log_text()[-3000:])
        assert stats["retrans"] == 0, stats
        ports = via_ports(trace)
        counts = {p: ports.count(p) for p in set(ports)}
        assert set(counts) == {str(proxy.worker_port(1)), str(proxy.worker_port(2))}, counts
        assert min(counts.values()) > 600, counts  # crc32 of Call-IDs: about half each
        per_worker = worker_stats(proxy, monkeypatch)
        # one source landed on one worker, which handed the other its share
        sent = {k: s.get("udp_handoff_sent", 0) for k, s in per_worker.items()}
        received = {k: s.get("udp_handoff_received", 0) for k, s in per_worker.items()}
        lander = max(sent, key=sent.get)
        other = 3 - lander
        assert sent[lander] > 1000 and received[other] == sent[lander], per_worker
        assert sum(s.get("udp_handoff_failed", 0) for s in per_worker.values()) == 0
        assert per_worker[1]["rcv_request:INVITE"] > 600, per_worker
        assert per_worker[2]["rcv_request:INVITE"] > 600, per_worker
        assert "Traceback" not in proxy.log_text()


def test_cancel_from_one_source_reaches_the_worker_holding_the_invite(tmp_path, monkeypatch):
    """Callers that cancel while it rings, all from one socket: the CANCEL
    arrives on the shared port on the same worker as its INVITE's source,
    and is handed to the worker that relayed the INVITE, which cancels the
    branch: every call ends with 200 for the CANCEL and 487 for the INVITE."""
    node_port = free_port()
    with ClusterRedis() as redis, Workers(tmp_path, config(redis, node_port)) as proxy:
        trace = tmp_path / "node_messages.log"
        node = Sipp(tmp_path, "node", "lb_node.xml", node_port, "u1",
                    extra=["-aa", "-trace_msg", "-message_file", str(trace)]).start()
        try:
            uac = Sipp(tmp_path, "uac", "lb_cancel_uac.xml", free_port(), "u1",
                       target=f"127.0.0.1:{proxy.port('udp')}",
                       extra=["-s", "cancel", "-m", 200, "-r", 20, "-d", 100,
                              "-timeout", 90, "-timeout_error"]).start()
            rc = uac.wait(120)
        finally:
            node.stop()
        stats = uac.stats()
        assert stats["ok"] == 200 and stats["failed"] == 0 and rc == 0, \
            (stats, uac.errors()[-2000:], proxy.log_text()[-3000:])
        invites = via_ports(trace, "INVITE")
        cancels = via_ports(trace, "CANCEL")
        assert len(cancels) >= 200
        own = {str(proxy.worker_port(1)), str(proxy.worker_port(2))}
        assert set(invites) == own and set(cancels) == own, (set(invites), set(cancels))
        per_worker = worker_stats(proxy, monkeypatch)
        assert sum(s.get("udp_handoff_sent", 0) for s in per_worker.values()) > 100
        assert sum(s.get("rcv_request:CANCEL", 0) for s in per_worker.values()) >= 200
        assert min(s.get("rcv_request:CANCEL", 0) for s in per_worker.values()) > 30
        assert "Traceback" not in proxy.log_text()


def test_while_the_owner_is_down_its_calls_are_handled_where_they_land(tmp_path, monkeypatch):
    """kill -9 of worker 2 with a long restart delay: the survivor receives
    every datagram of the one source, finds worker 2's hand-off socket gone,
    handles its calls itself (counted in udp_handoff_failed): no call fails."""
    uas_port = free_port()
    with ClusterRedis() as redis, Workers(tmp_path, config(
            redis, uas_port, workers={"restart_delay": 60.0})) as proxy:
        proxy.kill9(2)
        deadline = time.monotonic() + 20
        while proxy.alive(proxy.pids()[2]):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        uas = Sipp(tmp_path, "uas", "uas.xml", uas_port, "u1").start()
        try:
            uac = Sipp(tmp_path, "uac", "uac.xml", free_port(), "u1",
                       target=f"127.0.0.1:{proxy.port('udp')}",
                       extra=["-m", 100, "-r", 20, "-d", 100,
                              "-timeout", 60, "-timeout_error"]).start()
            rc = uac.wait(90)
        finally:
            uas.stop()
        stats = uac.stats()
        assert stats["ok"] == 100 and stats["failed"] == 0 and rc == 0, \
            (stats, uac.errors()[-2000:], proxy.log_text()[-3000:])
        monkeypatch.chdir(proxy.tmp_path)
        cfg = load_config(str(proxy.config_path))
        survivor = control(os.path.abspath(worker_control_path(cfg, 1)), "stats.get")
        assert survivor["rcv_request:INVITE"] >= 100, survivor
        # about half the Call-IDs belong to worker 2 (crc32), each counted once or more
        assert survivor.get("udp_handoff_failed", 0) > 20, survivor
        assert survivor.get("udp_handoff_sent", 0) == 0, survivor
        assert "hand-off to worker 2 impossible" in proxy.log_text()
