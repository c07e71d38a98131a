"""The private control endpoint of a worker process: the JSON-RPC of its
command registry on a Unix stream socket, one request per line answered by
one line, reachable only by the node's user (mode 0600).

A worker (environment ``SIPDISP_WORKER=k``, ``SIPDISP_WORKER_CONTROL=<path>``
set by the supervisor) serves this instead of the public SSH and HTTP
listeners; the supervisor answers those for the whole node by calling every
worker here (sipdisp/workers/control.py).  :func:`call_control` is that
client side.
"""

import json
import os

from twisted.application.service import Service
from twisted.internet import defer, protocol
from twisted.protocols.basic import LineOnlyReceiver

from ..logs import Logger
from .jsonrpc import Dispatcher

log = Logger()

WORKER_ENV = "SIPDISP_WORKER"
CONTROL_ENV = "SIPDISP_WORKER_CONTROL"

MAX_REQUEST = 1 << 20  # bytes of one request line a worker accepts
MAX_RESPONSE = 64 << 20  # bytes of one answer the caller accepts (a long tm.list)


def worker_environment(environ=None):
    """``(k, control_path)`` when this process is worker ``k`` of a node, else None."""
    environ = os.environ if environ is None else environ
    value = environ.get(WORKER_ENV)
    if not value:
        return None
    try:
        k = int(value)
    except ValueError:
        raise ValueError(f"{WORKER_ENV} must be a worker number, got {value!r}") from None
    path = environ.get(CONTROL_ENV)
    if not path:
        raise ValueError(f"{WORKER_ENV}={k} without {CONTROL_ENV}: the supervisor sets both")
    return k, path


class ControlProtocol(LineOnlyReceiver):
    """Answers each JSON-RPC line in order, one line per request (``null`` for a
    notification, so the caller never waits for nothing)."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_REQUEST

    def connectionMade(self):
        self._queue = defer.succeed(None)

    def lineReceived(self, line):
        """Run the request after the ones before it, then write its answer."""
        def run(_):
            return self.factory.dispatcher.handle_text(line)

        def answer(text):
            if self.transport is not None and self.connected:
                self.sendLine((text if text is not None else "null").encode("utf-8"))

        def broken(failure):
            log.failure("control request failed", failure)

        self._queue.addCallback(run).addCallback(answer).addErrback(broken)

    def lineLengthExceeded(self, line):
        """A request past MAX_REQUEST: the connection is closed, nothing is run."""
        log.warn("control: a request longer than {max} bytes; closing", max=MAX_REQUEST)
        self.transport.loseConnection()


class ControlFactory(protocol.Factory):
    """Builds ControlProtocol over one Dispatcher of the registry."""

    protocol = ControlProtocol
    noisy = False

    def __init__(self, registry):
        self.dispatcher = Dispatcher(registry)


class ControlService(Service):
    """Listens on the worker's control socket (a stale file from a killed
    worker is replaced; created under umask 0177, so mode 0600 from the start)."""

    name = "control"

    def __init__(self, registry, path, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.registry = registry
        self.path = path
        self.port = None

    def startService(self):
        """Bind the socket (mode 0600) and listen."""
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        try:
            os.unlink(self.path)  # left by a worker that was killed
        except FileNotFoundError:
            pass
        old = os.umask(0o177)
        try:
            self.port = self._reactor.listenUNIX(self.path, ControlFactory(self.registry),
                                                 mode=0o600, wantPID=False)
        finally:
            os.umask(old)
        log.info("listening on control:{path}", path=self.path)
        super().startService()

    def stopService(self):
        """Stop listening and remove the socket file."""
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        d = defer.maybeDeferred(port.stopListening)

        def unlink(result):
            try:
                os.unlink(self.path)
            except OSError:
                pass
            return result
        return d.addBoth(unlink)


class ControlDown(Exception):
    """The worker did not answer: not listening, closed, or past the timeout."""


class _Client(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_RESPONSE

    def connectionMade(self):
        self.sendLine(self.factory.request)

    def lineReceived(self, line):
        self.factory.finish(line)
        self.transport.loseConnection()

    def lineLengthExceeded(self, line):
        self.factory.fail(ControlDown(f"answer longer than {MAX_RESPONSE} bytes"))
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.factory.fail(ControlDown("closed without answering"))


class _ClientFactory(protocol.ClientFactory):
    noisy = False
    protocol = _Client

    def __init__(self, request):
        self.request = request
        self.deferred = defer.Deferred()

    def finish(self, line):
        if not self.deferred.called:
            self.deferred.callback(line)

    def fail(self, exc):
        if not self.deferred.called:
            self.deferred.errback(exc)

    def clientConnectionFailed(self, connector, reason):
        self.fail(ControlDown(reason.getErrorMessage()))


def call_control(reactor, path, request, timeout):
    """Deferred firing with the decoded JSON answer to ``request`` (a JSON-RPC
    object or batch) from the control socket at ``path``; fails with
    ControlDown when the worker is not there or does not answer within
    ``timeout`` seconds."""
    factory = _ClientFactory(json.dumps(request).encode("utf-8"))
    connector = reactor.connectUNIX(path, factory, timeout=max(1, int(timeout + 0.999)))

    def expire():
        factory.fail(ControlDown(f"no answer within {timeout:g} s"))
        connector.disconnect()

    timer = reactor.callLater(timeout, expire)

    def done(result):
        if timer.active():
            timer.cancel()
        return result

    def decode(line):
        try:
            return json.loads(line)
        except ValueError as exc:
            raise ControlDown(f"answer is not JSON: {exc}") from None

    return factory.deferred.addBoth(done).addCallback(decode)
