"""SIP over WebSocket (SipWebSocketProtocol) against StringTransport, with a
wsproto client on the other end: the 'sip' subprotocol, frames to and from
the core, control frames and limits."""

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, RejectConnection,
    Request, TextMessage,
)

from sipdisp.proxy.target import Listener
from sipdisp.sip import parse_message
from sipdisp.transport.edge import ConnectionLimits, Switchboard
from sipdisp.transport.websocket import SipWebSocketFactory
from tests.edge.fakes import RecordingCore, ResolvingClock, peer_transport, real_stack
from tests.support.sipmsg import request

WS = Listener(3, "ws", "127.0.0.1", 5062)
IDLE = 30.0
OPTIONS = request("OPTIONS", "sip:127.0.0.1:5062;transport=ws", proto="WS",
                  via_host="df7jal23ls0d.invalid")


class Client:
    """A wsproto client talking to one server protocol over a StringTransport."""

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

    def handshake(self, subprotocols=("sip",)):
        """Send the upgrade request offering ``subprotocols``; return the answer's events."""
        self.send(Request(host="127.0.0.1", target="/", subprotocols=list(subprotocols)))
        return self.events()


def recording(max_size=65535, max_connections=8, **limits):
    """A Switchboard on a RecordingCore and a clock, and a WS listener factory;
    ``limits`` override ConnectionLimits' defaults."""
    core = RecordingCore()
    board = Switchboard(core, ResolvingClock(), max_connections,
                        limits=ConnectionLimits(idle_timeout=IDLE, **limits))
    return board, core, SipWebSocketFactory(board, WS, IDLE, max_size)


def test_handshake_with_sip_is_accepted():
    """A client offering 'sip' is answered 101 naming the 'sip' subprotocol."""
    board, core, factory = recording()
    client = Client(factory)
    events = client.handshake(("foo", "sip"))
    assert len(events) == 1 and isinstance(events[0], AcceptConnection)
    assert events[0].subprotocol == "sip"
    assert not client.transport.disconnecting


def test_handshake_without_sip_is_refused():
    """A client not offering 'sip' gets 400 and the connection is closed."""
    board, core, factory = recording()
    client = Client(factory)
    events = client.handshake(("chat",))
    assert isinstance(events[0], RejectConnection) and events[0].status_code == 400
    assert client.transport.disconnecting
    assert core.received == []


def test_text_frame_delivered_to_the_core():
    """A text frame is one SIP message handed to the core with a ws source."""
    board, core, factory = recording()
    client = Client(factory)
    client.handshake()
    client.send(TextMessage(data=OPTIONS.decode()))
    assert len(core.received) == 1
    data, source, _ = core.received[0]
    assert data == OPTIONS
    assert (source.proto, source.conn, source.listener) == ("ws", client.proto.conn_id, WS)


def test_fragmented_message_delivered_whole():
    """A message sent in several frames reaches the core once, whole."""
    board, core, factory = recording()
    client = Client(factory)
    client.handshake()
    text = OPTIONS.decode()
    client.send(TextMessage(data=text[:50], message_finished=False))
    client.send(TextMessage(data=text[50:120], message_finished=False))
    assert core.received == []
    client.send(TextMessage(data=text[120:], message_finished=True))
    assert [d for d, _, _ in core.received] == [OPTIONS]


def test_binary_frame_delivered_to_the_core():
    """A binary frame carrying a SIP message is delivered too."""
    board, core, factory = recording()
    client = Client(factory)
    client.handshake()
    client.send(BytesMessage(data=OPTIONS))
    assert [d for d, _, _ in core.received] == [OPTIONS]


def test_nothing_delivered_before_the_handshake():
    """Messages sent to a connection before its handshake are queued, then sent as frames."""
    board, core, factory = recording()
    client = Client(factory)
    board.send(b"SIP/2.0 200 OK\r\n\r\n", board.flow_target(client.proto.conn_id))
    assert client.transport.value() == b""
    events = client.handshake()
    assert isinstance(events[0], AcceptConnection)
    assert isinstance(events[1], TextMessage) and events[1].data == "SIP/2.0 200 OK\r\n\r\n"


def test_options_answered_in_a_text_frame():
    """With the real core, OPTIONS to the proxy is answered 200 in a text frame."""
    board, listeners, clock = real_stack(protos=("udp", "ws"))
    factory = SipWebSocketFactory(board, listeners["ws"], IDLE, 65535)
    client = Client(factory)
    client.handshake()
    client.send(TextMessage(data=OPTIONS.decode()))
    events = client.events()
    assert len(events) == 1 and isinstance(events[0], TextMessage)
    resp = parse_message(events[0].data.encode())
    assert resp.status == 200
    assert resp.call_id == parse_message(OPTIONS).call_id


def test_ping_answered_with_pong():
    """A WebSocket ping gets a pong with the same payload."""
    board, core, factory = recording()
    client = Client(factory)
    client.handshake()
    client.send(Ping(payload=b"hb"))
    events = client.events()
    assert len(events) == 1 and isinstance(events[0], Pong) and events[0].payload == b"hb"


def test_close_frame_answered_and_connection_closed():
    """A close frame is answered with a close frame, then the connection is closed
    and leaves the connection table."""
    board, core, factory = recording()
    client = Client(factory)
    client.handshake()
    client.send(CloseConnection(code=1000))
    events = client.events()
    assert isinstance(events[0], CloseConnection)
    assert client.transport.disconnecting
    client.proto.connectionLost(None)
    assert board.connections == {}


def test_oversized_message_closes_the_connection():
    """A message larger than sip.max_message_size is not delivered and closes the connection."""
    board, core, factory = recording(max_size=300)
    client = Client(factory)
    client.handshake()
    client.send(TextMessage(data="x" * 400))
    assert core.received == []
    assert client.transport.disconnecting


def test_garbage_instead_of_handshake_closes():
    """Bytes that are not an HTTP upgrade close the connection without a traceback."""
    board, core, factory = recording()
    client = Client(factory)
    client.proto.dataReceived(b"\x00\x01 not http\r\n\r\n")
    assert client.transport.disconnecting


def test_connection_limit_refuses_websocket():
    """Past connections.max a WebSocket connection is aborted before any handshake."""
    board, core, factory = recording(max_connections=1)
    first = Client(factory, 40001)
    second = Client(factory, 40002)
    assert not first.transport.disconnecting
    assert second.transport.disconnected
    assert list(board.connections) == [first.proto.conn_id]


def test_idle_websocket_closed_by_the_clock():
    """An idle WebSocket connection is closed after connections.idle_timeout on the given clock."""
    board, core, factory = recording()
    client = Client(factory)
    client.handshake()
    client.send(TextMessage(data=OPTIONS.decode()))
    board._reactor.advance(IDLE - 0.5)
    assert not client.transport.disconnecting
    board._reactor.advance(0.5)
    assert client.transport.disconnecting


# -- issue #10: limits a stranger could exhaust -------------------------------------
def test_handshake_and_first_message_share_one_deadline():
    """A client that completes the handshake but sends no SIP message (only
    pings) is aborted at connections.first_message_timeout after accept."""
    board, core, factory = recording(first_message_timeout=10)
    client = Client(factory)
    board._reactor.advance(6)
    client.handshake()
    client.send(Ping(payload=b"hb"))
    board._reactor.advance(3.9)
    assert not client.transport.disconnected
    board._reactor.advance(0.1)
    assert client.transport.disconnected
    assert board.stats["connections_closed_first_message_timeout"] == 1


def test_unfinished_handshake_closed_at_deadline():
    """An upgrade request trickled and never finished is aborted at the deadline."""
    board, core, factory = recording(first_message_timeout=10)
    client = Client(factory)
    for byte in b"GET / HTTP/1.1\r\n"[:14]:  # one byte every 0.7 s: 9.8 s
        client.proto.dataReceived(bytes([byte]))
        board._reactor.advance(0.7)
    assert not client.transport.disconnected
    board._reactor.advance(0.3)
    assert client.transport.disconnected


def test_pings_unanswered_while_peer_not_reading():
    """While the write buffer is over its high-water mark, pings get no pong and
    reading is paused; after it drains pongs resume."""
    board, core, factory = recording()
    client = Client(factory)
    client.handshake()
    client.send(TextMessage(data=OPTIONS.decode()))
    client.proto.pauseProducing()
    assert client.transport.producerState == "paused"
    for _ in range(100):
        client.send(Ping(payload=b"hb"))
    assert client.events() == []
    client.proto.resumeProducing()
    client.send(Ping(payload=b"hb"))
    events = client.events()
    assert len(events) == 1 and isinstance(events[0], Pong)


def test_websocket_write_buffer_cap():
    """Frames written while the peer is not reading are capped at
    connections.max_write_buffer: past it the connection is aborted and counted."""
    board, core, factory = recording(max_write_buffer=100_000)
    client = Client(factory)
    client.handshake()
    client.send(TextMessage(data=OPTIONS.decode()))
    client.proto.pauseProducing()
    target = board.flow_target(client.proto.conn_id)
    for _ in range(20):
        board.send(b"x" * 10_000, target)
    assert client.transport.disconnected
    assert board.stats["connections_closed_write_buffer"] == 1
