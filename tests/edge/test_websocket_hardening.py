"""The ``websocket`` section's defences (issue 17) against StringTransport and
a clock, with a wsproto client or hand-made frames on the other end: the
Origin allowlist, server pings and the pong timeout, frame and message
size limits (1009) and RFC 6455's protocol errors (1002, 1007)."""

import os
import struct

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection, CloseConnection, Ping, Pong, RejectConnection, Request, TextMessage,
)

from sipdisp.proxy.target import Listener
from sipdisp.transport.edge import ConnectionLimits, Switchboard
from sipdisp.transport.origins import OriginPolicy
from sipdisp.transport.websocket import SipWebSocketFactory, WebSocketPolicy
from tests.edge.fakes import RecordingCore, ResolvingClock, peer_transport
from tests.support.sipmsg import request

WS = Listener(3, "ws", "127.0.0.1", 5062)
OPTIONS = request("OPTIONS", "sip:127.0.0.1:5062;transport=ws", proto="WS",
                  via_host="df7jal23ls0d.invalid")


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None):
    """One client frame built by hand, so that it can break RFC 6455 (wsproto's
    client only writes valid ones); ``length`` overrides the announced length."""
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
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Client:
    """A wsproto client on one server protocol over a StringTransport."""

    def __init__(self, factory, port=40000):
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.proto = factory.buildProtocol(None)
        self.transport = peer_transport(port=port, local_port=5062)
        self.proto.makeConnection(self.transport)

    def send(self, event):
        """Send one wsproto event to the server."""
        self.proto.dataReceived(self.ws.send(event))

    def events(self):
        """Events decoded from what the server wrote since the last call."""
        self.ws.receive_data(self.transport.value())
        self.transport.clear()
        return list(self.ws.events())

    def handshake(self, origin=None, subprotocols=("sip",)):
        """Send the upgrade request (with ``origin`` if given); return the answer's events."""
        headers = [(b"Origin", origin.encode())] if origin is not None else []
        self.send(Request(host="127.0.0.1", target="/", subprotocols=list(subprotocols),
                          extra_headers=headers))
        return self.events()

    def close_code(self):
        """The code of the close frame the server sent (None if it sent none)."""
        closes = [e for e in self.events() if isinstance(e, CloseConnection)]
        return closes[0].code if closes else None


def recording(max_size=65535, origins=None, **policy):
    """A Switchboard on a RecordingCore and a clock, and a WS factory with
    ``policy`` overriding WebSocketPolicy's defaults."""
    core = RecordingCore()
    # the first-message deadlines are tests of their own (test_websocket.py)
    board = Switchboard(core, ResolvingClock(), 64, limits=ConnectionLimits(
        idle_timeout=3605, first_message_timeout=1000, idle_timeout_before_message=1000))
    ws_policy = WebSocketPolicy(origins=origins or OriginPolicy(), **policy)
    return board, core, SipWebSocketFactory(board, WS, 3605, max_size, policy=ws_policy)


def opened(factory):
    """A client whose handshake (no Origin) was accepted."""
    client = Client(factory)
    assert isinstance(client.handshake()[0], AcceptConnection)
    return client


# -- Origin ------------------------------------------------------------------------
def test_foreign_origin_refused_with_403_and_counted():
    """A page from an origin not allowed gets 403, no upgrade, and is counted."""
    board, core, factory = recording()
    client = Client(factory)
    events = client.handshake(origin="https://evil.example")
    assert isinstance(events[0], RejectConnection) and events[0].status_code == 403
    assert client.transport.disconnecting
    assert board.stats["websocket_refused_origin"] == 1


def test_localhost_and_listed_origins_accepted():
    """localhost (any port) and an origin of websocket.allowed_origins are upgraded."""
    board, core, factory = recording(origins=OriginPolicy(["https://phone.example.com"]))
    for origin in ("http://localhost:8080", "https://phone.example.com",
                   "https://PHONE.example.com:443"):
        client = Client(factory)
        assert isinstance(client.handshake(origin=origin)[0], AcceptConnection), origin
    assert board.stats["websocket_refused_origin"] == 0


def test_missing_origin_refused_when_not_allowed():
    """Without websocket.allow_missing_origin a client sending no Origin gets 403."""
    board, core, factory = recording(origins=OriginPolicy(allow_missing=False))
    client = Client(factory)
    events = client.handshake()
    assert isinstance(events[0], RejectConnection) and events[0].status_code == 403
    ok = Client(factory, 40001)
    assert isinstance(ok.handshake(origin="http://127.0.0.1")[0], AcceptConnection)


# -- pings ---------------------------------------------------------------------------
def test_server_pings_and_a_silent_peer_is_aborted():
    """After websocket.ping_interval the proxy pings; without a pong within
    websocket.pong_timeout the connection is aborted and counted."""
    board, core, factory = recording(ping_interval=5, pong_timeout=2)
    client = opened(factory)
    clock = board._reactor
    clock.advance(4.9)
    assert client.events() == []
    clock.advance(0.1)
    pings = client.events()
    assert len(pings) == 1 and isinstance(pings[0], Ping)
    clock.advance(1.9)
    assert not client.transport.disconnected
    clock.advance(0.1)
    assert client.transport.disconnected
    assert board.stats["websocket_closed_pong_timeout"] == 1


def test_answered_pings_keep_the_connection():
    """A peer answering each ping with its pong stays connected and keeps being pinged."""
    board, core, factory = recording(ping_interval=5, pong_timeout=2)
    client = opened(factory)
    clock = board._reactor
    for _ in range(4):
        clock.advance(5)
        [ping] = client.events()
        client.send(ping.response())
        clock.advance(2)
    assert not client.transport.disconnected
    assert board.stats["websocket_closed_pong_timeout"] == 0


def test_pong_with_another_payload_does_not_count():
    """An unsolicited pong with a payload other than the ping's is no answer."""
    board, core, factory = recording(ping_interval=5, pong_timeout=2)
    client = opened(factory)
    board._reactor.advance(5)
    client.events()
    client.send(Pong(payload=b"made up"))
    board._reactor.advance(2)
    assert client.transport.disconnected


def test_no_ping_while_the_peer_is_not_reading():
    """While the write buffer is above its high-water mark no ping is sent (and
    no pong awaited); pinging resumes when it drains."""
    board, core, factory = recording(ping_interval=5, pong_timeout=2)
    client = opened(factory)
    client.proto.pauseProducing()
    board._reactor.advance(5)
    assert client.events() == []
    board._reactor.advance(3)
    assert not client.transport.disconnected
    client.proto.resumeProducing()
    board._reactor.advance(2)
    assert isinstance(client.events()[0], Ping)


def test_ping_interval_zero_sends_no_ping():
    """websocket.ping_interval 0 turns server pings off."""
    board, core, factory = recording(ping_interval=0)
    client = opened(factory)
    board._reactor.advance(600)
    assert not any(isinstance(e, Ping) for e in client.events())


# -- sizes -----------------------------------------------------------------------------
def test_oversized_frame_closed_with_1009_before_it_is_all_there():
    """A frame announcing more than websocket.max_frame_size is closed with 1009
    once that many bytes came, without waiting for (or buffering) the rest."""
    board, core, factory = recording(max_frame_size=1000)
    client = opened(factory)
    data = frame(0x1, b"x" * 1001, length=1_000_000)  # a megabyte announced, 1001 bytes sent
    client.proto.dataReceived(data)
    assert client.close_code() == 1009
    assert client.transport.disconnecting
    assert core.received == []
    assert board.stats["websocket_closed_frame_too_big"] == 1


def test_oversized_fragmented_message_closed_with_1009():
    """Frames each within max_frame_size adding up to more than
    websocket.max_message_size close with 1009."""
    board, core, factory = recording(max_frame_size=1000, max_message_size=2500)
    client = opened(factory)
    for _ in range(2):
        client.send(TextMessage(data="x" * 1000, message_finished=False))
    assert client.events() == []
    client.send(TextMessage(data="x" * 1000, message_finished=False))
    assert client.close_code() == 1009
    assert board.stats["websocket_closed_message_too_big"] == 1


def test_message_size_defaults_to_sip_max_message_size():
    """Without websocket.max_message_size a message is capped at sip.max_message_size."""
    board, core, factory = recording(max_size=300)
    client = opened(factory)
    client.send(TextMessage(data="x" * 301))
    assert client.close_code() == 1009
    assert core.received == []


def test_message_at_the_limits_is_delivered():
    """A message exactly max_frame_size long is delivered, not closed."""
    board, core, factory = recording(max_frame_size=len(OPTIONS))
    client = opened(factory)
    client.send(TextMessage(data=OPTIONS.decode()))
    assert [d for d, _, _ in core.received] == [OPTIONS]
    assert not client.transport.disconnecting


# -- protocol errors --------------------------------------------------------------------
@pytest.mark.parametrize("data, code, counter", [
    (frame(0x1, b"hello", mask=False), 1002, "websocket_closed_protocol_error"),
    (frame(0x3, b"hello"), 1002, "websocket_closed_protocol_error"),
    (frame(0xB, b""), 1002, "websocket_closed_protocol_error"),
    (frame(0x1, b"hello", rsv=4), 1002, "websocket_closed_protocol_error"),
    (frame(0x1, b"hello", rsv=1), 1002, "websocket_closed_protocol_error"),
    (frame(0x0, b"hello"), 1002, "websocket_closed_protocol_error"),
    (frame(0x9, b"p", fin=False), 1002, "websocket_closed_protocol_error"),
    (frame(0x9, b"p" * 126), 1002, "websocket_closed_protocol_error"),
    (frame(0x1, b"caf\xc3"), 1007, "websocket_closed_invalid_payload"),
    (frame(0x1, b"\xff\xfe SIP"), 1007, "websocket_closed_invalid_payload"),
], ids=["unmasked", "reserved-opcode-3", "reserved-control-opcode", "rsv3", "rsv1",
        "lone-continuation", "fragmented-ping", "long-ping", "truncated-utf8", "bad-utf8"])
def test_protocol_errors_close_with_rfc_6455_codes(data, code, counter):
    """Each RFC 6455 violation fails the connection with its close code, counted."""
    board, core, factory = recording()
    client = opened(factory)
    client.proto.dataReceived(data)
    assert client.close_code() == code
    assert client.transport.disconnecting
    assert board.stats[counter] == 1
    assert core.received == []


def test_nothing_is_read_after_failing_the_connection():
    """Frames after a protocol error are ignored: no second close, no delivery."""
    board, core, factory = recording()
    client = opened(factory)
    client.proto.dataReceived(frame(0x3, b"x") + frame(0x1, OPTIONS))
    client.proto.dataReceived(frame(0x1, OPTIONS))
    assert client.close_code() == 1002
    assert client.events() == []
    assert core.received == []
    assert board.stats["websocket_closed_protocol_error"] == 1


def test_peer_close_is_answered_with_its_own_code():
    """A close frame from the peer is echoed (not counted as a protocol error)."""
    board, core, factory = recording()
    client = opened(factory)
    client.send(CloseConnection(code=1001))
    assert client.close_code() == 1001
    assert board.stats["websocket_closed_protocol_error"] == 0


def test_bad_handshake_counted_not_logged_each_time():
    """Garbage instead of an upgrade request is closed and counted; the log line
    is written once however many come."""
    board, core, factory = recording()
    logged = []
    board.limit_log.logger = type("L", (), {"emit": lambda self, *a, **k: logged.append(a)})()
    for n in range(20):
        client = Client(factory, 41000 + n)
        client.proto.dataReceived(b"\x00\x01 not http\r\n\r\n")
        assert client.transport.disconnecting
        client.proto.connectionLost(None)
    assert board.stats["websocket_refused_handshake"] == 20
    assert len(logged) == 1
