"""Stream connection limits of a twistd-started sipdisp against attackers on
real loopback sockets (issue #10, defects 3 and 4): a flood of idle clients
must not lock the proxy out of its TCP next hop, one address gets at most
connections.max_per_source connections, a client trickling its first header
is closed at connections.first_message_timeout, and a peer that never reads
cannot make the proxy buffer without bound.

Each attack is bounded in bytes and seconds; the memory checks read the
proxy's VmRSS from /proc."""

import select
import socket
import threading
import time

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, Request, TextMessage

from tests.support.peers import StreamEndpoint, UdpEndpoint, options
from tests.integration.test_security_load import metric
from tests.support.processes import Sipdisp, Sipp, free_port, rss_kib, sipp_available

def connect_from(port, source="127.0.0.1", rcvbuf=None):
    """A TCP socket to 127.0.0.1:``port`` from address ``source``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect, so the window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    return sock


def closed_by_peer(sock, timeout):
    """True if the peer closes ``sock`` (EOF or reset) within ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def options_answered(sock, port, timeout=3.0):
    """Send OPTIONS on connected ``sock``; True if a 200 comes back."""
    local = sock.getsockname()
    ep = StreamEndpoint(sock)
    try:
        ep.send(options(f"sip:127.0.0.1:{port};transport=tcp", "TCP",
                        f"{local[0]}:{local[1]}").encode())
        return ep.recv(timeout).status == 200
    except (AssertionError, OSError):
        return False


def flood(sock, chunk, total, seconds):
    """Write ``chunk`` repeatedly on ``sock`` (never reading) until ``total``
    bytes, ``seconds`` or the peer closes; returns (bytes sent, closed by peer)."""
    sock.setblocking(False)
    view, sent, deadline = memoryview(chunk), 0, time.monotonic() + seconds
    offset = 0
    while sent < total and time.monotonic() < deadline:
        try:
            n = sock.send(view[offset:])
        except BlockingIOError:
            time.sleep(0.005)
            continue
        except (ConnectionResetError, BrokenPipeError):
            return sent, True
        sent += n
        offset = (offset + n) % len(chunk)
    return sent, False


@pytest.fixture
def sipdisp_with(tmp_path):
    """Start sipdisp with a ``connections`` section (and extra config); stops it after."""
    started = []

    def start(connections, **extra):
        proxy = Sipdisp(tmp_path, {"connections": connections, **extra}).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


class SilentNextHop:
    """A TCP next hop that accepts connections and records what arrives on
    them; with ``read=False`` it never reads (a stuck FreeSWITCH)."""

    def __init__(self, read=True):
        self.sock = socket.socket()
        if not read:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.read = read
        self.received = b""
        self.conns = []
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.conns.append(conn)
            if self.read:
                threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        conn.settimeout(0.1)
        while not self._stop:
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            self.received += data

    def close(self):
        self._stop = True
        for s in [self.sock, *self.conns]:
            s.close()


def message_request(proxy_port, n, body_size=0):
    """An out-of-dialog MESSAGE from a UDP client, for the next hop."""
    body = b"x" * body_size
    return (f"MESSAGE sip:bob@127.0.0.1:{proxy_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKlim{n}x{time.monotonic_ns()}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:alice@sipdisp.test>;tag=lim{n}\r\n"
            "To: <sip:bob@sipdisp.test>\r\n"
            f"Call-ID: lim-{n}-{time.monotonic_ns()}@sipdisp.test\r\n"
            "CSeq: 1 MESSAGE\r\n"
            "Content-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def test_incoming_flood_does_not_lock_out_the_tcp_next_hop(sipdisp_with):
    """With connections.max idle clients connected (and more refused), the
    proxy still opens its own connection to a TCP next hop: incoming and
    outgoing connections have separate limits."""
    hop = SilentNextHop()
    proxy = sipdisp_with({"max": 20, "max_per_source": 0},
                         proxy={"next_hop": f"sip:127.0.0.1:{hop.port};transport=tcp"})
    port = proxy.port("tcp")
    idle = [connect_from(port) for _ in range(25)]
    try:
        time.sleep(0.3)
        refused = [s for s in idle if closed_by_peer(s, 0.05)]
        assert len(refused) == 5  # the flood did fill the incoming table
        udp = UdpEndpoint()
        try:
            udp.send(message_request(proxy.port("udp"), 1), proxy.port("udp"))
            deadline = time.monotonic() + 5
            while b"MESSAGE sip:bob@" not in hop.received and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            udp.close()
        assert b"MESSAGE sip:bob@" in hop.received
        assert "incoming connection limit (connections.max = 20) reached" in proxy.log_text()
    finally:
        for s in idle:
            s.close()
        hop.close()


def test_per_source_limit_spares_other_addresses(sipdisp_with):
    """Past connections.max_per_source from 127.0.0.1 a connection is refused
    at accept, while a client at 127.0.0.2 still connects and is served."""
    proxy = sipdisp_with({"max_per_source": 4})
    port = proxy.port("tcp")
    held = [connect_from(port) for _ in range(4)]
    try:
        extra = connect_from(port)
        held.append(extra)
        assert closed_by_peer(extra, 2.0)
        other = connect_from(port, source="127.0.0.2")
        held.append(other)
        assert options_answered(other, port)
        log = proxy.log_text()
        assert log.count("(connections.max_per_source)") == 1
    finally:
        for s in held:
            s.close()


def test_trickling_client_closed_at_first_message_deadline(sipdisp_with):
    """A client sending one byte every 0.2 s and never completing its header is
    closed at connections.first_message_timeout (the old code kept it for the
    whole idle timeout, each byte restarting it)."""
    proxy = sipdisp_with({"first_message_timeout": 1.5})
    sock = connect_from(proxy.port("tcp"))
    started = time.monotonic()
    closed = False
    try:
        for byte in b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1\r\n":
            try:
                sock.send(bytes([byte]))
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
            if closed_by_peer(sock, 0.2):
                closed = True
                break
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    assert closed, "trickling client still connected after ~13 s"
    assert 1.3 < elapsed < 4.0
    assert "connections.first_message_timeout" in proxy.log_text()


# -- a peer that never reads ---------------------------------------------------------
FLOOD_BYTES = 40 * 1024 * 1024
FLOOD_SECONDS = 6.0
# the old code grew by about 2 bytes of RSS per byte of CRLF flood (issue #10:
# 100 MB -> 203 MB), so 40 MB would cost it some 80 MB
RSS_GROWTH_LIMIT_KIB = 16 * 1024


def _non_reading_flood(proxy, sock, chunk):
    before = rss_kib(proxy.proc.pid)
    sent, closed = flood(sock, chunk, FLOOD_BYTES, FLOOD_SECONDS)
    after = rss_kib(proxy.proc.pid)
    closed = closed or closed_by_peer(sock, 3.0)
    return sent, closed, after - before


def test_crlf_flood_from_a_non_reader_is_bounded(sipdisp_with):
    """CRLF pings from a client that never reads stop being read and answered
    once the write buffer is full; the connection is aborted after
    connections.send_timeout and the proxy's memory stays bounded (the message
    rates, which would cut this flood sooner, are off to reach that path)."""
    proxy = sipdisp_with({"send_timeout": 2, "max_messages_per_second": 0,
                          "max_messages_per_source": 0})
    port = proxy.port("tcp")
    sock = connect_from(port, rcvbuf=4096)
    try:
        assert options_answered(sock, port)  # a real client first
        sent, closed, growth = _non_reading_flood(proxy, sock, b"\r\n\r\n" * 16384)
    finally:
        sock.close()
    assert closed
    assert growth < RSS_GROWTH_LIMIT_KIB, f"RSS grew {growth} KiB after {sent} bytes"
    assert "connections.send_timeout" in proxy.log_text()


def test_options_flood_from_a_non_reader_is_bounded(sipdisp_with):
    """OPTIONS from a client that never reads its 200s: reading stops at the
    high-water mark, the connection is aborted and memory stays bounded (message
    rates off, as above)."""
    proxy = sipdisp_with({"send_timeout": 2, "max_messages_per_second": 0,
                          "max_messages_per_source": 0})
    port = proxy.port("tcp")
    sock = connect_from(port, rcvbuf=4096)
    try:
        local = sock.getsockname()
        one = options(f"sip:127.0.0.1:{port};transport=tcp", "TCP",
                      f"127.0.0.1:{local[1]}").encode()
        sent, closed, growth = _non_reading_flood(proxy, sock, one * 200)
    finally:
        sock.close()
    assert closed
    assert growth < RSS_GROWTH_LIMIT_KIB, f"RSS grew {growth} KiB after {sent} bytes"


def test_websocket_ping_flood_from_a_non_reader_is_bounded(sipdisp_with):
    """WebSocket pings from a client that never reads its pongs: no pong is
    queued past the high-water mark, the connection is aborted, memory bounded."""
    proxy = sipdisp_with({"send_timeout": 2})
    port = proxy.port("ws")
    sock = connect_from(port, rcvbuf=4096)
    ws = WSConnection(ConnectionType.CLIENT)
    try:
        sock.sendall(ws.send(Request(host="127.0.0.1", target="/", subprotocols=["sip"])))
        ws.receive_data(sock.recv(65536))
        assert any(isinstance(e, AcceptConnection) for e in ws.events())
        sock.sendall(ws.send(TextMessage(
            data=options(f"sip:127.0.0.1:{port};transport=ws", "WS", "a.invalid"))))
        # each pong echoes the 100-byte payload, so the answers outgrow the
        # kernel's socket buffers within the bounded flood
        pings = b"".join(ws.send(Ping(payload=b"p" * 100)) for _ in range(1024))
        sent, closed, growth = _non_reading_flood(proxy, sock, pings)
    finally:
        sock.close()
    assert closed
    assert growth < RSS_GROWTH_LIMIT_KIB, f"RSS grew {growth} KiB after {sent} bytes"


def test_next_hop_that_never_reads_hits_the_write_buffer_cap(sipdisp_with):
    """Requests relayed to a TCP next hop that accepts but never reads pile up
    in the proxy's write buffer only up to connections.max_write_buffer; then
    the connection is aborted and counted."""
    hop = SilentNextHop(read=False)
    proxy = sipdisp_with({"max_write_buffer": 262144, "send_timeout": 60},
                         proxy={"next_hop": f"sip:127.0.0.1:{hop.port};transport=tcp"})
    udp = UdpEndpoint()
    try:
        deadline = time.monotonic() + 15
        n = 0
        while "connections.max_write_buffer" not in proxy.log_text():
            assert time.monotonic() < deadline, "write buffer cap never tripped"
            for _ in range(20):
                n += 1
                udp.send(message_request(proxy.port("udp"), n, body_size=30000),
                         proxy.port("udp"))
            time.sleep(0.05)
    finally:
        udp.close()
        hop.close()
    # the loopback kernel buffers take some first (up to tcp_wmem), then 256 KiB more
    assert n * 30000 < 8 * 1024 * 1024


# -- issue 17 item 2: connection floods while calls go on ------------------------------------
# 2,000 idle clients and 500 slowloris clients come from 127.0.0.10-59 (50 each,
# under connections.max_per_source), against first_message_timeout 3 s.
ATTACK_SOURCES = [f"127.0.0.{n}" for n in range(10, 60)]


def open_many(port, count, sources):
    """``count`` TCP connections to 127.0.0.1:``port``, spread evenly over ``sources``."""
    socks = []
    for i in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((sources[i % len(sources)], 0))
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        socks.append(sock)
    return socks


def still_open(socks):
    """The sockets the peer has not closed (no EOF, no reset) yet."""
    poller = select.poll()  # select() stops at descriptor 1023
    by_fd = {sock.fileno(): sock for sock in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    gone = set()
    for fd, _ in poller.poll(0):
        sock = by_fd[fd]
        try:
            sock.setblocking(False)
            if not sock.recv(4096):
                gone.add(sock)
        except BlockingIOError:
            pass
        except OSError:
            gone.add(sock)
    return [s for s in socks if s not in gone]


def calls_in_background(tmp_path, proxy, uas_port, seconds):
    """SIPp: a UAS next hop on ``uas_port`` and a UAC placing 10 calls/s for
    ``seconds`` through the proxy."""
    uas = Sipp(tmp_path, "uas", "uas.xml", uas_port, "u1").start()
    uac = Sipp(tmp_path, "uac", "uac.xml", free_port(), "u1",
               target=f"127.0.0.1:{proxy.port('udp')}",
               extra=["-r", 10, "-d", 500, "-m", 10 * seconds, "-timeout", seconds + 30,
                      "-timeout_error"]).start()
    return uas, uac


@pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed (apt-get install "
                    "sip-tester); .ci/run installs it")
def test_idle_and_slowloris_floods_are_cut_while_calls_flow(sipdisp_with, tmp_path):
    """2,000 idle TCP connections and 500 slowloris connections (a byte a second)
    are all closed by connections.first_message_timeout, RSS stays under 1.5x
    idle meanwhile, and SIPp calls placed throughout all complete."""
    uas_port = free_port()
    proxy = sipdisp_with({"max": 4096, "first_message_timeout": 3},
                         proxy={"next_hop": f"sip:127.0.0.1:{uas_port}"},
                         dispatcher={"list_file": str(tmp_path / "none.list")})
    port = proxy.port("tcp")
    time.sleep(0.5)
    idle_rss = rss_kib(proxy.proc.pid)
    uas, uac = calls_in_background(tmp_path, proxy, uas_port, 12)
    idle = slow = []
    try:
        idle = open_many(port, 2000, ATTACK_SOURCES[:40])
        slow = open_many(port, 500, ATTACK_SOURCES[40:])
        opened = time.monotonic()
        peak = rss_kib(proxy.proc.pid)
        trickle = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1\r\n" * 4
        sent = 0
        # the deadline is 3 s; the slack is for a loaded machine (2 cores, other tests)
        while time.monotonic() - opened < 20 and (still_open(idle) or still_open(slow)):
            for sock in still_open(slow):
                try:
                    sock.send(trickle[sent:sent + 1])
                except OSError:
                    pass
            sent += 1
            peak = max(peak, rss_kib(proxy.proc.pid))
            time.sleep(1.0)
        cut_after = time.monotonic() - opened
        idle_left, slow_left = still_open(idle), still_open(slow)
        uac.wait(60)
    finally:
        for sock in idle + slow:
            sock.close()
        uas.stop()
    assert (len(idle_left), len(slow_left)) == (0, 0)
    assert sent >= 3  # the slowloris clients did trickle before being cut
    assert peak < 1.5 * idle_rss, f"RSS {idle_rss} KiB idle, {peak} KiB under the flood"
    stats = uac.stats()
    assert stats["failed"] == 0 and stats["ok"] == 120, stats
    # every one of them was accepted and then cut by the deadline, none refused
    assert metric(proxy, "sipdisp_core_events_total",
                  event="connections_closed_first_message_timeout") == 2500
    assert metric(proxy, "sipdisp_core_events_total", event="connections_refused_max") == 0
    print(f"RSS {idle_rss} KiB idle, {peak} KiB at most under the flood; "
          f"all cut {cut_after:.1f} s after the last connect")


def test_two_gigabyte_content_length_is_refused_at_once(sipdisp_with):
    """A request announcing a 2 GB body gets 513 and its connection closed as soon
    as its header is in, while its sender keeps pushing body bytes; RSS does not grow."""
    proxy = sipdisp_with({})
    port = proxy.port("tcp")
    sock = connect_from(port)
    try:
        before = rss_kib(proxy.proc.pid)
        local = sock.getsockname()
        head = options(f"sip:127.0.0.1:{port};transport=tcp", "TCP",
                       f"{local[0]}:{local[1]}").replace(
            "Content-Length: 0", "Content-Length: 2000000000").encode()
        assert b"2000000000" in head
        sock.sendall(head)
        sock.settimeout(3)
        answer = sock.recv(65536)
        assert answer.startswith(b"SIP/2.0 513 "), answer[:80]
        sent, closed = flood(sock, b"x" * 65536, 64 * 1024 * 1024, 4.0)
        closed = closed or closed_by_peer(sock, 3.0)
        after = rss_kib(proxy.proc.pid)
    finally:
        sock.close()
    assert closed
    assert after - before < 8 * 1024, f"RSS grew {after - before} KiB"
    assert "connections.max_header_size, sip.max_message_size" in proxy.log_text()


def test_message_rate_closes_a_flooding_connection_and_spares_others(sipdisp_with):
    """A TCP client sending OPTIONS past connections.max_messages_per_second is
    closed and counted, while a polite client from another address is answered."""
    proxy = sipdisp_with({"max_messages_per_second": 50})
    port = proxy.port("tcp")
    loud = connect_from(port)
    polite = connect_from(port, source="127.0.0.3")
    try:
        local = loud.getsockname()
        one = options(f"sip:127.0.0.1:{port};transport=tcp", "TCP",
                      f"{local[0]}:{local[1]}").encode()
        sent, closed = flood(loud, one * 200, len(one) * 2000, 3.0)
        closed = closed or closed_by_peer(loud, 3.0)
        assert closed
        assert options_answered(polite, port)
    finally:
        loud.close()
        polite.close()
    assert "(connections.max_messages_per_second)" in proxy.log_text()
