"""
The sipdisp configuration schema, as data: every key with its type, default
and a one-sentence doc.  C{docs/configuration.md} is generated from this file.

To add a section, append a block at the end of this file:

    # == mysection ==========================================================

    SCHEMA.section(
        "mysection",
        "What the section configures, in one sentence.",
        Key("enabled", Bool(), False, "Whether the feature runs."),
        Section("sub", "A nested group of keys.",
                Key("limit", Int(min=1), 10, "How many at most.")),
    )

    @SCHEMA.check
    def _mysection_rule(cfg):
        \"\"\"One sentence stating the rule, shown in the docs.\"\"\"
        if ...:
            raise ConfigError("mysection.sub.limit", "must be ... when ...")

then run C{make docs} (C{python -m sipdisp.config.docs > docs/configuration.md}).
Defaults are a contract with operators: change them only on purpose.
"""

from sipdisp.config.model import (  # noqa: F401 (names for section authors)
    Bool,
    ConfigError,
    Enum,
    HostPort,
    Int,
    Key,
    ListOf,
    Nullable,
    Path,
    Schema,
    Seconds,
    Section,
    SipUri,
    Str,
    Url,
)

SCHEMA = Schema()


# == listen ==================================================================

SCHEMA.section(
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


# == advertise ===============================================================

SCHEMA.section(
    "advertise",
    "The address written into Via and Record-Route instead of the listen address, for a proxy behind NAT.",
    Key("host", Nullable(Str()), None,
        "Host or IP address to advertise; null uses the listen address."),
    Key("port", Nullable(Int(min=1, max=65535)), None,
        "Port to advertise; null uses the listen port."),
)


# == tls =====================================================================

SCHEMA.section(
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


@SCHEMA.check
def _tls_files_for_tls_listeners(cfg):
    """`tls.certificate` and `tls.private_key` are required when `listen.tls` or `listen.wss` is not empty."""
    for transport in ("tls", "wss"):
        if getattr(cfg.listen, transport):
            for key in ("certificate", "private_key"):
                if getattr(cfg.tls, key) is None:
                    raise ConfigError(f"tls.{key}", f"required when listen.{transport} is not empty")


# == connections =============================================================

SCHEMA.section(
    "connections",
    "Limits for stream connections (TCP, TLS, WS, WSS).",
    Key("max", Int(min=1), 2048,
        "Most open connections at once, incoming and outgoing (Kamailio tcp_max_connections)."),
    Key("idle_timeout", Seconds(positive=True), 3605,
        "Close a connection idle for this long (Kamailio tcp_connection_lifetime)."),
    Key("connect_timeout", Seconds(positive=True), 5,
        "Give up an outgoing connection attempt after this long."),
)


# == sip =====================================================================

SCHEMA.section(
    "sip",
    "SIP message limits and RFC 3261 transaction timers.",
    Key("max_message_size", Int(min=1), 65535,
        "Largest SIP message accepted, in bytes."),
    Key("t1", Seconds(positive=True), 0.5,
        "RFC 3261 T1, the round-trip time estimate."),
    Key("t2", Seconds(positive=True), 4.0,
        "RFC 3261 T2, the longest retransmit interval for non-INVITE requests and INVITE responses."),
    Key("t4", Seconds(positive=True), 5.0,
        "RFC 3261 T4, the longest time a message stays in the network."),
    Key("fr_timer", Seconds(positive=True), 30.0,
        "Final reply timeout for a request with no provisional reply (Kamailio tm fr_timer)."),
    Key("fr_inv_timer", Seconds(positive=True), 120.0,
        "INVITE final reply timeout once a provisional reply arrived (Kamailio tm fr_inv_timer)."),
    Key("server_header", Nullable(Str()), "sipdisp",
        "Value of the Server and User-Agent headers the proxy writes; null writes none."),
)


@SCHEMA.check
def _t2_not_below_t1(cfg):
    """`sip.t2` must not be less than `sip.t1` (RFC 3261 section 17.1.2.2)."""
    if cfg.sip.t2 < cfg.sip.t1:
        raise ConfigError("sip.t2", f"must be >= sip.t1 ({cfg.sip.t1}), got {cfg.sip.t2}")


# == proxy ===================================================================

SCHEMA.section(
    "proxy",
    "Routing behaviour of the proxy core.",
    Key("domains", ListOf(Str()), [],
        'Names and addresses treated as "myself" besides the listen and advertised addresses.'),
    Key("max_forwards", Int(min=1, max=255), 10,
        "Max-Forwards value set when a request has none; a request arriving with 0 is answered 483."),
    Key("record_route", Bool(), True,
        "Add Record-Route to dialog-forming requests so in-dialog requests come back through the proxy."),
    Key("next_hop", SipUri(), "sip:127.0.0.1:5080",
        "Default destination for requests no other rule routes, such as a FreeSWITCH node."),
    Key("branch_timeout", Seconds(positive=True), 2.0,
        "Per-branch final reply timeout before failing over (Kamailio t_set_fr(0, 2000))."),
    Key("failover_codes", ListOf(Int(min=300, max=699)), [500, 502, 503, 504, 408],
        "Final response codes from a destination that make the proxy try the next one."),
)


# == storage =================================================================

SCHEMA.section(
    "storage",
    "Where registrations, dispatcher sets and accounting records are kept.",
    Key("url", Url(), "sqlite:///var/sipdisp.db",
        "Database URL, such as sqlite:///var/sipdisp.db or postgresql://user@host/sipdisp."),
    Key("write_queue_max", Int(min=1), 100000,
        "Most writes held in memory while the database is slow or unreachable."),
    Key("spool_dir", Path(), "var/spool",
        "Directory where records are spooled to disk while the database is unreachable."),
)


# == log =====================================================================

SCHEMA.section(
    "log",
    "Logging.",
    Key("level", Enum("debug", "info", "warn", "error"), "info",
        "Least severe level that is logged."),
)
