"""Per-connection and per-source message rates and the header-section and
Content-Length caps of SipStreamProtocol, against StringTransport and
task.Clock (issue 17 item 2)."""

from tests.edge.fakes import peer_transport
from tests.edge.test_stream import OPTIONS, connect, frames, recording


def burst(proto, n, data=OPTIONS):
    """Feed ``n`` copies of ``data`` in one segment."""
    proto.dataReceived(data * n)


def test_connection_over_its_message_rate_is_aborted_and_counted():
    """At connections.max_messages_per_second = 20, 20 messages in one instant
    reach the core, the 21st aborts the connection and the rest are not read."""
    board, core, clock, factory = recording(max_messages_per_second=20,
                                            max_messages_per_source=0)
    proto, transport = connect(factory)
    burst(proto, 30)
    assert len(frames(core)) == 20
    assert transport.disconnected
    assert board.stats["connections_closed_message_rate"] == 1


def test_a_client_within_its_rate_is_never_cut():
    """Ten messages a second for five seconds at a 20/s limit all arrive."""
    board, core, clock, factory = recording(max_messages_per_second=20)
    proto, transport = connect(factory)
    for _ in range(5):
        burst(proto, 10)
        clock.advance(1.0)
    assert len(frames(core)) == 50
    assert not transport.disconnected


def test_source_rate_spans_its_connections_and_spares_other_sources():
    """connections.max_messages_per_source = 30 over three connections from one
    address: the 31st message closes the connection carrying it; another
    address still gets its own budget."""
    board, core, clock, factory = recording(max_messages_per_second=0,
                                            max_messages_per_source=30)
    conns = [connect(factory, port) for port in (40001, 40002, 40003)]
    for proto, _ in conns:
        burst(proto, 10)
    assert len(frames(core)) == 30
    last, last_transport = conns[-1]
    burst(last, 1)
    assert last_transport.disconnected
    assert not conns[0][1].disconnected
    assert board.stats["connections_closed_source_rate"] == 1
    other = factory.buildProtocol(None)
    other_transport = peer_transport(host="127.0.0.2", port=40009)
    other.makeConnection(other_transport)
    burst(other, 10)
    assert len(frames(core)) == 40 and not other_transport.disconnected


def test_source_budget_is_forgotten_with_its_last_connection():
    """The per-source bucket lives while the address has a connection open."""
    board, core, clock, factory = recording(max_messages_per_source=30)
    proto, transport = connect(factory)
    burst(proto, 5)
    assert "127.0.0.1" in board._source_rates
    proto.connectionLost(None)
    assert board._source_rates == {}


def test_answered_keepalives_count_against_the_rate():
    """A flood of CRLF pings past the rate closes the connection (each pong is a write)."""
    board, core, clock, factory = recording(max_messages_per_second=50)
    proto, transport = connect(factory)
    proto.dataReceived(b"\r\n\r\n" * 80)
    assert transport.value() == b"\r\n" * 50
    assert transport.disconnected


def test_outgoing_connections_are_not_rate_limited():
    """A next hop we connected to may send faster than the incoming limits."""
    from sipdisp.transport.stream import SipStreamProtocol
    from tests.edge.test_stream import IDLE, TCP
    board, core, clock, factory = recording(max_messages_per_second=5,
                                            max_messages_per_source=5)
    out = SipStreamProtocol(board, TCP, IDLE, 65535, peer_host="127.0.0.1", peer_port=5080)
    transport = peer_transport(port=5080)
    out.makeConnection(transport)
    burst(out, 20)
    assert len(frames(core)) == 20 and not transport.disconnected


def test_header_section_past_its_cap_is_answered_513_and_closed():
    """A header section longer than connections.max_header_size, trickled, is
    rejected as soon as the cap is passed: the core answers it, the connection
    closes, and the close is counted."""
    board, core, clock, factory = recording(max_header_size=2048)
    proto, transport = connect(factory)
    header = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nX-Pad: " + b"a" * 4000
    for i in range(0, len(header), 100):
        proto.dataReceived(header[i:i + 100])
        if core.rejected:
            break
    assert i < 2100
    (exc, _), = core.rejected
    assert (exc.status, exc.reason) == (513, "Header Section Too Large")
    assert transport.disconnecting
    assert board.stats["connections_closed_message_size"] == 1


def test_two_gigabyte_content_length_closes_before_the_body():
    """A message announcing a 2 GB body is refused when its header ends; the body
    that follows is never buffered."""
    board, core, clock, factory = recording()
    proto, transport = connect(factory)
    head = OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 2000000000")
    assert head != OPTIONS
    proto.dataReceived(head)
    (exc, _), = core.rejected
    assert exc.status == 513
    proto.dataReceived(b"x" * 1_000_000)
    assert proto.framer.buffered < 70000
    assert transport.disconnecting
