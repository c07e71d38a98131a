"""SIP over WebSocket and secure WebSocket (RFC 7118), on the sans-IO wsproto.

The handshake must offer the ``sip`` subprotocol and the answer names it
(``Sec-WebSocket-Protocol: sip``); clients that do not offer it are refused
with 400. Each WebSocket message carries exactly one SIP message, so no
Content-Length framing is needed (RFC 7118 section 5).
"""

from twisted.internet.protocol import Factory
from sipdisp.logs import Logger
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection, BytesMessage, CloseConnection, Message, Ping, RejectConnection,
    Request, TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .stream import SipConnection

log = Logger()

SUBPROTOCOL = "sip"


class SipWebSocketProtocol(SipConnection):
    """One browser (JsSIP, SIP.js) connection."""

    def __init__(self, *args, proto="ws", **kwargs):
        super().__init__(*args, **kwargs)
        self.proto = proto
        self.ws = WSConnection(ConnectionType.SERVER)
        self._parts = []
        self._size = 0

    def connection_up(self):
        """stream_up() only after the handshake."""

    def dataReceived(self, data):
        if self.proven:
            self.resetTimeout()
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                self._on_event(event)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            log.info("WebSocket protocol error from {host}:{port}: {exc}",
                     host=self.peer_host, port=self.peer_port, exc=exc)
            self.close()

    def _on_event(self, event):
        if isinstance(event, Request):
            if SUBPROTOCOL in event.subprotocols:
                self.transport.write(self.ws.send(AcceptConnection(subprotocol=SUBPROTOCOL)))
                self.stream_up()
            else:
                log.info("refusing WebSocket from {host}:{port}: no 'sip' subprotocol",
                         host=self.peer_host, port=self.peer_port)
                self.transport.write(self.ws.send(RejectConnection(status_code=400)))
                self.close()
        elif isinstance(event, Message):
            data = event.data.encode("utf-8") if isinstance(event, TextMessage) else event.data
            self._size += len(data)
            if self._size > self.max_size:
                log.info("WebSocket message too large from {host}:{port}",
                         host=self.peer_host, port=self.peer_port)
                self.close()
                return
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
        elif isinstance(event, Ping):
            # no pong for a peer that is not reading them (the pings stay
            # unread in the kernel meanwhile: reading is paused)
            if not self.write_blocked:
                self.transport.write(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            try:
                self.transport.write(self.ws.send(event.response()))
            except LocalProtocolError:
                pass
            self.close()

    def write_message(self, data):
        """Send one SIP message as a text frame (binary if it is not UTF-8)."""
        try:
            frame = TextMessage(data=data.decode("utf-8"))
        except UnicodeDecodeError:
            frame = BytesMessage(data=data)
        self.write_bytes(self.ws.send(frame))


class SipWebSocketFactory(Factory):
    """Builds SipWebSocketProtocol for one WS or WSS listener."""

    def __init__(self, switchboard, listener, idle_timeout, max_size):
        self.switchboard = switchboard
        self.listener = listener
        self.idle_timeout = idle_timeout
        self.max_size = max_size

    def buildProtocol(self, addr):
        return SipWebSocketProtocol(self.switchboard, self.listener, self.idle_timeout,
                                    self.max_size, proto=self.listener.proto)
