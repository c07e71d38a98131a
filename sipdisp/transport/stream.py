"""SIP over TCP and TLS (RFC 3261 section 18.3): Content-Length framing,
CRLF keep-alives (RFC 5626 section 4.4.1), idle timeout, connection table."""

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.protocol import Factory, Protocol
from sipdisp.logs import Logger
from twisted.protocols.policies import TimeoutMixin

from ..proxy.target import Target
from ..sip.errors import SipParseError
from ..sip.parser import KEEPALIVE, StreamFramer

log = Logger()


class SipConnection(Protocol, TimeoutMixin):
    """What every stream connection shares: its id in the switchboard's
    connection table, its peer, the idle timeout and an outgoing queue used
    until the connection is up."""

    proto = "tcp"

    def __init__(self, switchboard, listener, idle_timeout, max_size,
                 peer_host=None, peer_port=None):
        self.switchboard = switchboard
        self.listener = listener
        self.idle_timeout = idle_timeout
        self.max_size = max_size
        self.peer_host = peer_host
        self.peer_port = peer_port
        self.conn_id = None
        self.connected_at = None
        self._queue = []
        self._up = False

    # -- life cycle ------------------------------------------------------------
    def register(self):
        """Enter the connection table (for outgoing ones before they connect)."""
        if self.conn_id is None:
            self.conn_id = self.switchboard.add_connection(self)

    def connectionMade(self):
        peer = self.transport.getPeer()
        if self.peer_host is None:
            if not self.switchboard.can_accept():
                log.warn("connection limit reached; refusing {host}:{port}",
                         host=peer.host, port=peer.port)
                self.transport.abortConnection()
                return
            self.peer_host, self.peer_port = peer.host, peer.port
        self.register()
        self.setTimeout(self.idle_timeout)
        self.stream_up()

    def stream_up(self):
        """The byte stream is usable (for WebSocket: after the handshake)."""
        self._up = True
        queue, self._queue = self._queue, []
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
        self._up = False
        if self.conn_id is not None:
            self.switchboard.remove_connection(self)

    def callLater(self, period, func):
        """TimeoutMixin's clock. Its default imports the global reactor, so the
        idle timeout ignored the reactor the service was given (and task.Clock
        in tests); use the switchboard's reactor instead."""
        return self.switchboard._reactor.callLater(period, func)

    def timeoutConnection(self):
        log.info("closing idle {proto} connection to {host}:{port}", proto=self.proto,
                 host=self.peer_host, port=self.peer_port)
        self.transport.loseConnection()

    # -- data ----------------------------------------------------------------------
    def send_message(self, data):
        """Send one SIP message (queued until the connection is up)."""
        if self._up:
            self.write_message(data)
        else:
            self._queue.append(data)

    def write_message(self, data):
        """Write one message on the wire."""
        self.transport.write(data)
        self.resetTimeout()

    def source(self):
        """This connection as the source of a received message."""
        return Target(self.proto, self.peer_host, self.peer_port, self.conn_id, self.listener)

    def deliver(self, data):
        """Hand one complete message to the core."""
        self.switchboard.receive(data, self.source())

    def reject(self, exc):
        """Answer an unframeable message if possible, then close (18.3)."""
        self.switchboard.reject(exc, self.source())
        self.transport.loseConnection()


class SipStreamProtocol(SipConnection):
    """SIP over a TCP or TLS byte stream."""

    def __init__(self, *args, proto="tcp", **kwargs):
        super().__init__(*args, **kwargs)
        self.proto = proto
        self.framer = StreamFramer(self.max_size)
        self._rejected = False  # an unframeable message was answered; closing

    def dataReceived(self, data):
        if self._rejected:
            return  # closing after an unframeable message: ignore the rest
        self.resetTimeout()
        while True:
            try:
                frames = self.framer.feed(data)
            except SipParseError as exc:
                self._rejected = True
                self.reject(exc)
                return
            for frame in frames:
                if frame is KEEPALIVE:
                    self.transport.write(b"\r\n")  # RFC 5626 4.4.1 pong
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
