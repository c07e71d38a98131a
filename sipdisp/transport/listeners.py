"""Binding the configured listeners, and outgoing TCP/TLS connections."""

import re
import socket

from twisted.internet import ssl
from twisted.internet.error import CannotListenError
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.internet.endpoints import (
    TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol, wrapClientTLS,
)
from sipdisp.config import ConfigError
from sipdisp.logs import Logger

from ..proxy.target import Listener
from .stream import SipStreamFactory, SipStreamProtocol
from .udp import SipDatagramProtocol
from .websocket import SipWebSocketFactory, WebSocketPolicy

log = Logger()

UDP_BUFFER = 4 * 1024 * 1024
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def server_tls_options(certificate, private_key, ca_file=None, require_client=False):
    """CertificateOptions for TLS/WSS listeners from PEM files."""
    with open(certificate, "rb") as f:
        cert_pem = f.read()
    with open(private_key, "rb") as f:
        key_pem = f.read()
    chain = _PEM_CERT.findall(cert_pem)
    private = ssl.PrivateCertificate.loadPEM(chain[0] + b"\n" + key_pem)
    extra = [ssl.Certificate.loadPEM(c).original for c in chain[1:]]
    kwargs = {}
    if require_client and ca_file:
        kwargs = {"verify": True, "caCerts": [c.original for c in _load_certs(ca_file)],
                  "requireCertificate": True}
    elif require_client:
        # without tls.ca_file the requirement used to be dropped silently, so
        # any client got in; verify against the system trust store instead,
        # as tls.ca_file's documentation says for a null value.
        kwargs = {"trustRoot": ssl.platformTrust()}  # implies requireCertificate
    return ssl.CertificateOptions(privateKey=private.privateKey.original,
                                  certificate=private.original,
                                  extraCertChain=extra or None, **kwargs)


def _load_certs(path):
    with open(path, "rb") as f:
        return [ssl.Certificate.loadPEM(c) for c in _PEM_CERT.findall(f.read())]


def client_tls_options(host, ca_file=None, verify=True):
    """Options for outgoing TLS: the peer is verified (service-identity checks
    its name or IP address) unless ``verify`` is off."""
    if not verify:
        return ssl.CertificateOptions()
    trust = ssl.trustRootFromCertificates(_load_certs(ca_file)) if ca_file else None
    return ssl.optionsForClientTLS(host, trustRoot=trust)


def bind_listeners(reactor, switchboard, cfg, tls_options=None, worker_ports=None,
                   handoff=None):
    """Listen on every configured address; returns ``(listeners, ports)``.

    Listener ports are the bound ones, so port 0 in the config works.

    ``worker_ports`` (a worker process of sipdisp/workers: public port ->
    this worker's own port) binds every configured listener with
    SO_REUSEPORT, shared by the workers, and before them a UDP and a TCP
    listener on the worker's own port of each UDP/TCP address. Listeners
    come first in the list, so requests this worker sends leave from its own
    port, and every UDP/TCP listener advertises the worker's own port in Via
    and Record-Route: replies and in-dialog requests come back to it.

    ``handoff`` (transport/handoff.py's Handoff of a worker) is given every
    shared UDP listener: datagrams another worker owns by Call-ID go to it."""
    listeners, ports = [], []
    adv_host = cfg.advertise.host
    adv_port = cfg.advertise.port
    idle = cfg.connections.idle_timeout
    max_size = cfg.sip.max_message_size
    ws_policy = WebSocketPolicy.from_config(cfg)
    next_id = 1
    plan = []  # (proto, host, port, shared, advertised port or None)
    if worker_ports is not None:
        for proto in ("udp", "tcp"):
            for host, port in getattr(cfg.listen, proto):
                plan.append((proto, host, worker_ports(port), False, None))
    for proto in ("udp", "tcp", "tls", "ws", "wss"):
        for host, port in getattr(cfg.listen, proto):
            own = worker_ports(port) if worker_ports and proto in ("udp", "tcp") else None
            plan.append((proto, host, port, worker_ports is not None, own))
    for proto, host, port, shared, own in plan:
        listener = Listener(next_id, proto, host, port, adv_host, adv_port or own)
        next_id += 1
        try:
            if proto == "udp":
                protocol = SipDatagramProtocol(switchboard, listener)
                if shared:
                    bound = _adopt_shared(reactor, proto, host, port, protocol, max_size + 1)
                    if handoff is not None:
                        protocol.handoff = handoff
                        handoff.protocols[listener.id] = protocol
                else:
                    bound = reactor.listenUDP(port, protocol, interface=host,
                                              maxPacketSize=max_size + 1)
                _grow_buffers(bound)
                switchboard.udp_ports[listener.id] = bound
            else:
                if proto in ("tcp", "tls"):
                    factory = SipStreamFactory(switchboard, listener, idle, max_size)
                else:
                    factory = SipWebSocketFactory(switchboard, listener, idle, max_size,
                                                  policy=ws_policy)
                if shared:
                    if proto in ("tls", "wss"):
                        factory = TLSMemoryBIOFactory(tls_options, False, factory)
                    bound = _adopt_shared(reactor, proto, host, port, factory)
                elif proto in ("tls", "wss"):
                    bound = reactor.listenSSL(port, factory, tls_options, interface=host)
                else:
                    bound = reactor.listenTCP(port, factory, interface=host, backlog=128)
        except CannotListenError as exc:
            for done in ports:  # give back what was bound before the one that failed
                done.stopListening()
            raise ConfigError(f"listen.{proto}", f"cannot listen on {host}:{port}: "
                              f"{_socket_reason(exc)}") from None
        listener.port = bound.getHost().port
        if adv_port is None and own is None:
            listener.advertised_port = listener.port
        listener.refresh()
        listeners.append(listener)
        ports.append(bound)
        log.info("listening on {proto}:{host}:{port}{how}", proto=proto, host=host,
                 port=listener.port, how=(" (shared by the workers, SO_REUSEPORT)" if shared
                                          else " (this worker's own)" if worker_ports else ""))
    return listeners, ports


def _adopt_shared(reactor, proto, host, port, protocol, max_packet=None):
    """Bind ``host``:``port`` with SO_REUSEPORT (every worker binds it; the
    kernel spreads datagrams by their 4-tuple and connections over the
    sockets) and hand the socket to the reactor."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.setblocking(False)
        if proto == "udp":
            return reactor.adoptDatagramPort(sock.fileno(), family, protocol, max_packet)
        sock.listen(128)
        return reactor.adoptStreamPort(sock.fileno(), family, protocol)
    except OSError as exc:
        raise CannotListenError(host, port, exc) from None
    finally:
        sock.close()  # the reactor holds its own duplicate of the descriptor


def _socket_reason(exc):
    """``Address already in use`` from a CannotListenError (its socket error's text)."""
    err = getattr(exc, "socketError", None)
    text = getattr(err, "strerror", None) or str(err or exc)
    return text[:1].lower() + text[1:]


def _grow_buffers(port):
    sock = getattr(port, "socket", None)
    if sock is None:
        return
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, UDP_BUFFER)
        except OSError:
            pass


class Connector:
    """Opens outgoing TCP/TLS connections for the switchboard."""

    def __init__(self, reactor, switchboard, cfg):
        self._reactor = reactor
        self.switchboard = switchboard
        self.cfg = cfg

    def __call__(self, target, data):
        cfg = self.cfg
        board = self.switchboard
        if not board.can_connect():
            board.count("connections_refused_max_outgoing",
                        "outgoing connection limit (connections.max_outgoing = {max}) "
                        "reached; not connecting to {proto}:{host}:{port}",
                        max=board.limits.max_outgoing, proto=target.proto, host=target.host,
                        port=target.port)
            return
        conn = SipStreamProtocol(board, target.listener, cfg.connections.idle_timeout,
                                 cfg.sip.max_message_size, peer_host=target.host,
                                 peer_port=target.port, proto=target.proto)
        conn.register()
        conn.send_message(data)
        endpoint_cls = TCP6ClientEndpoint if ":" in target.host else TCP4ClientEndpoint
        endpoint = endpoint_cls(self._reactor, target.host, target.port,
                                timeout=cfg.connections.connect_timeout)
        if target.proto == "tls":
            endpoint = wrapClientTLS(
                client_tls_options(target.host, cfg.tls.ca_file, cfg.tls.verify_server), endpoint)
        d = connectProtocol(endpoint, conn)

        def failed(failure):
            log.warn("cannot connect to {proto}:{host}:{port}: {err}", proto=target.proto,
                     host=target.host, port=target.port, err=failure.getErrorMessage())
            self.switchboard.remove_connection(conn)
            self.switchboard.connect_failed(target)

        d.addErrback(failed)
