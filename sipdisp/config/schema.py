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


# == console =================================================================

SCHEMA.section(
    "console",
    "The Manhole: a Python console inside the running proxy, over SSH (docs/management.md).",
    Key("enabled", Bool(), True,
        "Run the SSH console; nobody can log in until a key is in console.authorized_keys."),
    Key("listen", HostPort(), "127.0.0.1:2222",
        "Address of the SSH console; keep it on loopback unless you mean to expose it."),
    Key("authorized_keys", Path(), "etc/manhole_authorized_keys",
        "OpenSSH authorized_keys file of the keys allowed in, re-read at each login; absent or empty lets nobody in."),
    Key("host_key", Path(), "var/manhole_host_key",
        "Ed25519 host key of the console, generated (mode 0600, with a .pub beside it) on first start and kept."),
    Key("password_file", Nullable(Path()), None,
        "File of user:bcrypt-hash lines also allowing password logins; null (the default) allows keys only."),
)


# == http ====================================================================

SCHEMA.section(
    "http",
    "The management HTTP listener: JSON-RPC 2.0 at /rpc and Prometheus metrics at /metrics.",
    Key("enabled", Bool(), True,
        "Serve JSON-RPC and metrics over HTTP."),
    Key("listen", HostPort(), "127.0.0.1:5064",
        "Address of the HTTP listener; an address other than loopback requires http.token_sha256."),
    Key("token_sha256", Nullable(Str()), None,
        "Hex SHA-256 of the bearer token clients must send (python -m sipdisp.console.credentials token); null: no token."),
    Key("metrics_need_token", Bool(), True,
        "Whether /metrics also requires the bearer token when http.token_sha256 is set."),
)


@SCHEMA.check
def _http_token_rules(cfg):
    """`http.token_sha256` is 64 hex digits, and is required when `http.listen` is not a loopback address."""
    import ipaddress

    token = cfg.http.token_sha256
    if token is not None:
        if len(token) != 64 or any(c not in "0123456789abcdefABCDEF" for c in token):
            raise ConfigError("http.token_sha256", "must be 64 hex digits (the SHA-256 of the token)")
        return
    if not cfg.http.enabled:
        return
    host = cfg.http.listen[0]
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ConfigError("http.token_sha256",
                          f"required when http.listen is not a loopback address ({host})")


# == dispatcher ==============================================================

SCHEMA.section(
    "dispatcher",
    "Destination sets and their health (Kamailio's dispatcher module, docs/dispatcher.md).",
    Key("source", Enum("file", "db"), "file",
        "Where the sets come from: the list file, or the dispatcher table of storage.url (Kamailio's columns)."),
    Key("list_file", Path(), "etc/dispatcher.list",
        "Kamailio-format list file, one 'setid uri [flags [priority [attrs]]]' per line; if it does not exist, set 0 is proxy.next_hop alone."),
    Key("ping_interval", Seconds(min=0), 10.0,
        "Seconds between ping rounds (Kamailio ds_ping_interval); 0 stops probing."),
    Key("ping_timeout", Seconds(positive=True), 1.0,
        "A ping unanswered after this long has failed (its own timer, not the 32 s transaction timeout)."),
    Key("ping_method", Str(), "OPTIONS",
        "Method of the pings (Kamailio ds_ping_method), such as OPTIONS or INFO."),
    Key("ping_from", SipUri(), "sip:dispatcher@localhost",
        "From URI of the pings (Kamailio ds_ping_from)."),
    Key("ping_reply_codes", Str(), "",
        "Replies besides 200 that count as up, in Kamailio syntax such as 'class=2;code=403;code=404' (a ping timeout never counts)."),
    Key("probing_mode", Int(min=0, max=3), 0,
        "Which destinations are pinged (Kamailio ds_probing_mode): 0 those with the probing flag, 1 all, 2 inactive ones with the probing flag, 3 those with the probing flag, keeping it."),
    Key("probing_threshold", Int(min=1), 1,
        "Failed pings (or ds_mark_dst t) that take a destination from active through trying to inactive."),
    Key("inactive_threshold", Int(min=1), 1,
        "Successful pings in a row that bring an inactive or trying destination back to active."),
    Key("load_expire", Seconds(positive=True), 7200.0,
        "An answered call whose BYE was never seen stops counting in its destination's load after this long (Kamailio ds_hash_expire)."),
    Key("load_init_expire", Seconds(positive=True), 300.0,
        "A dispatched INVITE whose transaction end was never seen stops counting after this long (Kamailio ds_hash_initexpire)."),
)


@SCHEMA.check
def _dispatcher_ping_rules(cfg):
    """`dispatcher.ping_method` is a SIP method other than INVITE, ACK and CANCEL, and `dispatcher.ping_reply_codes` uses Kamailio's class=N;code=NNN syntax."""
    from sipdisp.dispatcher.replycodes import ReplyCodes

    method = cfg.dispatcher.ping_method
    if not method.isalpha() or method.upper() in ("INVITE", "ACK", "CANCEL"):
        raise ConfigError("dispatcher.ping_method",
                          f"must be a method such as OPTIONS or INFO (not INVITE, ACK or CANCEL), got {method!r}")
    try:
        ReplyCodes(cfg.dispatcher.ping_reply_codes)
    except ValueError as exc:
        raise ConfigError("dispatcher.ping_reply_codes", str(exc)) from None


# == routing =================================================================

from sipdisp.config.model import Type as _Type  # noqa: E402


class RouteSteps(_Type):
    """A route: a YAML list of steps (checked in depth when the routing compiles)."""

    expected = "a list of route steps"

    def parse(self, value, where):
        if not isinstance(value, list):
            raise self.wrong(value, where)
        import copy
        return copy.deepcopy(value)

    def describe(self):
        return "list of steps"


class RouteTable(_Type):
    """Named routes: a mapping of route name to a list of steps."""

    expected = "a mapping of route names to lists of steps"

    def parse(self, value, where):
        if not isinstance(value, dict):
            raise self.wrong(value, where)
        steps = RouteSteps()
        return {str(name): steps.parse(body, f"{where}.{name}") for name, body in value.items()}

    def describe(self):
        return "mapping of name -> steps"


SCHEMA.section(
    "routing",
    "How requests are routed: a route in Kamailio's vocabulary, compiled once at start-up, or a Python function (docs/routing.md).",
    Key("request_route", Nullable(RouteSteps()), None,
        "The main route; null uses the built-in route, the Kamailio seed's request_route (written out in etc/sipdisp.yaml)."),
    Key("routes", RouteTable(), {},
        "Named routes, called with 'route: NAME'; they add to or replace the built-in ones of the same name."),
    Key("failure_routes", RouteTable(), {},
        "Named failure routes, armed with 't_on_failure: NAME'; they add to or replace the built-in ones."),
    Key("module", Nullable(Str()), None,
        "A Python request route 'package.module:function' called with each request's context instead of request_route."),
)


@SCHEMA.check
def _routing_compiles(cfg):
    """The routing compiles: every step and condition is a known function with valid arguments, and every route named exists."""
    from sipdisp.routing import validate_routing

    validate_routing(cfg)
