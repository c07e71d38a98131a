"""SIP over WebSocket and secure WebSocket (RFC 7118), on the sans-IO wsproto.

The handshake must offer the ``sip`` subprotocol and the answer names it
(``Sec-WebSocket-Protocol: sip``); clients that do not offer it are refused
with 400, and a browser page from an origin not allowed
(``websocket.allowed_origins``) with 403. Each WebSocket message carries
exactly one SIP message, so no Content-Length framing is needed (RFC 7118
section 5).

The ``websocket`` section's limits, each counted in ``core.stats`` and
logged when it first trips (then at most once a minute):

* a frame payload above ``max_frame_size`` or a message above
  ``max_message_size`` is answered with a close frame 1009 (message too
  big) as soon as that many bytes arrived: wsproto hands over a frame's
  payload as it arrives, so nothing larger than one read is ever buffered;
* what RFC 6455 calls failing the connection (section 7.1.7): a reserved
  bit or opcode, an unmasked client frame, a fragmented or overlong
  control frame, a continuation out of place get 1002 (protocol error),
  text that is not UTF-8 1007 (invalid frame payload data);
* every ``ping_interval`` the proxy pings; a peer whose pong is not back
  within ``pong_timeout`` is aborted (a dead peer would not read a close).
"""

import itertools
from dataclasses import dataclass, field

from twisted.internet.protocol import Factory
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection, BytesMessage, CloseConnection, Message, Ping, Pong, RejectConnection,
    Request, TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from sipdisp.logs import Logger

from .origins import OriginPolicy
from .stream import SipConnection, _cancel

log = Logger()

SUBPROTOCOL = "sip"

# the counter and the line logged when a close code is first sent for a fault of the peer
_FAULTS = {
    CloseReason.PROTOCOL_ERROR: (
        "websocket_closed_protocol_error",
        "closing WebSocket from {host}:{port} with 1002 (protocol error): {reason}"),
    CloseReason.INVALID_FRAME_PAYLOAD_DATA: (
        "websocket_closed_invalid_payload",
        "closing WebSocket from {host}:{port} with 1007 (invalid payload data): {reason}"),
}


@dataclass
class WebSocketPolicy:
    """The ``websocket`` section as the protocol uses it (the defaults are the
    schema's); ``max_message_size`` None means the listener's
    ``sip.max_message_size``."""

    origins: OriginPolicy = field(default_factory=OriginPolicy)
    ping_interval: float = 30.0
    pong_timeout: float = 20.0
    max_frame_size: int = 65535
    max_message_size: int | None = None

    @classmethod
    def from_config(cls, cfg):
        """The policy of a loaded configuration."""
        ws = cfg.websocket
        return cls(OriginPolicy.from_config(cfg), ws.ping_interval, ws.pong_timeout,
                   ws.max_frame_size, ws.max_message_size)


class SipWebSocketProtocol(SipConnection):
    """One browser (JsSIP, SIP.js) connection."""

    def __init__(self, *args, proto="ws", policy=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.proto = proto
        self.policy = policy or WebSocketPolicy()
        self.max_message = self.policy.max_message_size or self.max_size
        # the key an operator raises, for the log line
        self._message_key = ("websocket.max_message_size" if self.policy.max_message_size
                             else "sip.max_message_size")
        self.ws = WSConnection(ConnectionType.SERVER)
        self._parts = []
        self._size = 0         # bytes of the message being received
        self._frame = 0        # bytes of the frame being received
        self._pings = itertools.count(1)
        self._ping_payload = None
        self._ping_timer = None
        self._pong_timer = None

    def connection_up(self):
        """stream_up() only after the handshake."""

    def stream_up(self):
        """The handshake is done: send what was queued and start pinging."""
        super().stream_up()
        self._schedule_ping()

    def connectionLost(self, reason):
        self._ping_timer = _cancel(self._ping_timer)
        self._pong_timer = _cancel(self._pong_timer)
        super().connectionLost(reason)

    def dataReceived(self, data):
        if self._closing:
            return  # failed or closing: what follows is not read
        if self.proven:
            self.resetTimeout()
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                self._on_event(event)
                if self._closing:
                    return
        except (RemoteProtocolError, LocalProtocolError) as exc:
            # an upgrade request h11 cannot parse (or larger than its 16 KiB)
            self.switchboard.count(
                "websocket_refused_handshake",
                "closing WebSocket connection from {host}:{port}: bad handshake: {exc}",
                host=self.peer_host, port=self.peer_port, exc=exc)
            self.close()

    # -- events --------------------------------------------------------------------
    def _on_event(self, event):
        if isinstance(event, Message):
            self._on_message(event)
        elif isinstance(event, Ping):
            # no pong for a peer that is not reading them (the pings stay
            # unread in the kernel meanwhile: reading is paused)
            if not self.write_blocked:
                self.transport.write(self.ws.send(event.response()))
        elif isinstance(event, Pong):
            if self._ping_payload is not None and event.payload == self._ping_payload:
                self._ping_payload = None
                self._pong_timer = _cancel(self._pong_timer)
                self._schedule_ping()
        elif isinstance(event, CloseConnection):
            self._on_close(event)
        elif isinstance(event, Request):
            self._on_request(event)

    def _on_request(self, event):
        origins = [value.decode("latin-1") for name, value in event.extra_headers
                   if name.lower() == b"origin"]
        if not self.policy.origins.allows(origins):
            self.switchboard.count(
                "websocket_refused_origin",
                "refusing WebSocket from {host}:{port} with 403: Origin {origin} not in "
                "websocket.allowed_origins", host=self.peer_host, port=self.peer_port,
                origin=", ".join(origins) or "(none; websocket.allow_missing_origin is false)")
            self._reject(403)
        elif SUBPROTOCOL not in event.subprotocols:
            self.switchboard.count(
                "websocket_refused_subprotocol",
                "refusing WebSocket from {host}:{port} with 400: no 'sip' subprotocol",
                host=self.peer_host, port=self.peer_port)
            self._reject(400)
        else:
            self.transport.write(self.ws.send(AcceptConnection(subprotocol=SUBPROTOCOL)))
            self.stream_up()

    def _reject(self, status):
        self.transport.write(self.ws.send(RejectConnection(status_code=status)))
        self.close()

    def _on_message(self, event):
        data = event.data.encode("utf-8") if isinstance(event, TextMessage) else event.data
        size = len(data)
        self._frame += size
        self._size += size
        policy = self.policy
        if self._frame > policy.max_frame_size:
            self._fail(CloseReason.MESSAGE_TOO_BIG, "websocket_closed_frame_too_big",
                       "closing WebSocket from {host}:{port} with 1009: a frame of more than "
                       "{max} bytes (websocket.max_frame_size)", max=policy.max_frame_size)
            return
        if self._size > self.max_message:
            self._fail(CloseReason.MESSAGE_TOO_BIG, "websocket_closed_message_too_big",
                       "closing WebSocket from {host}:{port} with 1009: a message of more than "
                       "{max} bytes ({setting})", max=self.max_message, setting=self._message_key)
            return
        if event.frame_finished:
            self._frame = 0
        self._parts.append(data)
        if event.message_finished:
            message = b"".join(self._parts)
            self._parts = []
            self._size = 0
            if message.strip():
                try:
                    self.deliver(message)
                except Exception:
                    log.failure("dropping WebSocket message from {host}:{port}",
                                host=self.peer_host, port=self.peer_port)

    def _on_close(self, event):
        if self.ws.state is ConnectionState.REMOTE_CLOSING:
            # the peer's close frame: answer it (RFC 6455 5.5.1), then close
            try:
                self.transport.write(self.ws.send(event.response()))
            except LocalProtocolError:
                pass
            self.close()
            return
        # wsproto reports frames it cannot parse as a close event of its own
        # while the connection is still open: we fail the connection with it
        name, fmt = _FAULTS.get(event.code, _FAULTS[CloseReason.PROTOCOL_ERROR])
        self._fail(event.code, name, fmt, reason=event.reason)

    def _fail(self, code, counter, fmt, **kw):
        """Count and log a fault of the peer, send a close frame with ``code``
        and close (RFC 6455 7.1.7: the server closes the TCP connection)."""
        self.switchboard.count(counter, fmt, host=self.peer_host, port=self.peer_port, **kw)
        self._parts = []
        try:
            self.transport.write(self.ws.send(CloseConnection(code=code)))
        except LocalProtocolError:
            pass
        self.close()

    # -- server pings ----------------------------------------------------------------
    def _schedule_ping(self):
        interval = self.policy.ping_interval
        if interval > 0 and not self._closing:
            self._ping_timer = _cancel(self._ping_timer)
            self._ping_timer = self.callLater(interval, self._ping)

    def _ping(self):
        self._ping_timer = None
        if self._closing:
            return
        if self.write_blocked:
            # a peer not reading is connections.send_timeout's: a ping would
            # only add to its buffer
            self._schedule_ping()
            return
        payload = b"sd%d" % next(self._pings)
        try:
            frame = self.ws.send(Ping(payload=payload))
        except LocalProtocolError:
            return
        self._ping_payload = payload
        # straight to the transport: our own pings must not reset the idle
        # timeouts, which are about what the peer sends
        self.transport.write(frame)
        self._pong_timer = self.callLater(self.policy.pong_timeout, self._pong_overdue)

    def _pong_overdue(self):
        self._pong_timer = None
        self.switchboard.count(
            "websocket_closed_pong_timeout",
            "aborting WebSocket to {host}:{port}: no pong within websocket.pong_timeout "
            "({timeout:g} s)", host=self.peer_host, port=self.peer_port,
            timeout=self.policy.pong_timeout)
        self.abort()

    # -- sending ---------------------------------------------------------------------
    def write_message(self, data):
        """Send one SIP message as a text frame (binary if it is not UTF-8)."""
        try:
            frame = TextMessage(data=data.decode("utf-8"))
        except UnicodeDecodeError:
            frame = BytesMessage(data=data)
        self.write_bytes(self.ws.send(frame))


class SipWebSocketFactory(Factory):
    """Builds SipWebSocketProtocol for one WS or WSS listener."""

    def __init__(self, switchboard, listener, idle_timeout, max_size, policy=None):
        self.switchboard = switchboard
        self.listener = listener
        self.idle_timeout = idle_timeout
        self.max_size = max_size
        self.policy = policy or WebSocketPolicy()

    def buildProtocol(self, addr):
        return SipWebSocketProtocol(self.switchboard, self.listener, self.idle_timeout,
                                    self.max_size, proto=self.listener.proto,
                                    policy=self.policy)
