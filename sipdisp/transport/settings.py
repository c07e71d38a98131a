"""
The transport's sections: the sockets it listens on, the address it advertises,
its TLS certificates and its limits on stream connections.
"""

from ..config.model import (
    Bool,
    ConfigError,
    HostPort,
    Int,
    Key,
    ListOf,
    Nullable,
    Path,
    Seconds,
    Section,
    Str,
)
from .origins import OriginPolicy


LISTEN = Section(
    "listen",
    "Sockets the proxy listens on, one list per transport; an empty list disables the transport.",
    Key("udp", ListOf(HostPort()), ["127.0.0.1:5060"],
        "UDP sockets for SIP."),
    Key("tcp", ListOf(HostPort()), ["127.0.0.1:5060"],
        "TCP sockets for SIP."),
    Key("tls", ListOf(HostPort()), [],
        "TLS sockets for SIP (needs tls.certificate and tls.private_key)."),
    Key("ws", ListOf(HostPort()), ["127.0.0.1:5062"],
        "WebSocket sockets for SIP over WebSocket (RFC 7118)."),
    Key("wss", ListOf(HostPort()), [],
        "Secure WebSocket sockets (needs tls.certificate and tls.private_key)."),
)


ADVERTISE = Section(
    "advertise",
    "The address written into Via and Record-Route instead of the listen address, for a proxy behind NAT.",
    Key("host", Nullable(Str()), None,
        "Host or IP address to advertise; null uses the listen address."),
    Key("port", Nullable(Int(min=1, max=65535)), None,
        "Port to advertise; null uses the listen port."),
)


TLS = Section(
    "tls",
    "Certificates for the TLS and WSS listeners and for outgoing TLS connections.",
    Key("certificate", Nullable(Path()), None,
        "PEM file with the server certificate chain."),
    Key("private_key", Nullable(Path()), None,
        "PEM file with the private key of the certificate."),
    Key("ca_file", Nullable(Path()), None,
        "CA bundle used to verify peers on outgoing TLS; null uses the system trust store."),
    Key("verify_server", Bool(), True,
        "Verify the certificate of the server on outgoing TLS connections."),
    Key("require_client_certificate", Bool(), False,
        "Refuse incoming TLS connections that present no valid client certificate."),
)


def tls_files_for_tls_listeners(cfg):
    """`tls.certificate` and `tls.private_key` are required when `listen.tls` or `listen.wss` is not empty."""
    for transport in ("tls", "wss"):
        if getattr(cfg.listen, transport):
            for key in ("certificate", "private_key"):
                if getattr(cfg.tls, key) is None:
                    raise ConfigError(f"tls.{key}", f"required when listen.{transport} is not empty")


CONNECTIONS = Section(
    "connections",
    "Limits for stream connections (TCP, TLS, WS, WSS).",
    Key("max", Int(min=1), 2048,
        "Most open incoming connections at once; more are refused at accept "
        "(Kamailio tcp_max_connections). Outgoing ones count against max_outgoing."),
    Key("max_outgoing", Int(min=1), 1024,
        "Most open outgoing connections (to next hops and other TCP/TLS targets) at once, "
        "apart from max so that a flood of clients cannot lock the proxy out of its next hop."),
    Key("max_per_source", Int(min=0), 64,
        "Most open incoming connections from one IP address; more are refused at accept "
        "(0: no limit; raise it for clients behind one NAT)."),
    Key("idle_timeout", Seconds(positive=True), 3605,
        "Close a connection idle for this long once it has sent a valid SIP message "
        "(Kamailio tcp_connection_lifetime)."),
    Key("first_message_timeout", Seconds(positive=True), 10,
        "Close an incoming connection that has not sent a complete message this long after "
        "accept (for WS and WSS: handshake and first message; for TLS: with the handshake)."),
    Key("idle_timeout_before_message", Seconds(positive=True), 30,
        "Close an incoming connection that has not yet sent a valid SIP message after this "
        "long without a complete message (bytes alone, such as CRLF pings, do not count)."),
    Key("max_write_buffer", Int(min=65536), 1048576,
        "Most bytes waiting to be sent on one connection (a peer not reading); past it the "
        "connection is aborted (Kamailio tcp_conn_wq_max). Meanwhile reading from it stops "
        "and keep-alives are not answered."),
    Key("send_timeout", Seconds(positive=True), 10,
        "Abort a connection whose write buffer has not drained for this long "
        "(Kamailio tcp_send_timeout)."),
    Key("connect_timeout", Seconds(positive=True), 5,
        "Give up an outgoing connection attempt after this long."),
    Key("max_header_size", Int(min=1024), 16384,
        "Largest header section (start line to the blank line) on TCP/TLS, in bytes; a longer "
        "one is answered 513 and the connection closed as soon as that many bytes arrived "
        "without the blank line (capped by sip.max_message_size, which also bounds the "
        "announced body: a larger Content-Length is refused at once, never buffered)."),
    Key("max_messages_per_second", Int(min=0), 1000,
        "Most SIP messages and keep-alives a second on one incoming connection, in bursts of "
        "one second's worth; past it the connection is closed (0: no limit)."),
    Key("max_messages_per_source", Int(min=0), 2000,
        "Most SIP messages and keep-alives a second from one IP address over all its incoming "
        "stream connections; past it the connection that carried the message is closed "
        "(0: no limit)."),
)


def connections_write_buffer(cfg):
    """connections.max_write_buffer holds at least one message of sip.max_message_size."""
    if cfg.connections.max_write_buffer < cfg.sip.max_message_size:
        raise ConfigError("connections.max_write_buffer",
                          "must be at least sip.max_message_size")


WEBSOCKET = Section(
    "websocket",
    "SIP over WebSocket (WS, WSS): which web pages may connect, server pings, frame and message "
    "limits (RFC 6455, RFC 7118).",
    Key("allowed_origins", ListOf(Str()), [],
        "Origins a browser may connect from besides the proxy's own hosts (the ws/wss listen "
        "addresses, advertise.host) and localhost: scheme://host[:port] exactly, a bare host "
        "name (any scheme and port), *.example.com (its subdomains) or * (any); others get 403."),
    Key("allow_missing_origin", Bool(), True,
        "Accept a handshake without an Origin header: clients that are not browsers (SIPp, Node, "
        "desk phones) send none; false refuses them with 403."),
    Key("ping_interval", Seconds(min=0), 30,
        "Send a WebSocket ping this often on an open connection; 0 sends none."),
    Key("pong_timeout", Seconds(positive=True), 20,
        "Abort a connection whose pong has not come back this long after the ping "
        "(a dead peer or a broken path)."),
    Key("max_frame_size", Int(min=125), 65535,
        "Largest frame payload in bytes; a larger frame closes the connection with 1009 "
        "(message too big) as soon as that many bytes have arrived."),
    Key("max_message_size", Nullable(Int(min=125)), None,
        "Largest message (all its fragments) in bytes, closed with 1009 past it; null uses "
        "sip.max_message_size."),
)


def websocket_rules(cfg):
    """Every ``websocket.allowed_origins`` entry parses: an origin, a host name,
    *.domain or *."""
    OriginPolicy(cfg.websocket.allowed_origins)
