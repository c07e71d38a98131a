"""
The console's sections: the SSH Manhole (C{console}) and the management HTTP
listener (C{http}).
"""

import ipaddress

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


CONSOLE = Section(
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
    Key("worker_timeout", Seconds(positive=True), 5.0,
        "With processes > 1: seconds the supervisor waits for a worker's answer to a command before reporting that worker down."),
)


HTTP = Section(
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


def http_token_rules(cfg):
    """`http.token_sha256` is 64 hex digits, and is required when `http.listen` is not a loopback address."""
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
