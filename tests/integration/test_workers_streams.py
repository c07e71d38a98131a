"""Worker processes and stream connections (issue 16 item 1: "a message for
a stream connection (TCP, TLS, WebSocket) held by another worker is handed
to that worker"): a user registered over WebSocket or TCP on the shared
port is held by the worker that accepted her connection; a call arriving at
either worker's own port reaches her over that connection, and the in-dialog
requests of both sides end the call."""

import shutil
import socket
import time
import uuid

import pytest

from tests.integration.test_workers import ROUTE, config
from tests.support.cluster import ClusterRedis, HostUdpEndpoint, redis_up
from tests.support.peers import StreamEndpoint, WsPeer, answer, ensure_node_modules, node_available
from tests.support.processes import free_port
from tests.support.workers import Workers

pytestmark = pytest.mark.skipif(not (shutil.which("redis-cli") and redis_up()),
                                reason="needs Redis on 127.0.0.1:6379")

HOST = "df7jal23ls0d.invalid"


def register_text(user, transport, contact):
    n = uuid.uuid4().hex[:10]
    return (f"REGISTER sip:example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {HOST};branch=z9hG4bKr{n}\r\n"
            f"From: <sip:{user}@example.com>;tag=r{n}\r\n"
            f"To: <sip:{user}@example.com>\r\nCall-ID: reg-{n}\r\n"
            f"CSeq: 1 REGISTER\r\nMax-Forwards: 70\r\nContact: <{contact}>\r\n"
            "Expires: 600\r\nContent-Length: 0\r\n\r\n")


def wait_shared(redis, user, timeout=10.0):
    """Wait until her binding is in Redis, where the other worker's lookup reads it."""
    deadline = time.monotonic() + timeout
    while not redis.cli("HVALS", f"{redis.prefix}ul:{user}").strip():
        assert time.monotonic() < deadline, f"{user}'s binding never reached Redis"
        time.sleep(0.05)


def call_both_ways(proxy, caller, user, contact, transport, callee_send, callee_recv):
    """One call to ``user`` through each worker's own port: the caller hangs
    up the first, the callee the second. Returns how many proxy Vias each
    INVITE reached her with, sorted: [1, 2] when one worker holds her
    connection and the other relayed through it."""
    hops = []
    for k, who_hangs_up in ((1, "caller"), (2, "callee")):
        entry = proxy.worker_port(k)
        call_id = f"x{uuid.uuid4().hex}"
        ftag = f"c{uuid.uuid4().hex[:8]}"
        caller.send(
            f"INVITE sip:{user}@example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bKi{call_id}\r\n"
            f"From: <sip:bob@example.com>;tag={ftag}\r\nTo: <sip:{user}@example.com>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:bob@127.0.0.1:{caller.port}>\r\nContent-Length: 0\r\n\r\n",
            "127.0.0.1", entry)
        inv = callee_recv(lambda m: m.is_request and m.method == "INVITE")
        assert inv.call_id == call_id and str(inv.uri) == contact
        rr = inv.values("record-route")
        assert any(f"127.0.0.1:{entry}" in r for r in rr), (entry, rr)
        # the top Via is the holder's, over her connection; a call entering
        # at the other worker went through both (the entry's own UDP port below)
        vias = [v.split(";")[0] for v in inv.values("via")][:-1]
        assert vias[0].split()[0] == f"SIP/2.0/{transport}", vias
        if len(vias) == 2:
            assert vias[1] == f"SIP/2.0/UDP 127.0.0.1:{entry}", vias
        hops.append(len(vias))
        callee_send(answer(inv, 200, "OK", to_tag="callee1", contact=contact))
        ok = caller.recv(15, match=lambda m: not m.is_request and m.status == 200)
        assert caller.last_source == ("127.0.0.1", entry)
        routes = list(reversed(ok.values("record-route")))
        in_dialog = (f"From: <sip:bob@example.com>;tag={ftag}\r\n"
                     f"To: <sip:{user}@example.com>;tag=callee1\r\nCall-ID: {call_id}\r\n"
                     "Max-Forwards: 70\r\n" + "".join(f"Route: {r}\r\n" for r in routes))
        caller.send(f"ACK {contact} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bKa{call_id}\r\n"
                    f"{in_dialog}CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n", "127.0.0.1", entry)
        assert callee_recv(lambda m: m.is_request and m.method == "ACK").call_id == call_id
        if who_hangs_up == "caller":
            caller.send(f"BYE {contact} SIP/2.0\r\n"
                        f"Via: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bKb{call_id}\r\n"
                        f"{in_dialog}CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n", "127.0.0.1", entry)
            bye = callee_recv(lambda m: m.is_request and m.method == "BYE")
            callee_send(answer(bye, 200, "OK"))
            done = caller.recv(10, match=lambda m: not m.is_request and m.cseq_method == "BYE")
        else:
            callee_send(f"BYE sip:bob@127.0.0.1:{caller.port} SIP/2.0\r\n"
                        f"Via: SIP/2.0/{transport} {HOST};branch=z9hG4bKc{call_id}\r\n"
                        f"From: <sip:{user}@example.com>;tag=callee1\r\n"
                        f"To: <sip:bob@example.com>;tag={ftag}\r\nCall-ID: {call_id}\r\n"
                        "CSeq: 1 BYE\r\nMax-Forwards: 70\r\n"
                        + "".join(f"Route: {r}\r\n" for r in rr)
                        + "Content-Length: 0\r\n\r\n")
            bye = caller.recv(10, match=lambda m: m.is_request and m.method == "BYE")
            caller.send(answer(bye, 200, "OK"), *caller.last_source)
            done = callee_recv(lambda m: not m.is_request and m.cseq_method == "BYE")
        assert done.status == 200 and done.call_id == call_id
    return sorted(hops)


def test_a_tcp_user_on_one_worker_is_called_through_both(tmp_path):
    """Her TCP connection lands on one worker; calls entering at worker 1 and
    at worker 2 both reach her over it (one relays through the holder)."""
    user = f"tcp{uuid.uuid4().hex[:8]}"
    contact = f"sip:{user}@{HOST};transport=tcp"
    with ClusterRedis() as redis, Workers(tmp_path, config(
            redis, tmp_path, routing={"request_route": ROUTE},
            registrar={"accept_any_domain": True})) as proxy, \
            HostUdpEndpoint("127.0.0.1") as caller:
        ua = StreamEndpoint.connect(proxy.port("tcp"))
        try:
            ua.send(register_text(user, "TCP", contact).encode())
            assert ua.recv(10).status == 200
            wait_shared(redis, user)
            hops = call_both_ways(
                proxy, caller, user, contact, "TCP", lambda text: ua.send(text.encode()),
                lambda match: _stream_recv(ua, match))
        finally:
            ua.close()
        assert hops == [1, 2], hops


def _stream_recv(ua, match, timeout=15.0):
    while True:
        msg = ua.recv(timeout)
        if match(msg):
            return msg


@pytest.mark.skipif(not node_available(), reason="node and npm are not installed")
def test_a_websocket_user_on_one_worker_is_called_through_both(tmp_path):
    """As above over the shared WebSocket port (a browser softphone)."""
    ensure_node_modules()
    user = f"ws{uuid.uuid4().hex[:8]}"
    contact = f"sip:{user}@{HOST};transport=ws"
    ws_port = free_port(socket.SOCK_STREAM)
    with ClusterRedis() as redis, Workers(tmp_path, config(
            redis, tmp_path, routing={"request_route": ROUTE},
            registrar={"accept_any_domain": True},
            listen={"ws": [f"127.0.0.1:{ws_port}"]})) as proxy, \
            WsPeer(f"ws://127.0.0.1:{ws_port}", lifetime=90) as peer, \
            HostUdpEndpoint("127.0.0.1") as caller:
        peer.open()
        peer.send(register_text(user, "WS", contact))
        ok = peer.recv_sip(10, match=lambda m: not m.is_request and m.status >= 200)
        assert ok.status == 200
        wait_shared(redis, user)
        hops = call_both_ways(proxy, caller, user, contact, "WS", peer.send,
                                 lambda match: peer.recv_sip(15, match=match))
        assert hops == [1, 2], hops
