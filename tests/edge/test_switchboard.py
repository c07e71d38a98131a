"""The Switchboard against Twisted's fakes: one timer re-armed to the core's
next deadline, sends over UDP ports, connections and the connector."""

import errno

from sipdisp.proxy.target import Listener, Target
from sipdisp.transport.edge import ConnectionLimits, Switchboard
from sipdisp.transport.udp import SipDatagramProtocol
from sipdisp.sip import parse_message
from tests.edge.fakes import (
    FakeDatagramPort, RecordingCore, ResolvingClock, real_stack,
)
from tests.support.sipmsg import request

UDP = Listener(1, "udp", "127.0.0.1", 5060)
SOURCE = Target("udp", "127.0.0.1", 5070, None, UDP)


def board(deadlines=(), **kw):
    """A Switchboard on a RecordingCore with ``deadlines``, a clock and one fake UDP port."""
    core = RecordingCore()
    core.deadlines = list(deadlines)
    clock = ResolvingClock(kw.pop("names", None))
    sb = Switchboard(core, clock, **kw)
    port = FakeDatagramPort()
    sb.udp_ports[UDP.id] = port
    return sb, core, clock, port


class FakeConn:
    """A stream connection as the switchboard sees it."""

    def __init__(self, proto="tcp", host="127.0.0.1", port=40000, listener=None,
                 outgoing=False):
        self.proto, self.peer_host, self.peer_port = proto, host, port
        self.listener = listener
        self.outgoing = outgoing
        self.sent = []
        self.conn_id = None

    def send_message(self, data):
        """Record one message."""
        self.sent.append(data)


def test_no_deadline_arms_no_timer():
    """A message after which the core needs no waking leaves no pending call."""
    sb, core, clock, _ = board()
    sb.receive(b"x", SOURCE)
    assert clock.getDelayedCalls() == []
    assert core.received[0][2] == 0.0  # the clock's now is passed to the core


def test_timer_armed_for_the_core_deadline():
    """The single timer fires on_timers at the core's deadline, not before."""
    sb, core, clock, _ = board([1.5])
    sb.receive(b"x", SOURCE)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(1.4)
    assert core.timer_calls == []
    clock.advance(0.1)
    assert core.timer_calls == [1.5]
    assert clock.getDelayedCalls() == []


def test_earlier_deadline_replaces_the_timer():
    """A new earlier deadline cancels the pending timer and arms one for it."""
    sb, core, clock, _ = board([4.0])
    sb.receive(b"x", SOURCE)
    core.deadlines.append(0.5)
    sb.receive(b"y", SOURCE)
    calls = clock.getDelayedCalls()
    assert len(calls) == 1 and calls[0].getTime() == 0.5
    clock.advance(0.5)
    assert core.timer_calls == [0.5]
    # after firing, the timer is re-armed for the remaining deadline
    calls = clock.getDelayedCalls()
    assert len(calls) == 1 and calls[0].getTime() == 4.0
    clock.advance(3.5)
    assert core.timer_calls == [0.5, 4.0]


def test_later_deadline_keeps_the_timer():
    """A later deadline does not replace an earlier pending timer."""
    sb, core, clock, _ = board([1.0])
    sb.receive(b"x", SOURCE)
    first = clock.getDelayedCalls()[0]
    core.deadlines.append(9.0)
    sb.receive(b"y", SOURCE)
    assert clock.getDelayedCalls() == [first]


def test_overdue_deadline_fires_at_once():
    """A deadline already in the past is handled on the next clock step."""
    sb, core, clock, _ = board()
    clock.advance(10)
    core.deadlines.append(3.0)
    sb.receive(b"x", SOURCE)
    clock.advance(0)
    assert core.timer_calls == [10.0]


def test_timer_output_is_sent():
    """What on_timers returns is sent, over UDP here."""
    sb, core, clock, port = board([1.0])
    core.timer_output = [(b"retransmission", Target("udp", "127.0.0.1", 5080, None, UDP))]
    sb.receive(b"x", SOURCE)
    clock.advance(1.0)
    assert port.written == [(b"retransmission", ("127.0.0.1", 5080))]


def test_stop_cancels_the_timer():
    """stop() leaves no pending call on the reactor."""
    sb, core, clock, _ = board([1.0])
    sb.receive(b"x", SOURCE)
    sb.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(2)
    assert core.timer_calls == []


def test_udp_send_uses_the_listener_port():
    """A UDP target goes out of the port of its listener, among several."""
    sb, core, clock, port = board()
    other_listener = Listener(2, "udp", "127.0.0.1", 5070)
    other = FakeDatagramPort(port=5070)
    sb.udp_ports[other_listener.id] = other
    sb.send(b"a", Target("udp", "127.0.0.1", 9, None, other_listener))
    sb.send(b"b", Target("udp", "127.0.0.1", 9, None, UDP))
    assert other.written == [(b"a", ("127.0.0.1", 9))]
    assert port.written == [(b"b", ("127.0.0.1", 9))]


def test_udp_send_error_is_counted_not_raised():
    """A failing UDP write is counted in send_errors and does not escape."""
    sb, core, clock, port = board()
    port.error = OSError(errno.EMSGSIZE, "Message too long")
    sb.send_all([(b"x" * 10, Target("udp", "127.0.0.1", 9, None, UDP))])
    assert sb.send_errors == 1


def test_host_names_are_resolved_before_sending():
    """A target named by host name is resolved, then sent to the address."""
    sb, core, clock, port = board(names={"fs1.example.test": "127.0.0.9"})
    sb.send(b"x", Target("udp", "fs1.example.test", 5080, None, UDP))
    assert port.written == [(b"x", ("127.0.0.9", 5080))]


def test_send_to_connection_by_id_and_by_address():
    """Stream targets go to the connection named by id, else the one to that address."""
    sb, core, clock, _ = board()
    a, b = FakeConn(port=1), FakeConn(port=2)
    a.conn_id, b.conn_id = sb.add_connection(a), sb.add_connection(b)
    sb.send(b"by-id", Target("tcp", "127.0.0.1", 9999, b.conn_id))
    sb.send(b"by-addr", Target("tcp", "127.0.0.1", 1))
    assert b.sent == [b"by-id"] and a.sent == [b"by-addr"]


def test_unknown_stream_target_uses_the_connector():
    """A TCP/TLS target with no connection is handed to the connector; WS is dropped."""
    sb, core, clock, _ = board()
    opened = []
    sb.connector = lambda target, data: opened.append((target, data))
    sb.send(b"x", Target("tls", "127.0.0.1", 5061))
    assert opened == [(Target("tls", "127.0.0.1", 5061), b"x")]
    sb.send(b"y", Target("ws", "127.0.0.1", 5062, conn=77))
    assert sb.send_errors == 1 and len(opened) == 1


def test_connection_table_and_flow_target():
    """flow_target names a live connection and None once it is removed."""
    sb, core, clock, _ = board(max_connections=1)
    conn = FakeConn("ws", listener="L")
    conn.conn_id = sb.add_connection(conn)
    assert core.flows.target(conn.conn_id) == Target("ws", "127.0.0.1", 40000, conn.conn_id)
    assert not sb.can_accept()
    sb.remove_connection(conn)
    assert sb.connections == {} and sb._by_addr == {}
    assert sb.flow_target(conn.conn_id) is None
    assert sb.can_accept()


def test_incoming_and_outgoing_connections_have_separate_limits():
    """Incoming connections count against connections.max, outgoing ones against
    connections.max_outgoing, so a full incoming table still lets the proxy connect out."""
    sb, core, clock, _ = board(max_connections=2, limits=ConnectionLimits(max_outgoing=1))
    for port in (1, 2):
        conn = FakeConn(port=port)
        conn.conn_id = sb.add_connection(conn)
    assert not sb.can_accept() and sb.can_connect()
    assert not sb.admit("127.0.0.1", 3)
    assert sb.stats["connections_refused_max"] == 1
    out = FakeConn(port=5080, outgoing=True)
    out.conn_id = sb.add_connection(out)
    assert not sb.can_connect()
    sb.remove_connection(out)
    sb.remove_connection(out)  # twice (connect failure, then connectionLost): counted once
    assert (sb.incoming, sb.outgoing) == (2, 0)


def test_per_source_count_follows_the_table():
    """admit() refuses past connections.max_per_source per address and frees the
    slot when a connection from that address leaves; 0 disables the limit."""
    sb, core, clock, _ = board(limits=ConnectionLimits(max_per_source=1))
    conn = FakeConn(host="127.0.0.5")
    conn.conn_id = sb.add_connection(conn)
    assert not sb.admit("127.0.0.5", 2)
    assert sb.admit("127.0.0.6", 2)
    sb.remove_connection(conn)
    assert sb.admit("127.0.0.5", 2) and sb._per_source == {}
    unlimited, *_ = board(limits=ConnectionLimits(max_per_source=0))
    for port in range(100):
        conn = FakeConn(port=port)
        conn.conn_id = unlimited.add_connection(conn)
    assert unlimited.admit("127.0.0.1", 101)


def test_invite_retransmitted_on_timer_a_until_branch_timeout_408():
    """With the real core, a UDP INVITE is retransmitted at 0.5 s and 1.5 s
    (timer A doubling) and the caller gets 408 at the 2 s branch timeout."""
    sb, listeners, clock = real_stack(protos=("udp",))
    port = sb.udp_ports[listeners["udp"].id]
    proto = SipDatagramProtocol(sb, listeners["udp"])
    proto.datagramReceived(request("INVITE", "sip:bob@127.0.0.1:5060", via_port=5070),
                           ("127.0.0.1", 5070))

    def sent_to(port_no):
        """Messages written to 127.0.0.1:``port_no``, parsed."""
        return [parse_message(d) for d, addr in port.written if addr[1] == port_no]

    assert [m.status for m in sent_to(5070)] == [100]
    assert len(sent_to(5080)) == 1
    clock.advance(0.5)
    assert len(sent_to(5080)) == 2
    clock.advance(0.9)
    assert len(sent_to(5080)) == 2
    clock.advance(0.1)
    assert len(sent_to(5080)) == 3
    clock.advance(0.5)
    assert [m.status for m in sent_to(5070)] == [100, 408]
    assert all(m.method == "INVITE" for m in sent_to(5080))
