"""Worker processes (workers.processes: 2, issue 16 item 1): SIPp calls
through the shared public UDP port, replies and in-dialog requests reaching
the worker holding the transaction, a kill -9 of one worker mid-run, and a
registration made through one worker reached through the other."""

import re
import shutil
import socket
import signal
import time
import uuid

import pytest

from tests.support.cluster import ClusterRedis, HostUdpEndpoint, redis_up
from tests.support.processes import Sipp, free_port, sipp_available
from tests.support.workers import Workers

pytestmark = [
    pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed; .ci/run installs it"),
    pytest.mark.skipif(not (shutil.which("redis-cli") and redis_up()),
                       reason="needs Redis on 127.0.0.1:6379"),
]

ROUTE = [
    {"if": "has_totag",
     "then": [{"if": "loose_route",
               "then": [{"if": {"not": "t_relay"}, "then": ["sl_reply_error"]}, "exit"]},
              {"if": {"is_method": "ACK"}, "then": ["exit"]},
              {"sl_send_reply": [404, "Not here"]}, "exit"]},
    {"if": {"is_method": "REGISTER"}, "then": [{"save": "location"}, "exit"]},
    {"if": {"is_method": "INVITE"}, "then": ["record_route"]},
    {"if": {"not": {"lookup": "location"}},
     "then": [{"sl_send_reply": [404, "Not Found"]}, "exit"]},
    {"if": {"not": "t_relay"}, "then": ["sl_reply_error"]},
]


def config(redis, tmp_path, **extra):
    cfg = {"cluster": {"redis": redis.url, "key_prefix": redis.prefix},
           "usrloc": {"shared_url": redis.url, "shared_prefix": redis.prefix}}
    cfg.update(extra)
    return cfg


def via_ports(trace_file):
    """The proxy's Via ports SIPp's UAS saw (the worker that relayed each INVITE)."""
    text = trace_file.read_text(errors="replace")
    return re.findall(r"^INVITE sip:.*?^Via: SIP/2.0/UDP 127\.0\.0\.1:(\d+)", text,
                      re.S | re.M)


def start_uas(tmp_path, name, port, scenario="uas.xml"):
    trace = tmp_path / f"{name}_messages.log"
    uas = Sipp(tmp_path, name, scenario, port, "u1",
               extra=["-trace_msg", "-message_file", str(trace)]).start()
    return uas, trace


def run_uac(tmp_path, name, proxy, count, rate, timeout=120):
    """``count`` calls at ``rate``/s from SIPp, one socket per call (-t un), so
    the kernel spreads their 4-tuples over the workers' shared sockets."""
    uac = Sipp(tmp_path, name, "uac.xml", free_port(), "un",
               target=f"127.0.0.1:{proxy.port('udp')}",
               extra=["-m", count, "-r", rate, "-l", 400, "-d", 200, "-max_socket", 1000,
                      "-timeout", timeout, "-timeout_error"]).start()
    return uac


def test_calls_at_200_cps_spread_over_two_workers_with_no_failure(tmp_path):
    """2,000 calls at 200 calls/s arrive on the shared port: both workers
    relay some, each writes its own port in Via and Record-Route, replies
    and the callers' BYEs find the worker holding the transaction: none fails."""
    uas_port = free_port()
    with ClusterRedis() as redis, Workers(tmp_path, config(
            redis, tmp_path, proxy={"next_hop": f"sip:127.0.0.1:{uas_port}"})) as proxy:
        uas, trace = start_uas(tmp_path, "uas", uas_port)
        try:
            uac = run_uac(tmp_path, "uac", proxy, 2000, 200)
            rc = uac.wait(150)
        finally:
            uas.stop()
        stats = uac.stats()
        assert stats["ok"] == 2000, (stats, uac.errors()[-2000:], proxy.log_text()[-3000:])
        assert stats["failed"] == 0 and rc == 0
        ports = via_ports(trace)
        counts = {p: ports.count(p) for p in set(ports)}
        own = {str(proxy.worker_port(1)), str(proxy.worker_port(2))}
        assert set(counts) == own, counts  # both workers, each under its own port
        assert min(counts.values()) > 100, counts
        assert "Traceback" not in proxy.log_text()


def test_the_callee_hangs_up_to_the_worker_in_the_record_route(tmp_path):
    """The callee's BYE goes to the Record-Route, the own port of the worker
    that relayed the INVITE, and reaches the caller: every call ends cleanly."""
    uas_port = free_port()
    with ClusterRedis() as redis, Workers(tmp_path, config(
            redis, tmp_path, proxy={"next_hop": f"sip:127.0.0.1:{uas_port}"})) as proxy:
        uas, trace = start_uas(tmp_path, "uas", uas_port, "uas_sends_bye.xml")
        try:
            uac = Sipp(tmp_path, "uac", "uac_callee_hangs_up.xml", free_port(), "un",
                       target=f"127.0.0.1:{proxy.port('udp')}",
                       extra=["-m", 200, "-r", 50, "-max_socket", 400, "-timeout", 60,
                              "-timeout_error"]).start()
            rc = uac.wait(90)
        finally:
            uas.stop()
        stats = uac.stats()
        assert stats["ok"] == 200 and stats["failed"] == 0 and rc == 0, \
            (stats, uac.errors()[-2000:], proxy.log_text()[-3000:])
        ports = set(via_ports(trace))
        assert ports == {str(proxy.worker_port(1)), str(proxy.worker_port(2))}, ports
        text = trace.read_text(errors="replace")
        assert f"Record-Route: <sip:127.0.0.1:{proxy.worker_port(1)};lr" in text
        assert f"Record-Route: <sip:127.0.0.1:{proxy.worker_port(2)};lr" in text


def test_kill_9_of_a_worker_mid_run_new_calls_succeed_and_it_comes_back(tmp_path):
    """kill -9 of worker 1 during 200 calls/s: the supervisor restarts it
    (new pid, under the same own port); calls in progress on it may fail,
    the rest succeed; a run afterwards uses both workers again with no failure."""
    uas_port = free_port()
    with ClusterRedis() as redis, Workers(tmp_path, config(
            redis, tmp_path, proxy={"next_hop": f"sip:127.0.0.1:{uas_port}"})) as proxy:
        uas, trace = start_uas(tmp_path, "uas", uas_port)
        try:
            first = proxy.pids()[1]
            uac = run_uac(tmp_path, "uac", proxy, 2000, 200, timeout=60)
            time.sleep(3)
            proxy.kill9(1)
            deadline = time.monotonic() + 40
            while proxy.starts(1) < 2 or proxy.log_text().count("sipdisp proxy running") < 3:
                assert time.monotonic() < deadline, proxy.log_text()[-4000:]
                time.sleep(0.2)
            assert proxy.pids()[1] != first and proxy.alive(proxy.pids()[1])
            assert not proxy.alive(first)
            uac.wait(150)
            stats = uac.stats()
            # calls whose transactions or dialogs were on the killed worker may fail
            assert stats["created"] == 2000
            assert stats["ok"] >= 1700, (stats, proxy.log_text()[-3000:])
            assert stats["ok"] + stats["failed"] == 2000
            assert "worker 1 (pid" in proxy.log_text() and "signal 9" in proxy.log_text()
            after = run_uac(tmp_path, "uac_after", proxy, 400, 100)
            rc = after.wait(90)
        finally:
            uas.stop()
        stats = after.stats()
        assert stats["ok"] == 400 and stats["failed"] == 0 and rc == 0, stats
        ports = via_ports(trace)[-400:]
        assert set(ports) == {str(proxy.worker_port(1)), str(proxy.worker_port(2))}


def register(port, user, contact_port):
    with HostUdpEndpoint("127.0.0.1") as ua:
        n = uuid.uuid4().hex[:10]
        ua.send(f"REGISTER sip:example.com SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bKr{n}\r\n"
                f"From: <sip:{user}@example.com>;tag=r{n}\r\nTo: <sip:{user}@example.com>\r\n"
                f"Call-ID: reg-{n}\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
                f"Contact: <sip:{user}@127.0.0.1:{contact_port}>\r\nExpires: 600\r\n"
                "Content-Length: 0\r\n\r\n", "127.0.0.1", port)
        return ua.recv(10, match=lambda m: not m.is_request and m.status >= 200)


def test_a_user_registered_through_one_worker_is_reached_through_the_other(tmp_path):
    """REGISTER at worker 1's own port; INVITEs at worker 2's own port reach
    her contact, relayed by worker 2 (its Via), through Redis; a SIGHUP to
    the supervisor reloads both workers, each keeping its node id."""
    user = f"alice{uuid.uuid4().hex[:8]}"
    with ClusterRedis() as redis, Workers(tmp_path, config(
            redis, tmp_path, routing={"request_route": ROUTE},
            registrar={"accept_any_domain": True})) as proxy, \
            HostUdpEndpoint("127.0.0.1") as alice, HostUdpEndpoint("127.0.0.1") as caller:
        assert register(proxy.worker_port(1), user, alice.port).status == 200
        deadline = time.monotonic() + 20
        while True:
            n = uuid.uuid4().hex[:10]
            caller.send(f"INVITE sip:{user}@example.com SIP/2.0\r\n"
                        f"Via: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bKi{n}\r\n"
                        f"From: <sip:bob@example.com>;tag=i{n}\r\n"
                        f"To: <sip:{user}@example.com>\r\nCall-ID: inv-{n}\r\n"
                        f"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
                        f"Contact: <sip:bob@127.0.0.1:{caller.port}>\r\n"
                        "Content-Length: 0\r\n\r\n", "127.0.0.1", proxy.worker_port(2))
            try:
                invite = alice.recv(2, match=lambda m: m.is_request and m.method == "INVITE")
                break
            except AssertionError:
                assert time.monotonic() < deadline, proxy.log_text()[-3000:]
        assert invite.values("via")[0].startswith(f"SIP/2.0/UDP 127.0.0.1:{proxy.worker_port(2)};")
        assert invite.uri.user == user and invite.uri.port == alice.port
        # SIGHUP to the supervisor: each worker reloads, as its own node
        proxy.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while proxy.log_text().count("reload: no setting changed") < 2:
            assert time.monotonic() < deadline, proxy.log_text()[-3000:]
            time.sleep(0.1)
        assert "SIGHUP: forwarded to 2 workers" in proxy.log_text()


def test_tcp_connections_to_the_shared_port_are_spread_over_the_workers(tmp_path):
    """SIPp opens one TCP connection per call to the shared port: the
    kernel hands each to one worker's accept socket; both workers relay
    calls (over TCP from their own listener) and none fails."""
    uas_port = free_port(socket.SOCK_STREAM)
    with ClusterRedis() as redis, Workers(tmp_path, config(
            redis, tmp_path,
            proxy={"next_hop": f"sip:127.0.0.1:{uas_port};transport=tcp"})) as proxy:
        trace = tmp_path / "uas_messages.log"
        uas = Sipp(tmp_path, "uas", "uas.xml", uas_port, "t1",
                   extra=["-trace_msg", "-message_file", str(trace)]).start()
        try:
            uac = Sipp(tmp_path, "uac", "uac.xml", free_port(socket.SOCK_STREAM), "tn",
                       target=f"127.0.0.1:{proxy.port('tcp')}",
                       extra=["-m", 300, "-r", 50, "-d", 100, "-max_socket", 400,
                              "-timeout", 60, "-timeout_error"]).start()
            rc = uac.wait(90)
        finally:
            uas.stop()
        stats = uac.stats()
        assert stats["ok"] == 300 and stats["failed"] == 0 and rc == 0, \
            (stats, uac.errors()[-2000:], proxy.log_text()[-3000:])
        ports = re.findall(r"^INVITE sip:.*?^Via: SIP/2.0/TCP 127\.0\.0\.1:(\d+)",
                           trace.read_text(errors="replace"), re.S | re.M)
        assert set(ports) == {str(proxy.worker_port(1)), str(proxy.worker_port(2))}, set(ports)


def test_tls_and_websocket_listeners_are_shared_by_the_workers(tmp_path):
    """A TLS listener shared with SO_REUSEPORT (TLS over the adopted socket):
    a call over TLS is relayed to SIPp on UDP with 100/180/200 back on the
    connection, and ACK/BYE along the Record-Route end it; the shared
    WebSocket port answers the upgrade with subprotocol sip."""
    from tests.support.certs import TestCA
    from tests.support.peers import Dialog, StreamEndpoint, client_tls_context
    cert = TestCA(tmp_path / "certs").issue("server", ips=["127.0.0.1"])
    uas_port = free_port()
    tls_port, ws_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    with ClusterRedis() as redis, Workers(tmp_path, config(
            redis, tmp_path, proxy={"next_hop": f"sip:127.0.0.1:{uas_port}"},
            listen={"tls": [f"127.0.0.1:{tls_port}"], "ws": [f"127.0.0.1:{ws_port}"]},
            tls={"certificate": cert.cert, "private_key": cert.key,
                 "ca_file": cert.ca})) as proxy:
        assert proxy.log_text().count(f"listening on tls:127.0.0.1:{tls_port} (shared") == 2
        uas = Sipp(tmp_path, "uas", "uas.xml", uas_port, "u1", extra=["-m", 1]).start()
        client = StreamEndpoint.connect(tls_port, client_tls_context(cert.ca))
        try:
            local = client.sock.getsockname()[1]
            dialog = Dialog("TLS", f"127.0.0.1:{local}",
                            f"sip:alice@127.0.0.1:{local};transport=tls",
                            f"sip:bob@127.0.0.1:{tls_port};transport=tls")
            client.send(dialog.invite().encode())
            responses = [client.recv(timeout=10)]
            while responses[-1].status < 200:
                responses.append(client.recv(timeout=10))
            assert [r.status for r in responses] == [100, 180, 200]
            dialog.learn(responses[-1])
            client.send(dialog.ack().encode())
            client.send(dialog.bye().encode())
            bye_ok = client.recv(timeout=10)
            assert (bye_ok.status, bye_ok.cseq_method) == (200, "BYE")
            assert uas.wait(15) == 0
        finally:
            client.close()
            uas.stop()
        with socket.create_connection(("127.0.0.1", ws_port), 10) as ws:
            ws.settimeout(10)
            ws.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = ws.recv(4096)
                assert chunk, head
                head += chunk
        assert head.startswith(b"HTTP/1.1 101") and b"sec-websocket-protocol: sip" in head.lower()
        assert "Traceback" not in proxy.log_text()
