"""The management HTTP listener: ``POST /rpc`` (JSON-RPC 2.0) and
``GET /metrics`` (Prometheus), on loopback by default, optionally behind a
bearer token whose SHA-256 is in ``http.token_sha256``."""

import hashlib
import hmac

from twisted.web import pages, resource, server

from ..logs import Logger
from .listening import ListeningService
from .jsonrpc import INVALID_REQUEST, JsonRpcResource, dumps, error_response
from .metrics import CONTENT_TYPE, MetricsCollector


log = Logger()


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
    """``/`` of the listener: ``rpc`` and ``metrics``, each behind the token if one is set."""

    def __init__(self, registry, collector, token_sha256=None, metrics_need_token=True):
        super().__init__()
        self.token_sha256 = token_sha256
        self.metrics_need_token = metrics_need_token
        self.putChild(b"rpc", JsonRpcResource(registry))
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


class ManagementSite(server.Site):
    """The Site of the listener: quiet (no access log lines, no tracebacks shown)."""

    noisy = False
    displayTracebacks = False

    def log(self, request):
        """No access log: scrapes would flood it; RPC calls are logged at debug level."""


def make_site(root):
    """The Site for the service tree ``root`` (its registry, metrics and ``cfg.http``)."""
    cfg = root.cfg.http
    return ManagementSite(ManagementRoot(root.registry, MetricsCollector(root),
                                         cfg.token_sha256, cfg.metrics_need_token))


class HttpService(ListeningService):
    """Listens for JSON-RPC and metrics requests (``http.*`` in the config)."""

    name = "http"

    def _listen(self):
        host, port = self.cfg.listen
        self.port = self._reactor.listenTCP(port, make_site(self.root), interface=host)
        bound = self.port.getHost()
        log.info("listening on http:{host}:{port}", host=bound.host, port=bound.port)
