"""The management HTTP listener: ``POST /rpc`` (JSON-RPC 2.0) and
``GET /metrics`` (Prometheus), on loopback by default, optionally behind a
bearer token whose SHA-256 is in ``http.token_sha256``.

A web page open in a browser on the proxy host can reach loopback too, so
every request is judged on its request line and headers alone, before a
byte of body is accepted (``ManagementChannel.allHeadersReceived``):

- ``Host`` must name this listener (``http.allowed_hosts``; DNS rebinding
  sends the attacker's name): else 421;
- a request carrying ``Origin`` must come from ``http.allowed_origins``
  (cross-site requests; empty by default): else 403;
- the bearer token, when one is configured: else 401;
- a POST (or any body) must be ``Content-Type: application/json``, which a
  browser cannot send cross-site without a CORS preflight: else 415;
- ``Content-Length`` at most ``http.max_body_size``: else 413 (a chunked
  body is cut off with 413 when it passes the limit).

A refusal is answered at once and the connection closed; the body is kept
in memory (never a temporary file, as twisted.web does past 100 KB).  The
listener also caps open connections (``http.max_connections``, at accept),
gives a client ``http.request_timeout`` seconds to send a whole request and
closes connections idle for ``http.idle_timeout``.  Each refusal is counted
in ``core.stats`` (``sipdisp_core_events_total{event="http_..."}``) and
logged when it first happens, then at most once a minute.
"""

import hashlib
import hmac
import ipaddress
from io import BytesIO

from twisted.web import http, pages, resource, server

from ..logs import Logger
from .jsonrpc import (INVALID_REQUEST, MAX_BODY, MAX_DEPTH, JsonRpcResource, dumps,
                      error_response)
from .listening import ConnectionCap, ListeningService, core_stats, make_alarms
from .metrics import CONTENT_TYPE, MetricsCollector


log = Logger()

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_JSON = b"application/json"


def token_digest(token):
    """The hex SHA-256 of a bearer token, as written in ``http.token_sha256``."""
    if isinstance(token, str):
        token = token.encode("utf-8")
    return hashlib.sha256(token).hexdigest()


def bearer_ok(request, digest):
    """True if ``request`` carries ``Authorization: Bearer T`` with sha256(T) == ``digest``."""
    header = (request.getHeader(b"authorization") or b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return hmac.compare_digest(token_digest(token.strip()), digest.lower())


def split_host(value):
    """``(name, port)`` of a Host header or an ``allowed_hosts`` entry: the name
    lower-case without brackets or a trailing dot, the port an int or None;
    None when the value is malformed."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.strip().lower()
    port = None
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket:
            return None
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                return None
            port = int(rest[1:])
    else:
        name, colon, rest = value.rpartition(":")
        if not colon or ":" in name:  # no port, or an unbracketed IPv6 address
            name = value
        elif rest.isdigit():
            port = int(rest)
        else:
            return None
    name = name.rstrip(".")
    return (name, port) if name else None


def _is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class RequestGuard:
    """Decides, from a request's line and headers alone, whether its body may
    be read; ``check`` returns None or ``(status, phrase, reason, alarm)``."""

    def __init__(self, cfg, alarms):
        listen_host = cfg.listen[0].lower()
        names = {listen_host} if listen_host not in ("", "0.0.0.0", "::") else set()
        if _is_loopback(listen_host):
            names.update(_LOOPBACK_NAMES)
        self.host_names = names          # any port
        self.host_pairs = set()          # (name, port) from entries with a port
        for entry in cfg.allowed_hosts:
            parsed = split_host(entry)
            if parsed is None:
                continue
            if parsed[1] is None:
                self.host_names.add(parsed[0])
            else:
                self.host_pairs.add(parsed)
        self.origins = {o.strip().lower().rstrip("/") for o in cfg.allowed_origins}
        self.token_sha256 = cfg.token_sha256
        self.metrics_need_token = cfg.metrics_need_token
        self.max_body_size = cfg.max_body_size
        self.alarms = alarms

    def host_ok(self, value, local_host):
        """True if the Host header ``value`` names this listener.  An IP literal
        equal to the address the connection arrived on is always fine: a
        rebinding attack needs a name of the attacker's."""
        parsed = split_host(value)
        if parsed is None:
            return False
        name, port = parsed
        if name in self.host_names or parsed in self.host_pairs:
            return True
        return local_host is not None and name == local_host.lower()

    def check(self, method, path, request, length, local_host):
        """The refusal due to a request, or None if its body may be read."""
        alarms = self.alarms
        headers = request.requestHeaders
        hosts = headers.getRawHeaders(b"host")
        if hosts is not None and (len(hosts) != 1 or not self.host_ok(hosts[0], local_host)):
            return (421, b"Misdirected Request",
                    "Host does not name this listener; add the name to http.allowed_hosts",
                    alarms["host"])
        origins = headers.getRawHeaders(b"origin")
        if origins is not None and any(o.decode("latin-1").strip().lower().rstrip("/")
                                       not in self.origins for o in origins):
            return (403, b"Forbidden", "Origin not in http.allowed_origins", alarms["origin"])
        if self.token_sha256 is not None:
            first = path.split(b"?", 1)[0][1:].split(b"/", 1)[0]
            if (first != b"metrics" or self.metrics_need_token) \
                    and not bearer_ok(request, self.token_sha256):
                return (401, b"Unauthorized", "send Authorization: Bearer <token>",
                        alarms["token"])
        if method == b"POST" or length != 0:
            types = headers.getRawHeaders(b"content-type")
            if types is None or len(types) != 1 \
                    or types[0].split(b";", 1)[0].strip().lower() != _JSON:
                return (415, b"Unsupported Media Type", "Content-Type must be application/json",
                        alarms["content_type"])
        if length is not None and length > self.max_body_size:
            return (413, b"Payload Too Large",
                    f"body larger than {self.max_body_size} bytes", alarms["body_size"])
        return None


def refusal_bytes(status, phrase, reason, extra_headers=()):
    """A whole HTTP/1.1 response with a JSON-RPC error body, closing the connection."""
    body = dumps(error_response(None, INVALID_REQUEST, phrase.decode("ascii"),
                                reason)).encode("utf-8")
    head = [b"HTTP/1.1 %d %s" % (status, phrase), b"Content-Type: application/json",
            b"Content-Length: %d" % len(body), b"Connection: close", *extra_headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class ManagementRequest(server.Request):
    """A Request whose body stays in memory (the guard has bounded it) and
    whose chunked body is cut off at ``http.max_body_size``."""

    def gotLength(self, length):
        """Keep the body in memory: a Content-Length over the limit never gets here."""
        self.content = BytesIO()

    def handleContentChunk(self, data):
        """Append body bytes; past the limit (a chunked body), refuse with 413."""
        channel = self.channel
        if channel is None or channel.refused:
            return
        guard = channel.site.guard
        if self.content.tell() + len(data) > guard.max_body_size:
            channel.refuse(413, b"Payload Too Large",
                           f"body larger than {guard.max_body_size} bytes",
                           guard.alarms["body_size"])
            return
        self.content.write(data)


class ManagementChannel(http.HTTPChannel):
    """An HTTPChannel that judges each request on its headers before reading
    its body, gives it ``http.request_timeout`` seconds to arrive whole, and
    counts itself against the listener's connection cap."""

    refused = False
    _deadline = None

    def connectionMade(self):
        """Count the connection and start the clock for its first request."""
        super().connectionMade()
        self.site.connections.opened()
        self._start_deadline()

    def connectionLost(self, reason):
        """Release the connection's place and its timers."""
        self._stop_deadline()
        self.site.connections.closed()
        super().connectionLost(reason)

    def _start_deadline(self):
        if self._deadline is None:
            self._deadline = self.callLater(self.site.request_timeout, self._request_too_slow)

    def _stop_deadline(self):
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _request_too_slow(self):
        self._deadline = None
        self.refuse(408, b"Request Timeout",
                    f"the request did not arrive within {self.site.request_timeout:g} s",
                    self.site.alarms["timeout"])
        if self.abortTimeout is not None and self.transport is not None:
            # a client that does not read either: drop it without waiting for the flush
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)

    def lineReceived(self, line):
        """Ignore everything after a refusal; a new request restarts the deadline."""
        if self.refused:
            return
        if self._deadline is None and not self._handlingRequest:
            self._start_deadline()
        super().lineReceived(line)

    def rawDataReceived(self, data):
        """Body bytes, unless the request was refused."""
        if not self.refused:
            super().rawDataReceived(data)

    def allHeadersReceived(self):
        """Refuse here, from the headers, what must not have its body read."""
        request = self.requests[-1]
        local = self.transport.getHost() if self.transport is not None else None
        refusal = self.site.guard.check(self._command, self._path, request, self.length,
                                        getattr(local, "host", None))
        if refusal is not None:
            status, phrase, reason, alarm = refusal
            extra = [b'WWW-Authenticate: Bearer realm="sipdisp"'] if status == 401 else []
            self.refuse(status, phrase, reason, alarm, extra)
            return
        super().allHeadersReceived()

    def allContentReceived(self):
        """The whole request is in: stop its deadline and handle it."""
        if self.refused:
            return
        self._stop_deadline()
        super().allContentReceived()

    def refuse(self, status, phrase, reason, alarm, extra_headers=()):
        """Answer ``status`` at once, count it, and close without reading more."""
        if self.refused:
            return
        self.refused = True
        self.persistent = False
        self._stop_deadline()
        self.setTimeout(None)  # the idle timer has nothing left to time
        peer = self.transport.getPeer() if self.transport is not None else None
        alarm.trip(status=status, reason=reason,
                   peer=f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}")
        if self.transport is not None:
            self.transport.write(refusal_bytes(status, phrase, reason, extra_headers))
            self.loseConnection()

    def timeoutConnection(self):
        """Idle past ``http.idle_timeout``: close, counted (Twisted would log each one)."""
        self.site.alarms["idle"].trip(status=0, reason="idle", peer="-")
        self.refused = True
        self._stop_deadline()
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()

    def forceAbortClient(self):
        """The peer did not let the connection close: drop it (quietly)."""
        self._abortingCall = None
        if self.transport is not None:
            self.transport.abortConnection()


class MetricsResource(resource.Resource):
    """``GET /metrics``: the Prometheus text exposition."""

    isLeaf = True

    def __init__(self, collector):
        super().__init__()
        self.collector = collector

    def render_GET(self, request):
        """The current metrics page."""
        request.setHeader(b"content-type", CONTENT_TYPE.encode("ascii"))
        return self.collector.render().encode("utf-8")


class UnauthorizedResource(resource.Resource):
    """HTTP 401 with a ``WWW-Authenticate: Bearer`` challenge and a JSON error body."""

    isLeaf = True

    def render(self, request):
        """The 401 answer, whatever the method."""
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", b'Bearer realm="sipdisp"')
        request.setHeader(b"content-type", b"application/json")
        return dumps(error_response(None, INVALID_REQUEST, "Unauthorized",
                                    "send Authorization: Bearer <token>")).encode("utf-8")


class ManagementRoot(resource.Resource):
    """``/`` of the listener: ``rpc`` and ``metrics``, each behind the token if one is set
    (checked again here, behind the channel's header check)."""

    def __init__(self, registry, collector, token_sha256=None, metrics_need_token=True,
                 max_body=MAX_BODY, max_depth=MAX_DEPTH, on_client_error=None):
        super().__init__()
        self.token_sha256 = token_sha256
        self.metrics_need_token = metrics_need_token
        self.putChild(b"rpc", JsonRpcResource(registry, max_body, max_depth, on_client_error))
        self.putChild(b"metrics", MetricsResource(collector))

    def getChildWithDefault(self, path, request):
        """The child for ``path``, or a 401 page when the token is required and missing."""
        if self.token_sha256 is not None and (path != b"metrics" or self.metrics_need_token):
            if not bearer_ok(request, self.token_sha256):
                return UnauthorizedResource()
        return super().getChildWithDefault(path, request)

    def getChild(self, path, request):
        """Any other path: 404."""
        return pages.notFound()

    def render_GET(self, request):
        """A one-line description of the endpoints."""
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"sipdisp management: POST /rpc (JSON-RPC 2.0), GET /metrics (Prometheus)\n"


# refusal kind -> (core.stats counter, the warning written when it first trips)
_ALARMS = {
    "host": ("http_refused_host",
             "http: refused a request from {peer}: {reason} (DNS rebinding?)"),
    "origin": ("http_refused_origin",
               "http: refused a cross-site request (Origin not in http.allowed_origins) "
               "from {peer}"),
    "token": ("http_refused_token", "http: refused a request without the bearer token "
                                    "from {peer}"),
    "content_type": ("http_refused_content_type",
                     "http: refused a body that is not application/json from {peer}"),
    "body_size": ("http_refused_body_size", "http: refused a request: {reason}; from {peer}"),
    "timeout": ("http_request_timeouts", "http: closed a connection: {reason}; from {peer}"),
    "idle": ("http_idle_timeouts", "http: closed a connection idle past http.idle_timeout"),
    "rpc": ("http_rpc_client_errors",
            "http: JSON-RPC request refused: {reason}"),
    "connections": ("http_refused_connections",
                    "http: {limit} connections open (http.max_connections); closing new "
                    "ones at accept, from {peer}"),
}


class ManagementSite(server.Site):
    """The Site of the listener: quiet (no access log lines, no tracebacks
    shown), guarded (see the module docstring) and capped in connections."""

    noisy = False
    displayTracebacks = False
    protocol = ManagementChannel
    requestFactory = ManagementRequest

    def __init__(self, root_resource, cfg, stats, reactor):
        super().__init__(root_resource, timeout=cfg.idle_timeout, reactor=reactor)
        self.requestFactory = ManagementRequest
        self.alarms = make_alarms(stats, reactor, _ALARMS)
        self.guard = RequestGuard(cfg, self.alarms)
        self.connections = ConnectionCap(cfg.max_connections, self.alarms["connections"])
        self.request_timeout = cfg.request_timeout

    def buildProtocol(self, addr):
        """A channel, or None (the socket is closed at accept) past ``http.max_connections``."""
        if not self.connections.admit(addr):
            return None
        return super().buildProtocol(addr)

    def log(self, request):
        """No access log: scrapes would flood it; RPC calls are logged at debug level."""


def make_site(root):
    """The Site for the service tree ``root`` (its registry, metrics and ``cfg.http``)."""
    cfg = root.cfg.http
    stats = core_stats(root)
    reactor = getattr(root, "_reactor", None)
    if reactor is None:
        from twisted.internet import reactor
    site = ManagementSite(None, cfg, stats, reactor)
    rpc_errors = site.alarms["rpc"]
    site.resource = ManagementRoot(root.registry, MetricsCollector(root), cfg.token_sha256,
                                   cfg.metrics_need_token, cfg.max_body_size, cfg.max_json_depth,
                                   lambda reason: rpc_errors.trip(reason=reason))
    return site


class HttpService(ListeningService):
    """Listens for JSON-RPC and metrics requests (``http.*`` in the config)."""

    name = "http"

    def _listen(self):
        host, port = self.cfg.listen
        self.port = self._reactor.listenTCP(port, make_site(self.root), interface=host)
        bound = self.port.getHost()
        log.info("listening on http:{host}:{port}", host=bound.host, port=bound.port)
