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
)


@SCHEMA.check
def _connections_write_buffer(cfg):
    """connections.max_write_buffer holds at least one message of sip.max_message_size."""
    if cfg.connections.max_write_buffer < cfg.sip.max_message_size:
        raise ConfigError("connections.max_write_buffer",
                          "must be at least sip.max_message_size")


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
    Key("secret", Nullable(Str()), None,
        "Node secret signing Record-Route, so only dialogs the proxy record-routed are relayed in-dialog; the same on every node; null reads (or creates) proxy.secret_file."),
    Key("secret_file", Path(), "var/node_secret",
        "File holding the node secret when proxy.secret is null, created (mode 0600) with a random one on first start and kept across restarts."),
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
    Key("repeat_limit", Int(min=0), 10,
        "Most lines of one kind a peer can cause (a malformed message, bad credentials) per repeat_interval; the rest are counted and their number logged; 0 = no limit."),
    Key("repeat_interval", Seconds(positive=True), 10.0,
        "The interval of log.repeat_limit, in seconds."),
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
    Key("max_connections", Int(min=1), 16,
        "Open SSH connections at most; past it new ones are closed at accept (counted, logged once a minute)."),
    Key("login_timeout", Seconds(positive=True), 10.0,
        "Seconds a connection may take from accept to a successful login before it is closed."),
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
    Key("allowed_hosts", ListOf(Str()), [],
        "Host names accepted in the Host header besides the listen address (and localhost, 127.0.0.1, ::1 on loopback); others get 421 (DNS rebinding)."),
    Key("allowed_origins", ListOf(Str()), [],
        "Origins (scheme://host[:port]) whose requests are served; any other request carrying Origin gets 403 (cross-site requests)."),
    Key("max_body_size", Int(min=1), 1048576,
        "Largest request body in bytes; a larger Content-Length gets 413 before any body is read, a chunked body is cut off at it."),
    Key("max_json_depth", Int(min=1), 32,
        "Deepest nesting of arrays and objects in a JSON-RPC request; deeper gets 400 (-32700)."),
    Key("max_connections", Int(min=1), 64,
        "Open HTTP connections at most; past it new ones are closed at accept (counted, logged once a minute)."),
    Key("request_timeout", Seconds(positive=True), 10.0,
        "Seconds a client has to send a whole request (headers and body); slower ones get 408 and are closed."),
    Key("idle_timeout", Seconds(positive=True), 30.0,
        "Seconds an HTTP connection may stay idle between requests before it is closed."),
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
        """A deep copy of the list (the compiler checks the steps themselves)."""
        if not isinstance(value, list):
            raise self.wrong(value, where)
        import copy
        return copy.deepcopy(value)

    def describe(self):
        """The type's name in docs/configuration.md."""
        return "list of steps"


class RouteTable(_Type):
    """Named routes: a mapping of route name to a list of steps."""

    expected = "a mapping of route names to lists of steps"

    def parse(self, value, where):
        """A copy of the mapping, each route checked to be a list."""
        if not isinstance(value, dict):
            raise self.wrong(value, where)
        steps = RouteSteps()
        return {str(name): steps.parse(body, f"{where}.{name}") for name, body in value.items()}

    def describe(self):
        """The type's name in docs/configuration.md."""
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


# == registrar ===============================================================

SCHEMA.section(
    "registrar",
    "REGISTER handling and lookup (Kamailio's registrar module, docs/registrar.md).",
    Key("enabled", Bool(), True,
        "Handle REGISTER with save(\"location\"); false answers 404 \"No registrar\" as the seed does."),
    Key("default_expires", Int(min=1), 3600,
        "Expiry of a contact whose REGISTER gives none, in seconds."),
    Key("min_expires", Int(min=0), 60,
        "Shortest expiry accepted; a shorter non-zero one is answered 423 Interval Too Brief with Min-Expires."),
    Key("max_expires", Int(min=0), 3600,
        "Longest expiry granted, in seconds (the seed's 3600); longer ones are cut to it; 0 = no maximum."),
    Key("max_contacts", Int(min=0), 0,
        "Most contacts per address-of-record (the OpenSIPS seed's 1); more are answered 503; 0 = no limit."),
    Key("append_branches", Bool(), True,
        "lookup forks to every reachable contact in parallel (by q-value); false: only the best one."),
    Key("method_filtering", Bool(), False,
        "lookup skips contacts whose Allow (or methods parameter) does not list the request's method."),
    Key("use_path", Bool(), True,
        "Store the REGISTER's Path (RFC 3327) and route requests to the contact through it."),
    Key("accept_any_domain", Bool(), False,
        "Bind addresses-of-record of any domain; false: a REGISTER the route did not authenticate is answered 403 \"Domain not served\" unless its To domain is local (proxy.domains, a listen or advertised address, the domain table with auth.domain_table)."),
)


# == usrloc ==================================================================

SCHEMA.section(
    "usrloc",
    "The location table of registered contacts (Kamailio's usrloc module).",
    Key("db_mode", Int(min=0, max=3), 0,
        "0 memory only; 1 write-through (every change queued to the location table at once); 2 write-back every timer_interval; 3 database only (shared by several proxies). 1-3 keep registrations across restarts."),
    Key("use_domain", Bool(), False,
        "Addresses-of-record are user@domain (multi-domain); false: the user part alone, as the seed's MULTIDOMAIN 0."),
    Key("timer_interval", Seconds(positive=True), 60.0,
        "Seconds between sweeps of expired contacts, write-backs (db_mode 2) and deletions of expired rows."),
)


# == auth ====================================================================

SCHEMA.section(
    "auth",
    "Digest authentication against the subscriber table (Kamailio's auth and auth_db modules).",
    Key("enabled", Bool(), False,
        "The built-in route challenges REGISTERs (401) and requests from local users (407), refuses relaying for others (403) and trusts FreeSWITCH nodes; false: the seed's route, without authentication."),
    Key("secret", Nullable(Str()), None,
        "Secret signing the nonces; give every node the same one so any node accepts any node's nonces; null: random at each start."),
    Key("nonce_expire", Seconds(positive=True), 300.0,
        "Lifetime of a nonce; a right answer to an older one is challenged again with stale=true."),
    Key("nonce_bind_address", Bool(), True,
        "A nonce is valid only from the IP address it was given to."),
    Key("algorithms", ListOf(Enum("MD5", "SHA-256", "SHA-512-256")), ["MD5"],
        "Digest algorithms offered, one challenge header each, in order of preference (RFC 8760: list SHA-256 first for clients that have it)."),
    Key("qop", Enum("auth", "auth-int", "auth,auth-int", ""), "auth",
        "Quality of protection offered when the challenge's flags do not choose; '' offers none (each nonce then works once)."),
    Key("realm", Nullable(Str()), None,
        "Realm of the challenges; null uses the To (REGISTER) or From domain, as www_authorize(\"\", ...)."),
    Key("calculate_ha1", Bool(), True,
        "Compute H(A1) from the password column (the seeds' calculate_ha1 yes); false uses the ha1/ha1b columns."),
    Key("use_domain", Bool(), False,
        "Look subscribers up by username and domain (the realm); false: by username alone."),
    Key("trusted", ListOf(Str()), [],
        "Addresses or networks (such as FreeSWITCH nodes) never challenged, Kamailio's allow_source_address."),
    Key("trust_dispatcher", Bool(), True,
        "Requests from dispatcher destinations (ds_is_from_list: the FreeSWITCH nodes) are never challenged."),
    Key("domain_table", Bool(), False,
        "Also treat the domains of the domain table as local (loaded at start and by domain.reload)."),
)


@SCHEMA.check
def _auth_networks(cfg):
    """Every `auth.trusted` entry is an IP address or network, and `auth.algorithms` is not empty."""
    import ipaddress

    for item in cfg.auth.trusted:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError("auth.trusted", f"{item!r} is not an IP address or network") from None
    if not cfg.auth.algorithms:
        raise ConfigError("auth.algorithms", "must list at least one algorithm")


# == nat =====================================================================

SCHEMA.section(
    "nat",
    "Keepalives to registered contacts behind NAT (Kamailio's nathelper).",
    Key("natping_interval", Seconds(min=0), 0.0,
        "Seconds between keepalive rounds (the seeds' 30 and 10); 0 sends none."),
    Key("natping_method", Enum("OPTIONS", "CRLF"), "OPTIONS",
        "Keepalive for UDP contacts: an OPTIONS request (sipping) or a CRLF CRLF; TCP/TLS flows always get CRLF CRLF."),
    Key("ping_nated_only", Bool(), True,
        "Ping only contacts registered from behind NAT (fix_nated_register) and TCP/TLS flows."),
    Key("sipping_from", SipUri(), "sip:pinger@localhost",
        "From URI of the OPTIONS keepalives (Kamailio sipping_from)."),
)


# == dialog ==================================================================

SCHEMA.section(
    "dialog",
    "Dialog tracking for INVITEs whose route calls create_dialog (OpenSIPS/Kamailio dialog module, docs/dialog.md).",
    Key("default_timeout", Seconds(positive=True), 21600.0,
        "Lifetime of an answered call (the OpenSIPS seed's 6 hours); when it passes the dialog ends."),
    Key("bye_on_timeout", Bool(), True,
        "At the timeout sipdisp sends a BYE to both parties (create_dialog flag B does it per call when false)."),
    Key("early_timeout", Seconds(positive=True), 300.0,
        "An INVITE still unanswered after this long stops being tracked (and counted by the load balancer)."),
    Key("keepalive_interval", Seconds(min=0), 0.0,
        "Seconds between in-dialog OPTIONS to the parties of dialogs created with flags P (caller) and p (callee); 0 sends none."),
    Key("keepalive_timeout", Seconds(positive=True), 4.0,
        "A keepalive unanswered after this long has failed."),
    Key("keepalive_failed_limit", Int(min=1), 1,
        "Failed keepalives in a row (no reply, 408 or 481) after which sipdisp ends the call with BYEs."),
    Key("db_mode", Int(min=0, max=2), 0,
        "0 memory only; 1 write answered dialogs to the dialog table at every change; 2 write them every db_update_period (the seed's db_mode 2); 1 and 2 keep calls across restarts."),
    Key("db_update_period", Seconds(positive=True), 60.0,
        "Seconds between the writes of db_mode 2."),
    Key("profiles_with_value", ListOf(Str()), [],
        "Dialog profiles counting calls per value (set_dlg_profile: [name, \"$fU\"]), such as calls per user."),
    Key("profiles_no_value", ListOf(Str()), [],
        "Dialog profiles counting calls without a value (set_dlg_profile: name)."),
    Key("unmatched_reply", Nullable(Str()), None,
        "Reply such as \"481 Call/Transaction Does Not Exist\" that validate_dialog sends (ending the route) to an in-dialog request of no dialog; null: it only returns false."),
)


def parse_status_line(text):
    """``"481 Call/Transaction Does Not Exist"`` -> ``(481, "Call/...")``; ValueError if malformed."""
    code, _, reason = str(text).strip().partition(" ")
    if not (code.isdigit() and 300 <= int(code) <= 699) or not reason.strip():
        raise ValueError(f"expected \"CODE reason\" with a code of 300..699, got {text!r}")
    return int(code), reason.strip()


@SCHEMA.check
def _dialog_rules(cfg):
    """`dialog.early_timeout` is at least `sip.fr_inv_timer`, profile names are unique, and `dialog.unmatched_reply` is "CODE reason"."""
    d = cfg.dialog
    if d.early_timeout < cfg.sip.fr_inv_timer:
        raise ConfigError("dialog.early_timeout",
                          f"must be >= sip.fr_inv_timer ({cfg.sip.fr_inv_timer:g}), got {d.early_timeout:g}")
    names = list(d.profiles_with_value) + list(d.profiles_no_value)
    for name in names:
        if names.count(name) > 1 or name.startswith("lb-") or not name.strip():
            raise ConfigError("dialog.profiles_with_value",
                              f"profile {name!r} is empty, defined twice or uses the load balancer's lb- prefix")
    if d.unmatched_reply is not None:
        try:
            parse_status_line(d.unmatched_reply)
        except ValueError as exc:
            raise ConfigError("dialog.unmatched_reply", str(exc)) from None


# == accounting ==============================================================

SCHEMA.section(
    "accounting",
    "Accounting records, missed calls and CDRs written through storage (Kamailio/OpenSIPS acc module, docs/accounting.md).",
    Key("flag", Nullable(Str()), None,
        "Request flag (setflag) that accounts a transaction in acc, as Kamailio's db_flag (the Kamailio seed's FLT_ACC with WITH_ACCDB); null: only do_accounting accounts."),
    Key("missed_flag", Nullable(Str()), None,
        "Request flag that records a failed INVITE in missed_calls, as Kamailio's db_missed_flag (FLT_ACCMISSED); do_accounting \"missed\" does it too."),
    Key("failed_transaction_flag", Nullable(Str()), None,
        "Request flag that also accounts transactions ending with a failure (FLT_ACCFAILED); do_accounting \"failed\" does it too."),
    Key("extra", Str(), "src_user=$fU;src_domain=$fd;src_ip=$si;dst_ouser=$tU;dst_user=$rU;dst_domain=$rd",
        "Extra columns of acc, missed_calls and cdrs, as column=$pseudo-variable pairs (the seeds' db_extra)."),
    Key("cdr", Bool(), True,
        "Write one CDR per answered call whose INVITE was accounted, when its dialog ends (create_dialog needed)."),
    Key("cdr_table", Enum("cdrs", "acc_cdrs"), "cdrs",
        "Table of the CDRs: sipdisp's cdrs (with setup time, identity and extras) or Kamailio's acc_cdrs (times only)."),
    Key("local_bye", Bool(), True,
        "Write an acc row '200 Dialog Timeout' for the BYEs sipdisp sends itself at a dialog's timeout (the OpenSIPS seed's local_route)."),
)


@SCHEMA.check
def _accounting_extra(cfg):
    """`accounting.extra` names columns that acc, missed_calls and cdrs have, with pseudo-variables sipdisp knows."""
    from sipdisp.accounting.acc import parse_extra

    tables = ("acc", "missed_calls") + (("cdrs",) if cfg.accounting.cdr_table == "cdrs" else ())
    parse_extra(cfg.accounting.extra, "accounting.extra", tables)


# == load_balancer ===========================================================

class LbDestinations(_Type):
    """Load balancer destinations: a list of mappings with the load_balancer table's columns."""

    expected = "a list of destinations ({group, uri, resources[, id, probe_mode, description]})"
    FIELDS = {"id", "group", "uri", "resources", "probe_mode", "description", "attrs"}

    def parse(self, value, where):
        """Each entry checked: known fields, a SIP URI, resources as name=capacity, unique ids."""
        from sipdisp.loadbalancer.balancer import LbDestination

        if not isinstance(value, list):
            raise self.wrong(value, where)
        out = []
        ids = set()
        for n, entry in enumerate(value):
            here = f"{where}[{n}]"
            if not isinstance(entry, dict):
                raise ConfigError(here, "expected a mapping with group, uri and resources")
            unknown = set(entry) - self.FIELDS
            missing = {"group", "uri", "resources"} - set(entry)
            if unknown or missing:
                raise ConfigError(here, f"unknown field(s) {sorted(unknown)}" if unknown
                                  else f"missing field(s) {sorted(missing)}")
            item = dict(entry)
            item.setdefault("id", n + 1)
            item.setdefault("probe_mode", 0)
            try:
                LbDestination(item["id"], item["group"], str(item["uri"]), str(item["resources"]),
                              item["probe_mode"], str(item.get("attrs") or ""),
                              str(item.get("description") or ""))
            except (ValueError, TypeError) as exc:
                raise ConfigError(here, str(exc)) from None
            if item["id"] in ids:
                raise ConfigError(here, f"id {item['id']} is given twice")
            ids.add(item["id"])
            out.append(item)
        return out

    def describe(self):
        """The type's name in docs/configuration.md."""
        return "list of {group, uri, resources, id, probe_mode, description}"


SCHEMA.section(
    "load_balancer",
    "Resource-based load balancing over FreeSWITCH nodes (OpenSIPS load_balancer module, docs/loadbalancer.md).",
    Key("source", Enum("config", "db"), "config",
        "Where destinations come from: load_balancer.destinations, or the load_balancer table of storage.url (OpenSIPS' columns)."),
    Key("destinations", LbDestinations(), [],
        "Destinations when source is config: group, uri, resources such as 'vm=100;pstn=500', optional id, probe_mode (0 none, 1 while disabled, 2 always) and description."),
    Key("probing_interval", Seconds(min=0), 30.0,
        "Seconds between probing rounds (OpenSIPS probing_interval; the seed's 5); 0 stops probing."),
    Key("probing_timeout", Seconds(positive=True), 1.0,
        "A probe unanswered after this long has failed."),
    Key("probing_method", Str(), "OPTIONS",
        "Method of the probes (the seed's INFO)."),
    Key("probing_from", SipUri(), "sip:prober@localhost",
        "From URI of the probes."),
    Key("probing_reply_codes", Str(), "",
        "Replies besides 200 that count as up: OpenSIPS' '501, 403' or Kamailio's 'class=2;code=403' (a probe timeout never counts)."),
)


@SCHEMA.check
def _load_balancer_probing(cfg):
    """`load_balancer.probing_method` is a method other than INVITE, ACK and CANCEL, and `load_balancer.probing_reply_codes` parses."""
    from sipdisp.loadbalancer.balancer import reply_codes

    method = cfg.load_balancer.probing_method
    if not method.isalpha() or method.upper() in ("INVITE", "ACK", "CANCEL"):
        raise ConfigError("load_balancer.probing_method",
                          f"must be a method such as OPTIONS or INFO, got {method!r}")
    try:
        reply_codes(cfg.load_balancer.probing_reply_codes)
    except ValueError as exc:
        raise ConfigError("load_balancer.probing_reply_codes", str(exc)) from None
