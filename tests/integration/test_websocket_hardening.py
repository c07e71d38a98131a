"""The ``websocket`` section's defences (issue 17) against a twistd-started
sipdisp with real clients on loopback: the Node ``ws`` peer for the Origin
allowlist, server pings and oversized messages, and a Python client writing
frames by hand (over wsproto's handshake) for RFC 6455 violations and a
bounded flood of 10,000 garbage frames while SIPp calls keep flowing."""

import os
import socket
import struct
import time

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request

from tests.integration.test_security_load import metric
from tests.support.peers import WsPeer, ensure_node_modules, node_available, options
from tests.support.processes import Sipdisp, Sipp, free_port, rss_kib, sipp_available

needs_node = pytest.mark.skipif(not node_available(), reason="node/npm are not installed; "
                                                             ".ci/run installs them")
needs_sipp = pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed "
                                "(apt-get install sip-tester); .ci/run installs it")


def events(proxy, name):
    """The value of counter ``name`` in the proxy's /metrics."""
    return metric(proxy, "sipdisp_core_events_total", event=name)


def ws_url(proxy):
    """The URL of sipdisp's first ws listener."""
    return f"ws://127.0.0.1:{proxy.port('ws')}"


@pytest.fixture(scope="module")
def node_modules():
    """tests/js's pinned ws package, installed once with npm ci if missing."""
    ensure_node_modules()


# -- Origin ------------------------------------------------------------------------------
@needs_node
def test_origin_allowlist_with_a_browser_like_client(tmp_path, node_modules):
    """A foreign Origin gets 403 and is counted; a listed origin, localhost and a
    client sending no Origin are upgraded; with allow_missing_origin false the
    last gets 403 too."""
    config = {"websocket": {"allowed_origins": ["https://phone.example.com"]}}
    with Sipdisp(tmp_path, config) as proxy:
        with WsPeer(ws_url(proxy), origin="https://evil.example") as peer:
            assert peer.expect("rejected", timeout=10)["status"] == 403
        for origin in ("https://phone.example.com", "http://localhost:8080", None):
            with WsPeer(ws_url(proxy), origin=origin) as peer:
                upgrade, _ = peer.open(timeout=10)
                assert upgrade["status"] == 101, origin
        assert events(proxy, "websocket_refused_origin") == 1
        assert "Origin https://evil.example not in websocket.allowed_origins" in proxy.log_text()
    strict = tmp_path / "strict"
    strict.mkdir()
    with Sipdisp(strict, {"websocket": {"allow_missing_origin": False}}) as proxy:
        with WsPeer(ws_url(proxy)) as peer:
            assert peer.expect("rejected", timeout=10)["status"] == 403
        with WsPeer(ws_url(proxy), origin="http://127.0.0.1") as peer:
            assert peer.open(timeout=10)[0]["status"] == 101


# -- pings -------------------------------------------------------------------------------
@needs_node
def test_pings_keep_a_live_peer_and_cut_a_dead_one(tmp_path, node_modules):
    """With short timers the proxy pings both peers: the one answering stays up
    and is still served, the one that never answers is aborted after
    websocket.pong_timeout and counted."""
    config = {"websocket": {"ping_interval": 0.5, "pong_timeout": 0.5}}
    with Sipdisp(tmp_path, config) as proxy:
        with WsPeer(ws_url(proxy)) as live, \
                WsPeer(ws_url(proxy), auto_pong=False) as dead:
            live.open(timeout=10)
            dead.open(timeout=10)
            # pinged at 0.5 s, aborted at 1 s after the handshake
            dead.expect("ping", timeout=3)
            closed = dead.expect("close", timeout=3)
            assert closed["code"] == 1006  # aborted: a dead peer would not read a close frame
            for _ in range(4):  # the live one keeps being pinged and stays open
                live.expect("ping", timeout=3)
            assert not [e for e in live.seen if e["event"] == "close"]
            live.send(options(f"sip:127.0.0.1:{proxy.port('ws')};transport=ws", "WS",
                              "live.invalid"))
            assert live.recv_sip(timeout=5).status == 200
        assert events(proxy, "websocket_closed_pong_timeout") == 1
        assert "websocket.pong_timeout" in proxy.log_text()


# -- sizes -------------------------------------------------------------------------------
@needs_node
def test_oversized_message_from_node_closed_with_1009(tmp_path, node_modules):
    """A 70,000-byte message in one frame (websocket.max_frame_size 65535) is
    closed with 1009 (message too big) and counted."""
    with Sipdisp(tmp_path, {}) as proxy:
        with WsPeer(ws_url(proxy)) as peer:
            peer.open(timeout=10)
            peer.send("x" * 70000)
            assert peer.expect("close", timeout=10)["code"] == 1009
        assert events(proxy, "websocket_closed_frame_too_big") == 1


# -- a client writing frames by hand -------------------------------------------------------
def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None):
    """One client frame built by hand (it may break RFC 6455); ``length``
    overrides the announced payload length."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(
        (key * (len(payload) // 4 + 1))[:len(payload)], "big")).to_bytes(len(payload), "big")
    return head + key + masked


class RawClient:
    """A WebSocket client on a real socket: wsproto for the handshake and for
    reading what the server sends, frames written as given."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host="127.0.0.1", target="/",
                                               subprotocols=["sip"])))
        for event in self.read():
            assert isinstance(event, AcceptConnection), event
            return
        raise AssertionError("no upgrade")

    def read(self):
        """Events from the server until at least one arrives or the socket closes."""
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            self.ws.receive_data(data or None)
            found = list(self.ws.events())
            if found or not data:
                return found

    def close_code(self):
        """The code of the server's close frame (1006 if it closed without one)."""
        while True:
            found = self.read()
            for event in found:
                if isinstance(event, CloseConnection):
                    return event.code

    def send(self, data):
        """Write raw bytes; False if the server already closed."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def close(self):
        """Close the socket."""
        self.sock.close()


BIG = 2 ** 31  # a frame announcing 2 GiB
FAULTS = {
    # name: (frames, close code, counter)
    "frame_announcing_2GiB": ([frame(0x2, b"\0" * 65536, length=BIG)], 1009,
                              "websocket_closed_frame_too_big"),
    "fragmented_message_too_big": ([frame(0x1, b"x" * 40000, fin=False),
                                    frame(0x0, b"x" * 40000, fin=False)], 1009,
                                   "websocket_closed_message_too_big"),
    "unmasked": ([frame(0x1, b"OPTIONS", mask=False)], 1002,
                 "websocket_closed_protocol_error"),
    "reserved_opcode": ([frame(0x5, b"junk")], 1002, "websocket_closed_protocol_error"),
    "reserved_bits": ([frame(0x1, b"junk", rsv=2)], 1002, "websocket_closed_protocol_error"),
    "invalid_utf8": ([frame(0x1, b"INVITE \xc0\xaf")], 1007,
                     "websocket_closed_invalid_payload"),
}


def test_protocol_errors_get_their_close_codes(tmp_path):
    """Each RFC 6455 violation and oversize from a real client is answered with
    its close code (1002, 1007, 1009) and counted by kind."""
    with Sipdisp(tmp_path, {}) as proxy:
        for name, (frames, code, counter) in FAULTS.items():
            client = RawClient(proxy.port("ws"))
            try:
                for data in frames:
                    client.send(data)
                assert client.close_code() == code, name
            finally:
                client.close()
        wanted = {}
        for _, code, counter in FAULTS.values():
            wanted[counter] = wanted.get(counter, 0) + 1
        for counter, count in wanted.items():
            assert events(proxy, counter) == count, counter
        assert "Traceback" not in proxy.log_text()


# -- the done-when flood -----------------------------------------------------------------
GARBAGE_FRAMES = 10_000
JUNK_PER_CONNECTION = 19   # frames of junk (valid WebSocket, not SIP) before the fault
FLOOD_SECONDS = 60


@needs_sipp
def test_ten_thousand_garbage_frames_are_cut_while_calls_flow(tmp_path):
    """10,000 garbage frames from one bounded client: junk messages are dropped
    by the parser, each fault closes its connection with its code, RSS stays
    under 1.5x idle and 100 SIPp calls through the proxy all succeed meanwhile."""
    uas_port = free_port()
    config = {"proxy": {"next_hop": f"sip:127.0.0.1:{uas_port}"},
              "dispatcher": {"list_file": str(tmp_path / "none.list")}}
    with Sipdisp(tmp_path, config) as proxy:
        time.sleep(1.0)
        idle = rss_kib(proxy.proc.pid)
        uas = Sipp(tmp_path, "uas", "uas.xml", uas_port, "u1").start()
        try:
            uac = Sipp(tmp_path, "uac", "uac.xml", free_port(), "u1",
                       target=f"127.0.0.1:{proxy.port('udp')}",
                       extra=["-r", 10, "-m", 100, "-d", 500, "-timeout", 60,
                              "-timeout_error"]).start()
            kinds = list(FAULTS.values())
            sent = connections = 0
            closes = {}
            deadline = time.monotonic() + FLOOD_SECONDS
            while sent < GARBAGE_FRAMES:
                assert time.monotonic() < deadline, f"flood too slow: {sent} frames"
                frames, code, _ = kinds[connections % len(kinds)]
                junk = [frame(0x2, os.urandom(200)) for _ in range(JUNK_PER_CONNECTION)]
                client = RawClient(proxy.port("ws"))
                try:
                    client.send(b"".join(junk + frames))
                    got = client.close_code()
                finally:
                    client.close()
                closes[(code, got)] = closes.get((code, got), 0) + 1
                sent += len(junk) + len(frames)
                connections += 1
            peak = rss_kib(proxy.proc.pid)
            assert uac.wait(60) == 0
        finally:
            uas.stop()
        stats = uac.stats()
        report = (f"{connections} connections, closes {closes}, "
                  f"RSS idle {idle} KiB, after {peak} KiB")
        assert all(code == got for code, got in closes), report
        assert peak < 1.5 * idle, report
        assert stats["ok"] == 100 and stats["failed"] == 0, (stats, report)
        faults = sum(events(proxy, counter) for counter in
                     {counter for _, _, counter in FAULTS.values()})
        assert faults == connections, report
        assert metric(proxy, "sipdisp_errors_total", kind="parse") >= \
            connections * JUNK_PER_CONNECTION, report
        assert "Traceback" not in proxy.log_text()
        print(report)
