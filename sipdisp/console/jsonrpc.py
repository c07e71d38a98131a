"""JSON-RPC 2.0 over HTTP POST for the command registry (like Kamailio's
jsonrpcs or OpenSIPS's mi_http)::

    curl -s -H 'Content-Type: application/json' \\
        -d '{"jsonrpc": "2.0", "method": "core.version", "id": 1}' http://127.0.0.1:5064/rpc

``params`` is an array (positional) or an object (by name); string values
are converted to the command's declared types.  Batches are run together
and answered in order; notifications (no ``id``) get no answer, and a
request made only of notifications gets HTTP 204.  Error codes follow the
specification: -32700 parse error, -32600 invalid request, -32601 unknown
method, -32602 bad arguments (a CommandError), -32603 internal error.

A body that is not JSON, nests arrays and objects deeper than
``http.max_json_depth``, or uses NaN/Infinity (not JSON) is answered -32700
with HTTP 400; nothing a client sends is logged with a traceback, only a
command that fails on its own (-32603) is.
"""

import json

from twisted.internet import defer
from twisted.web import resource, server

from ..commands import CommandError
from ..logs import Logger

log = Logger()

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

MAX_BODY = 1 << 20  # bytes; larger requests get HTTP 413 (http.max_body_size)
MAX_DEPTH = 32  # nesting of arrays/objects (http.max_json_depth)


class RpcError(Exception):
    """A JSON-RPC error with its code (and optional ``data``)."""

    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def error_response(id, code, message, data=None):
    """A JSON-RPC error response object."""
    error = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": id}


def _valid_id(value):
    """True for a JSON-RPC id: a string, a number (not a boolean) or null."""
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


def _jsonable(value):
    """Fallback for json.dumps: sets and tuples as lists, bytes as text, the rest as str."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def dumps(value):
    """JSON text of a response (non-JSON values become strings)."""
    return json.dumps(value, default=_jsonable, ensure_ascii=False)


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def nesting_depth(value, limit):
    """How deep arrays and objects nest in ``value``, counted up to ``limit + 1``
    (iterative: a deep value must not exhaust the Python stack)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        stack.extend((child, depth + 1) for child in item
                     if isinstance(child, (list, dict)))
    return deepest


def parse(body, max_depth=MAX_DEPTH):
    """The JSON value of ``body`` (bytes); ValueError (with a message for the
    client) if it is not JSON or nests deeper than ``max_depth``."""
    # cheap test first: a body with few brackets cannot nest deeply
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return json.loads(body, parse_constant=_refuse_constant)
    try:
        payload = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:  # the C decoder's own guard, at about 1000 levels
        raise ValueError(f"nesting deeper than {max_depth} levels") from None
    if nesting_depth(payload, max_depth) > max_depth:
        raise ValueError(f"nesting deeper than {max_depth} levels")
    return payload


class Dispatcher:
    """Turns parsed JSON-RPC payloads into Deferred responses, over a CommandRegistry."""

    def __init__(self, registry, max_depth=MAX_DEPTH):
        self.registry = registry
        self.max_depth = max_depth

    def handle_text(self, body):
        """Deferred firing with the response text for the request ``body`` (bytes),
        or None when nothing is to be answered (notifications only).  A body
        that does not parse fires with a ParseFailure's response text."""
        try:
            payload = parse(body, self.max_depth)
        except (ValueError, UnicodeDecodeError) as exc:
            return defer.succeed(ParseFailure(str(exc)))
        d = self.handle(payload)
        return d.addCallback(lambda out: None if out is None else dumps(out))

    def handle(self, payload):
        """Deferred firing with the response (object, list, or None) for a parsed payload."""
        if isinstance(payload, list):
            if not payload:
                return defer.succeed(error_response(None, INVALID_REQUEST,
                                                    "Invalid Request", "empty batch"))
            d = defer.gatherResults([self.handle_one(item) for item in payload],
                                    consumeErrors=True)
            return d.addCallback(lambda rows: [r for r in rows if r is not None] or None)
        return self.handle_one(payload)

    def handle_one(self, request):
        """Deferred firing with the response to one request object (None for a notification)."""
        try:
            method, params, id, notify = self._validate(request)
        except RpcError as exc:
            rid = request.get("id") if isinstance(request, dict) else None
            if not _valid_id(rid):
                rid = None
            return defer.succeed(error_response(rid, exc.code, exc.message, exc.data))
        d = self._call(method, params)

        def ok(result):
            return None if notify else {"jsonrpc": "2.0", "result": result, "id": id}

        def failed(failure):
            if failure.check(RpcError):
                exc = failure.value
                return None if notify else error_response(id, exc.code, exc.message, exc.data)
            if failure.check(CommandError):
                return None if notify else error_response(id, INVALID_PARAMS, "Invalid params",
                                                          str(failure.value))
            log.failure("JSON-RPC {method} failed", failure, method=method)
            return None if notify else error_response(
                id, INTERNAL_ERROR, "Internal error",
                f"{failure.type.__name__}: {failure.getErrorMessage()}")

        return d.addCallbacks(ok, failed)

    def _validate(self, request):
        if not isinstance(request, dict):
            raise RpcError(INVALID_REQUEST, "Invalid Request", "a request must be an object")
        if request.get("jsonrpc") != "2.0":
            raise RpcError(INVALID_REQUEST, "Invalid Request", 'jsonrpc must be "2.0"')
        method = request.get("method")
        if not isinstance(method, str):
            raise RpcError(INVALID_REQUEST, "Invalid Request", "method must be a string")
        params = request.get("params", [])
        if not isinstance(params, (list, dict)):
            raise RpcError(INVALID_REQUEST, "Invalid Request", "params must be an array or object")
        notify = "id" not in request
        id = request.get("id")
        if not notify and not _valid_id(id):
            raise RpcError(INVALID_REQUEST, "Invalid Request",
                           "id must be a string, number or null")
        return method, params, id, notify

    def _call(self, method, params):
        if method not in self.registry:
            return defer.fail(RpcError(METHOD_NOT_FOUND, "Method not found", method))
        log.debug("rpc {method} {params!r}", method=method, params=params)
        try:
            if isinstance(params, dict):
                return self.registry.call(method, **{str(k): v for k, v in params.items()})
            return self.registry.call(method, *params)
        except CommandError as exc:  # bad arguments, found before the command ran
            return defer.fail(RpcError(INVALID_PARAMS, "Invalid params", str(exc)))
        except Exception as exc:  # noqa: BLE001
            # registry.call raises only while binding the arguments (the command's
            # own failures come in the Deferred): a value the type conversion
            # chokes on (int of a huge float) is the client's error, not a bug
            return defer.fail(RpcError(INVALID_PARAMS, "Invalid params",
                                       f"{method}: {type(exc).__name__}: {exc}"))


class ParseFailure(str):
    """The response text of a body that is not (acceptable) JSON; ``reason`` says why."""

    def __new__(cls, reason):
        text = super().__new__(cls, dumps(error_response(None, PARSE_ERROR, "Parse error",
                                                         reason)))
        text.reason = reason
        return text


class JsonRpcResource(resource.Resource):
    """``POST /rpc``: one JSON-RPC 2.0 request or a batch; other methods get 405.
    ``on_client_error(reason)`` is told of each body refused (413, parse error)."""

    isLeaf = True

    def __init__(self, registry, max_body=MAX_BODY, max_depth=MAX_DEPTH, on_client_error=None):
        super().__init__()
        self.dispatcher = Dispatcher(registry, max_depth)
        self.max_body = max_body
        self.on_client_error = on_client_error or (lambda reason: None)

    def render_GET(self, request):
        """Refuse: JSON-RPC comes by POST (405)."""
        request.setResponseCode(405)
        request.setHeader(b"allow", b"POST")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"POST a JSON-RPC 2.0 request here\n"

    def render_POST(self, request):
        """Answer the request or batch in the body, when its commands are done."""
        # the management channel refuses larger bodies from the headers; this
        # is the same limit for a resource served by any other Site
        body = request.content.read(self.max_body + 1)
        if len(body) > self.max_body:
            self.on_client_error(f"body larger than {self.max_body} bytes")
            request.setResponseCode(413)
            return _json_body(request, error_response(None, INVALID_REQUEST, "Invalid Request",
                                                      f"body larger than {self.max_body} bytes"))
        finished = []
        request.notifyFinish().addBoth(finished.append)
        d = self.dispatcher.handle_text(body)

        def respond(text):
            if finished:
                return  # the client went away
            if text is None:
                request.setResponseCode(204)
            else:
                if isinstance(text, ParseFailure):
                    self.on_client_error(text.reason)
                    request.setResponseCode(400)
                request.setHeader(b"content-type", b"application/json")
                request.write(text.encode("utf-8"))
            request.finish()

        def broken(failure):
            log.failure("JSON-RPC response failed", failure)
            if not finished:
                request.setResponseCode(500)
                request.finish()

        d.addCallback(respond).addErrback(broken)
        return server.NOT_DONE_YET


def _json_body(request, obj):
    request.setHeader(b"content-type", b"application/json")
    return dumps(obj).encode("utf-8")
