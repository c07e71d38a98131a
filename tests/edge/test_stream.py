"""SIP over TCP/TLS (SipStreamProtocol) against StringTransport and task.Clock:
framing across any split, keep-alive pong, unframeable input, idle timeout,
connection limit and the connection table."""

from twisted.logger import globalLogPublisher

from sipdisp.proxy.target import Listener
from sipdisp.sip import parse_message
from sipdisp.transport.edge import ConnectionLimits, Switchboard
from sipdisp.transport.stream import SipStreamFactory, SipStreamProtocol
from tests.edge.fakes import RecordingCore, ResolvingClock, peer_transport, real_stack
from tests.support.sipmsg import request

TCP = Listener(1, "tcp", "127.0.0.1", 5060)
IDLE = 30.0

INVITE = request("INVITE", proto="TCP", body=b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n")
OPTIONS = request("OPTIONS", "sip:127.0.0.1:5060", proto="TCP")
assert INVITE.endswith(b"\r\n\r\nv=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n")  # a body to frame


def recording(max_connections=8, idle=IDLE, max_size=65535, **limits):
    """A Switchboard on a RecordingCore and a clock, and a TCP listener factory;
    ``limits`` override ConnectionLimits' defaults."""
    core = RecordingCore()
    clock = ResolvingClock()
    board = Switchboard(core, clock, max_connections,
                        limits=ConnectionLimits(idle_timeout=idle, **limits))
    factory = SipStreamFactory(board, TCP, idle, max_size)
    return board, core, clock, factory


def connect(factory, port=40000):
    """A protocol from ``factory`` connected to a StringTransport from 127.0.0.1:``port``."""
    proto = factory.buildProtocol(None)
    transport = peer_transport(port=port)
    proto.makeConnection(transport)
    return proto, transport


def frames(core):
    """The messages the core received, in order."""
    return [data for data, _, _ in core.received]


def test_two_messages_in_one_segment():
    """Two messages in one read are delivered as two frames, tagged with the connection."""
    board, core, clock, factory = recording()
    proto, _ = connect(factory)
    proto.dataReceived(INVITE + OPTIONS)
    assert frames(core) == [INVITE, OPTIONS]
    source = core.received[0][1]
    assert (source.proto, source.host, source.port, source.conn) == (
        "tcp", "127.0.0.1", 40000, proto.conn_id)
    assert source.listener is TCP


def test_framing_across_any_split():
    """However the stream is cut in two, the same two messages come out."""
    stream = INVITE + OPTIONS
    for split in range(1, len(stream)):
        board, core, clock, factory = recording()
        proto, _ = connect(factory)
        proto.dataReceived(stream[:split])
        proto.dataReceived(stream[split:])
        assert frames(core) == [INVITE, OPTIONS], f"split at {split}"


def test_framing_one_byte_at_a_time_with_keepalives():
    """Fed one byte at a time, with CRLF keep-alives between messages, the messages
    come out whole and each CRLFCRLF gets one CRLF."""
    board, core, clock, factory = recording()
    proto, transport = connect(factory)
    for byte in b"\r\n\r\n" + INVITE + b"\r\n\r\n" + OPTIONS:
        proto.dataReceived(bytes([byte]))
    assert frames(core) == [INVITE, OPTIONS]
    assert transport.value() == b"\r\n\r\n"


def test_crlfcrlf_ping_gets_crlf_pong():
    """A CRLFCRLF ping (RFC 5626 4.4.1) is answered with one CRLF and reaches no core."""
    board, core, clock, factory = recording()
    proto, transport = connect(factory)
    proto.dataReceived(b"\r\n\r\n")
    assert transport.value() == b"\r\n"
    assert core.received == []
    assert not transport.disconnecting


def test_missing_content_length_gets_400_and_close():
    """A request without Content-Length on TCP is answered 400 and the connection closed."""
    board, listeners, clock = real_stack(protos=("tcp",))
    factory = SipStreamFactory(board, listeners["tcp"], IDLE, 65535)
    proto, transport = connect(factory)
    bare = OPTIONS.replace(b"Content-Length: 0\r\n", b"")
    assert b"Content-Length" not in bare
    proto.dataReceived(bare)
    resp = parse_message(transport.value())
    assert resp.status == 400
    assert resp.call_id == parse_message(bare).call_id
    assert transport.disconnecting


def test_message_before_unframeable_one_is_still_delivered():
    """A good message followed in the same read by one without Content-Length is
    answered 200, then the bad one 400, then the connection is closed."""
    board, listeners, clock = real_stack(protos=("tcp",))
    factory = SipStreamFactory(board, listeners["tcp"], IDLE, 65535)
    proto, transport = connect(factory)
    bare = request("OPTIONS", "sip:127.0.0.1:5060", proto="TCP").replace(
        b"Content-Length: 0\r\n", b"")
    proto.dataReceived(OPTIONS + bare)
    out = transport.value()
    first_end = out.index(b"\r\n\r\n") + 4
    first, second = parse_message(out[:first_end]), parse_message(out[first_end:])
    assert (first.status, first.call_id) == (200, parse_message(OPTIONS).call_id)
    assert second.status == 400
    assert transport.disconnecting
    # bytes arriving after the close was decided are not answered again
    transport.clear()
    proto.dataReceived(b"more\r\n\r\n")
    assert transport.value() == b""


def test_oversized_message_gets_513_and_close():
    """A message larger than sip.max_message_size is answered 513 and the connection closed."""
    board, listeners, clock = real_stack(protos=("tcp",))
    factory = SipStreamFactory(board, listeners["tcp"], IDLE, 600)
    proto, transport = connect(factory)
    big = request("MESSAGE", proto="TCP", body=b"x" * 1000)
    proto.dataReceived(big)
    assert parse_message(transport.value()).status == 513
    assert transport.disconnecting


def test_request_answered_on_the_same_connection():
    """OPTIONS to the proxy is answered 200 on the connection it came on."""
    board, listeners, clock = real_stack(protos=("tcp",))
    factory = SipStreamFactory(board, listeners["tcp"], IDLE, 65535)
    other, other_transport = connect(factory, port=40001)
    proto, transport = connect(factory, port=40002)
    proto.dataReceived(OPTIONS)
    assert parse_message(transport.value()).status == 200
    assert other_transport.value() == b""


def test_idle_timeout_closes():
    """A connection that sent a valid message and then stays idle for
    connections.idle_timeout is closed; traffic postpones it."""
    board, core, clock, factory = recording()
    proto, transport = connect(factory)
    proto.dataReceived(OPTIONS)
    clock.advance(IDLE - 1)
    proto.dataReceived(b"\r\n\r\n")
    clock.advance(IDLE - 1)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting


def test_idle_timer_cancelled_on_close():
    """A closed connection leaves no timer (idle, first message) pending on the reactor."""
    board, core, clock, factory = recording()
    proto, transport = connect(factory)
    assert len(clock.getDelayedCalls()) == 2
    proto.connectionLost(None)
    assert clock.getDelayedCalls() == []


def test_connection_limit_refuses():
    """Past connections.max a new connection is aborted and not registered."""
    board, core, clock, factory = recording(max_connections=2)
    connect(factory, 40001)
    connect(factory, 40002)
    proto, transport = connect(factory, 40003)
    assert transport.disconnected  # abortConnection()
    assert proto.conn_id is None
    assert len(board.connections) == 2


def test_connection_table_entry_removed_on_close():
    """Closing a connection removes it from the table (by id and by address)."""
    board, core, clock, factory = recording()
    proto, transport = connect(factory)
    assert board.connections == {proto.conn_id: proto}
    assert board.flow_target(proto.conn_id) is not None
    proto.connectionLost(None)
    assert board.connections == {} and board._by_addr == {}
    assert board.flow_target(proto.conn_id) is None
    # a refused slot is free again
    assert board.can_accept()


def test_outgoing_connection_queues_until_connected():
    """An outgoing connection registered before it connects queues what is sent
    to it and writes it once connected."""
    board, core, clock, factory = recording()
    conn = SipStreamProtocol(board, TCP, IDLE, 65535, peer_host="127.0.0.1", peer_port=5080,
                             proto="tcp")
    conn.register()
    board.send(b"INVITE queued", board.flow_target(conn.conn_id))
    transport = peer_transport(port=5080)
    conn.makeConnection(transport)
    assert transport.value() == b"INVITE queued"
    board.send(b"ACK", board.flow_target(conn.conn_id))
    assert transport.value() == b"INVITE queuedACK"


def test_core_exception_does_not_close_the_connection():
    """A message the core chokes on is logged and dropped; the next one still arrives."""
    board, core, clock, factory = recording()
    proto, transport = connect(factory)
    calls = []

    def boom(data, source, now):
        calls.append(data)
        if len(calls) == 1:
            raise RuntimeError("route bug")
        return []

    core.receive = boom
    proto.dataReceived(INVITE + OPTIONS)
    assert calls == [INVITE, OPTIONS]
    assert not transport.disconnecting


# -- issue #10: limits a stranger could exhaust -------------------------------------
def test_trickled_header_closed_at_first_message_deadline():
    """A client that trickles one byte every two seconds and never completes its
    header is aborted at connections.first_message_timeout, and counted."""
    board, core, clock, factory = recording(first_message_timeout=10)
    proto, transport = connect(factory)
    for byte in OPTIONS[:4]:
        proto.dataReceived(bytes([byte]))
        clock.advance(2)
    assert not transport.disconnected
    clock.advance(2)  # 10 s after accept
    assert transport.disconnected
    assert board.stats["connections_closed_first_message_timeout"] == 1
    assert core.received == []


def test_crlf_pings_do_not_keep_a_silent_connection_open():
    """CRLF pings are answered but meet no deadline: a client that only pings
    is closed at connections.first_message_timeout."""
    board, core, clock, factory = recording(first_message_timeout=10)
    proto, transport = connect(factory)
    for _ in range(9):
        proto.dataReceived(b"\r\n\r\n")
        clock.advance(1)
    assert transport.value() == b"\r\n" * 9 and not transport.disconnected
    clock.advance(1)
    assert transport.disconnected


def test_first_valid_message_lifts_the_deadline():
    """A valid message before the deadline cancels it and the connection then
    gets the full connections.idle_timeout."""
    board, core, clock, factory = recording(idle=3605, first_message_timeout=10,
                                            idle_timeout_before_message=30)
    proto, transport = connect(factory)
    clock.advance(5)
    proto.dataReceived(OPTIONS)
    clock.advance(600)
    assert not transport.disconnecting
    assert proto.proven


def test_unparsable_messages_get_the_short_idle_timeout():
    """A client whose complete messages the core cannot parse is not promoted:
    it is closed after connections.idle_timeout_before_message without one,
    even while it trickles bytes."""
    board, listeners, clock = real_stack(protos=("tcp",))
    board.limits.idle_timeout_before_message = 30
    factory = SipStreamFactory(board, listeners["tcp"], 3605, 65535)
    proto, transport = connect(factory)
    proto.dataReceived(b"NOT SIP AT ALL\r\nContent-Length: 0\r\n\r\n")
    assert board.core.stats["parse_errors"] == 1
    assert not proto.proven and not transport.disconnecting
    for _ in range(3):
        clock.advance(9)
        proto.dataReceived(b"X")  # bytes of a header never completed
    clock.advance(3)
    assert transport.disconnecting
    assert board.core.stats["connections_closed_idle_before_message"] == 1


def test_per_source_limit_refuses_at_accept():
    """Past connections.max_per_source from one address a connection is aborted
    and counted; another address still connects, and a closed slot is reusable."""
    board, core, clock, factory = recording(max_connections=8, max_per_source=2)
    first, _ = connect(factory, 40001)
    connect(factory, 40002)
    refused, refused_transport = connect(factory, 40003)
    assert refused_transport.disconnected and refused.conn_id is None
    assert board.stats["connections_refused_per_source"] == 1
    other = factory.buildProtocol(None)
    other_transport = peer_transport(host="127.0.0.2", port=40004)
    other.makeConnection(other_transport)
    assert not other_transport.disconnected and other.conn_id is not None
    first.connectionLost(None)
    again, again_transport = connect(factory, 40005)
    assert not again_transport.disconnected


def test_refusals_are_logged_once_not_per_connection():
    """A flood of refused connections writes one log line, not one per connection."""
    board, core, clock, factory = recording(max_connections=1)
    connect(factory, 40000)
    lines = []
    observer = lines.append
    globalLogPublisher.addObserver(observer)
    try:
        for port in range(40001, 40101):
            connect(factory, port)
    finally:
        globalLogPublisher.removeObserver(observer)
    refusals = [e for e in lines if "connections.max" in e.get("log_format", "")]
    assert len(refusals) == 1
    assert board.stats["connections_refused_max"] == 100


def test_incoming_flood_leaves_outgoing_slots():
    """Incoming connections at connections.max do not use up the outgoing slots."""
    board, core, clock, factory = recording(max_connections=2, max_outgoing=1)
    connect(factory, 40001)
    connect(factory, 40002)
    assert not board.can_accept()
    assert board.can_connect()
    out = SipStreamProtocol(board, TCP, IDLE, 65535, peer_host="127.0.0.1", peer_port=5080)
    out.register()
    assert (board.incoming, board.outgoing) == (2, 1)
    assert not board.can_connect()
    out.connectionLost(None)
    assert board.can_connect()


def test_peer_not_reading_gets_no_pongs_and_is_not_read():
    """While the socket's write buffer is over its high-water mark (the transport
    paused us) CRLF pings get no pong and reading from the peer is paused;
    once it drains, pongs and reading resume."""
    board, core, clock, factory = recording()
    proto, transport = connect(factory)
    assert transport.producer is proto  # the socket tells us about its buffer
    proto.pauseProducing()
    assert transport.producerState == "paused"
    proto.dataReceived(b"\r\n\r\n" * 1000)
    assert transport.value() == b""
    proto.resumeProducing()
    assert transport.producerState == "producing"
    proto.dataReceived(b"\r\n\r\n")
    assert transport.value() == b"\r\n"


def test_write_buffer_cap_aborts_and_counts():
    """Messages written while the peer is not reading are bounded by
    connections.max_write_buffer: past it the connection is aborted and counted."""
    board, core, clock, factory = recording(max_write_buffer=100_000)
    proto, transport = connect(factory)
    proto.dataReceived(OPTIONS)
    proto.pauseProducing()
    message = b"M" * 10_000
    for _ in range(10):
        proto.send_message(message)
    assert not transport.disconnected
    proto.send_message(message)
    assert transport.disconnected
    assert board.stats["connections_closed_write_buffer"] == 1


def test_write_buffer_not_draining_aborts_after_send_timeout():
    """A connection whose write buffer does not drain for connections.send_timeout
    is aborted; one that drains in time is kept."""
    board, core, clock, factory = recording(send_timeout=10)
    proto, transport = connect(factory)
    proto.dataReceived(OPTIONS)
    proto.pauseProducing()
    clock.advance(9)
    proto.resumeProducing()
    clock.advance(5)
    assert not transport.disconnected
    proto.pauseProducing()
    clock.advance(10)
    assert transport.disconnected
    assert board.stats["connections_closed_send_timeout"] == 1


def test_queue_before_connect_is_capped():
    """Messages for an outgoing connection not yet up are queued only up to
    connections.max_write_buffer; the rest are dropped and counted."""
    board, core, clock, factory = recording(max_write_buffer=100_000)
    conn = SipStreamProtocol(board, TCP, IDLE, 65535, peer_host="127.0.0.1", peer_port=5080)
    conn.register()
    for _ in range(20):
        conn.send_message(b"M" * 10_000)
    assert board.stats["connections_queue_overflow"] == 10
    transport = peer_transport(port=5080)
    conn.makeConnection(transport)
    assert len(transport.value()) == 100_000
