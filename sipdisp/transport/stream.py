"""SIP over TCP and TLS (RFC 3261 section 18.3): Content-Length framing,
CRLF keep-alives (RFC 5626 section 4.4.1), idle and first-message timeouts,
a capped write buffer, connection table."""

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import ProtocolWrapper, TimeoutMixin
from zope.interface import implementer

from sipdisp.logs import Logger

from ..proxy.target import Target
from ..sip.errors import SipParseError
from ..sip.parser import KEEPALIVE, StreamFramer

log = Logger()


def _socket_transport(transport):
    """The transport that owns the socket's write buffer: below TLS
    (TLSMemoryBIOProtocol is a ProtocolWrapper) the TCP connection."""
    while isinstance(transport, ProtocolWrapper):
        transport = transport.transport
    return transport


def write_buffer_size(transport):
    """Bytes written to ``transport`` and not yet taken by the kernel: the
    socket's write buffer (twisted.internet.abstract.FileDescriptor) plus,
    for TLS, cleartext held back until the handshake ends. None for a
    transport that does not say (test fakes)."""
    held = 0
    while isinstance(transport, ProtocolWrapper):
        pending = getattr(transport, "_appSendBuffer", None)
        if pending:
            held += sum(map(len, pending))
        transport = transport.transport
    try:
        return held + len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:
        return None


@implementer(IPushProducer)
def _cancel(call):
    """Cancel a pending reactor call (if any); returns None, the value to keep."""
    if call is not None and call.active():
        call.cancel()
    return None


class SipConnection(Protocol, TimeoutMixin):
    """What every stream connection shares: its id in the switchboard's
    connection table, its peer, the idle timeout and an outgoing queue used
    until the connection is up.

    Limits (``switchboard.limits``, the ``connections`` section):

    * an incoming connection has ``first_message_timeout`` seconds from
      accept to deliver its first complete message (WebSocket: handshake
      included), and until it sent one the core could parse it is closed
      after ``idle_timeout_before_message`` without a complete message; bytes
      alone (a trickled header, CRLF pings) keep only proven connections open;
    * the connection is the streaming producer of its socket transport, so
      the socket tells it when its write buffer passes the high-water mark
      (``bufferSize``, 64 KiB) and when it has drained. Meanwhile it stops
      reading from the peer and answers no keep-alive, so a peer that does
      not read cannot make it buffer; past ``max_write_buffer`` bytes, or
      after ``send_timeout`` seconds without draining, it is aborted.
    """

    proto = "tcp"

    def __init__(self, switchboard, listener, idle_timeout, max_size,
                 peer_host=None, peer_port=None):
        self.switchboard = switchboard
        self.listener = listener
        self.idle_timeout = idle_timeout
        self.max_size = max_size
        self.peer_host = peer_host
        self.peer_port = peer_port
        # we dial outgoing connections: they need no proof of good faith
        self.outgoing = peer_host is not None
        self.proven = self.outgoing  # a message the core could parse was received
        self.conn_id = None
        self.connected_at = None
        self._queue = []
        self._queued_bytes = 0
        self._up = False
        self._closing = False
        self._first_message_timer = None
        self._socket = None          # the transport we are the producer of
        self.write_blocked = False   # its write buffer is above the high-water mark
        self._blocked_bytes = 0      # written since then (an upper bound of the growth)
        self._send_timer = None
        self.rate = None             # TokenBucket of connections.max_messages_per_second

    # -- life cycle ------------------------------------------------------------
    def register(self):
        """Enter the connection table (for outgoing ones before they connect)."""
        if self.conn_id is None:
            self.conn_id = self.switchboard.add_connection(self)

    def connectionMade(self):
        board = self.switchboard
        if not self.outgoing:
            peer = self.transport.getPeer()
            if not board.admit(peer.host, peer.port):
                self._closing = True
                self.transport.abortConnection()
                return
            self.peer_host, self.peer_port = peer.host, peer.port
        self.register()
        self._watch_write_buffer()
        if self.proven:
            self.setTimeout(self.idle_timeout)
        else:
            limits = board.limits
            self.setTimeout(limits.idle_timeout_before_message)
            self._first_message_timer = board._reactor.callLater(
                limits.first_message_timeout, self._first_message_overdue)
        self.connection_up()

    def connection_up(self):
        """The transport is connected (WebSocket waits for its handshake)."""
        self.stream_up()

    def stream_up(self):
        """The byte stream is usable (for WebSocket: after the handshake)."""
        self._up = True
        queue, self._queue = self._queue, []
        self._queued_bytes = 0
        for data in queue:
            self.write_message(data)

    def connectionLost(self, reason):
        # A failed TLS handshake or a peer certificate that does not name the
        # peer (service_identity) used to close the connection without a word,
        # the queued message lost until the branch timed out: say why.
        if reason is not None and reason.check(SSL.Error, VerificationError):
            log.warn("TLS with {host}:{port} failed: {err}", host=self.peer_host,
                     port=self.peer_port, err=reason.getErrorMessage())
        self.setTimeout(None)
        self._cancel_first_message_timer()
        self._cancel_send_timer()
        self._up = False
        self._queue = []
        if self.conn_id is not None:
            self.switchboard.remove_connection(self)

    def close(self):
        """Close after flushing what is written, or at once when the peer is
        not reading (a flush would wait for it forever)."""
        if self._closing:
            return
        self._closing = True
        self._up = False  # what is sent from now on is dropped, not written
        socket = self._socket
        if socket is not None:
            # a registered producer keeps Twisted from finishing the close
            self._socket = None
            socket.unregisterProducer()
        if self.write_blocked:
            self.transport.abortConnection()
            return
        self.transport.loseConnection()
        # a peer that stops reading now would hold the flush (and the socket) forever
        self._cancel_send_timer()
        self._send_timer = self.switchboard._reactor.callLater(
            self.switchboard.limits.send_timeout, self.transport.abortConnection)

    def abort(self):
        """Drop the connection and whatever is still buffered for it."""
        self._closing = True
        self._up = False
        self.transport.abortConnection()

    def callLater(self, period, func):
        """TimeoutMixin's clock. Its default imports the global reactor, so the
        idle timeout ignored the reactor the service was given (and task.Clock
        in tests); use the switchboard's reactor instead."""
        return self.switchboard._reactor.callLater(period, func)

    def timeoutConnection(self):
        if self.proven:
            log.info("closing idle {proto} connection to {host}:{port}", proto=self.proto,
                     host=self.peer_host, port=self.peer_port)
        else:
            self.switchboard.count(
                "connections_closed_idle_before_message",
                "closing {proto} connection from {host}:{port}: no valid SIP message within "
                "connections.idle_timeout_before_message", proto=self.proto,
                host=self.peer_host, port=self.peer_port)
        self.close()

    # -- first message -----------------------------------------------------------
    def _first_message_overdue(self):
        self._first_message_timer = None
        self.switchboard.count(
            "connections_closed_first_message_timeout",
            "closing {proto} connection from {host}:{port}: no complete message within "
            "connections.first_message_timeout", proto=self.proto, host=self.peer_host,
            port=self.peer_port)
        self.abort()

    def _cancel_first_message_timer(self):
        self._first_message_timer = _cancel(self._first_message_timer)

    # -- write buffer ------------------------------------------------------------
    def _watch_write_buffer(self):
        socket = _socket_transport(self.transport)
        if getattr(socket, "producer", None) is not None:
            return  # someone else's producer; keep out of its way
        try:
            socket.registerProducer(self, True)
        except (AttributeError, RuntimeError):
            return
        self._socket = socket

    def pauseProducing(self):
        """The socket's write buffer passed the high-water mark: stop reading
        from a peer that does not read what we send."""
        # Twisted calls this on every write while the buffer is full
        if self.write_blocked:
            return
        self.write_blocked = True
        self._blocked_bytes = 0
        socket = self._socket
        if socket is not None:
            socket.pauseProducing()
            self._send_timer = self.switchboard._reactor.callLater(
                self.switchboard.limits.send_timeout, self._send_timed_out)

    def resumeProducing(self):
        """The socket's write buffer drained: read again."""
        self.write_blocked = False
        self._cancel_send_timer()
        socket = self._socket
        if socket is None:
            return
        if getattr(socket, "disconnecting", False):
            # closed by someone else (service shutdown) while we were paused:
            # a registered producer would keep the drained socket open
            self._socket = None
            socket.unregisterProducer()
            return
        socket.resumeProducing()

    def stopProducing(self):
        """The socket is gone; connectionLost follows."""
        self._socket = None

    def _cancel_send_timer(self):
        self._send_timer = _cancel(self._send_timer)

    def _send_timed_out(self):
        self._send_timer = None
        self.switchboard.count(
            "connections_closed_send_timeout",
            "closing {proto} connection to {host}:{port}: it read nothing we sent for "
            "connections.send_timeout", proto=self.proto, host=self.peer_host,
            port=self.peer_port)
        self.abort()

    def _wrote_while_blocked(self, size):
        """Abort once more than ``max_write_buffer`` bytes wait in the socket's
        buffer. The count written since the buffer filled bounds the real size
        from above, so the exact size is read only when that count passes the cap."""
        self._blocked_bytes += size
        cap = self.switchboard.limits.max_write_buffer
        if self._blocked_bytes <= cap:
            return
        pending = write_buffer_size(self.transport)
        if pending is None:
            pending = self._blocked_bytes
        if pending <= cap:
            self._blocked_bytes = pending
            return
        self.switchboard.count(
            "connections_closed_write_buffer",
            "closing {proto} connection to {host}:{port}: {size} bytes wait to be sent, more "
            "than connections.max_write_buffer", proto=self.proto, host=self.peer_host,
            port=self.peer_port, size=pending)
        self.abort()

    # -- data ----------------------------------------------------------------------
    def send_message(self, data):
        """Send one SIP message (queued until the connection is up)."""
        if self._up:
            self.write_message(data)
            return
        if self._closing:
            return
        size = self._queued_bytes + len(data)
        if size > self.switchboard.limits.max_write_buffer:
            self.switchboard.count(
                "connections_queue_overflow",
                "dropping a message for {proto}:{host}:{port}: more than "
                "connections.max_write_buffer queued before the connection is up",
                proto=self.proto, host=self.peer_host, port=self.peer_port)
            return
        self._queued_bytes = size
        self._queue.append(data)

    def write_bytes(self, data):
        """Write ``data`` and hold the write buffer to its cap."""
        self.transport.write(data)
        if self.write_blocked:
            self._wrote_while_blocked(len(data))
        else:
            self.resetTimeout()

    # on TCP/TLS a message is written as it is (no extra call per message)
    write_message = write_bytes

    def source(self):
        """This connection as the source of a received message."""
        return Target(self.proto, self.peer_host, self.peer_port, self.conn_id, self.listener)

    def over_rate(self):
        """Spend one message of the connection's and its source's rates; when
        either is exceeded, abort the connection and return True."""
        if self.switchboard.message_allowed(self):
            return False
        self.abort()
        return True

    def deliver(self, data):
        """Hand one complete message to the core (unless it exceeds a message rate)."""
        if self._closing or self.over_rate():
            return
        if self.proven:
            self.switchboard.receive(data, self.source())
            return
        # Until the peer proved it speaks SIP: the first complete message meets
        # the first-message deadline, and each one restarts the short idle
        # timeout; one the core parsed promotes the connection to idle_timeout.
        self._cancel_first_message_timer()
        self.resetTimeout()
        stats = self.switchboard.stats
        errors = stats["parse_errors"]
        try:
            self.switchboard.receive(data, self.source())
        finally:
            if stats["parse_errors"] == errors and not self._closing:
                self.proven = True
                self.setTimeout(self.idle_timeout)

    def reject(self, exc):
        """Answer an unframeable message if possible, then close (18.3)."""
        if exc.status == 513:
            # the header section or the announced message is over its cap:
            # closed before the body is read, however large it said it was
            self.switchboard.count(
                "connections_closed_message_size",
                "closing {proto} connection from {host}:{port}: {reason} "
                "(connections.max_header_size, sip.max_message_size)", proto=self.proto,
                host=self.peer_host, port=self.peer_port, reason=exc.reason)
        self.switchboard.reject(exc, self.source())
        self.close()


class SipStreamProtocol(SipConnection):
    """SIP over a TCP or TLS byte stream."""

    def __init__(self, *args, proto="tcp", **kwargs):
        super().__init__(*args, **kwargs)
        self.proto = proto
        self.framer = StreamFramer(self.max_size, self.switchboard.limits.max_header_size)
        self._rejected = False  # an unframeable message was answered; closing

    def dataReceived(self, data):
        if self._rejected:
            return  # closing after an unframeable message: ignore the rest
        if self.proven:
            self.resetTimeout()
        while True:
            try:
                frames = self.framer.feed(data)
            except SipParseError as exc:
                self._rejected = True
                self.reject(exc)
                return
            for frame in frames:
                if self._closing:
                    return  # closed for its message rate: the rest is not read
                if frame is KEEPALIVE:
                    # RFC 5626 4.4.1 pong, unless the peer is not reading them;
                    # a pong costs a write, so answered pings count against the rates
                    if not self.write_blocked:
                        if self.over_rate():
                            return
                        self.transport.write(b"\r\n")
                    continue
                try:
                    self.deliver(frame)
                except Exception:
                    log.failure("dropping message from {host}:{port}", host=self.peer_host,
                                port=self.peer_port)
            # StreamFramer returns the frames completed before an unframeable
            # message and raises for it on the next call: make that call now,
            # or the sender would wait for its 400 until it sent more bytes.
            if not frames or not self.framer.buffered:
                return
            data = b""


class SipStreamFactory(Factory):
    """Builds SipStreamProtocol for one TCP or TLS listener."""

    def __init__(self, switchboard, listener, idle_timeout, max_size):
        self.switchboard = switchboard
        self.listener = listener
        self.idle_timeout = idle_timeout
        self.max_size = max_size

    def buildProtocol(self, addr):
        return SipStreamProtocol(self.switchboard, self.listener, self.idle_timeout,
                                 self.max_size, proto=self.listener.proto)
