"""Fakes for edge tests: a recording stand-in for ProxyCore, a datagram port
(MemoryReactor has no UDP), a clock that also resolves names, and a real
ProxyCore running the shipped route, wired to a Switchboard on a task.Clock."""

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from sipdisp.proxy import ProxyCore
from sipdisp.proxy.target import Flows, Listener
from sipdisp.transport.edge import Switchboard
from tests.support.shipped import shipped_route


class RecordingCore:
    """Stands in for ProxyCore: records every call, returns ``replies`` from
    ``receive`` and follows a scripted list of ``deadlines``."""

    def __init__(self):
        self.received = []
        self.rejected = []
        self.replies = []
        self.deadlines = []
        self.timer_calls = []
        self.timer_output = []
        self.flows = Flows()

    def receive(self, data, source, now):
        """Record the message; answer ``replies``."""
        self.received.append((data, source, now))
        return list(self.replies)

    def reject(self, exc, source):
        """Record the unframeable message."""
        self.rejected.append((exc, source))
        return []

    def next_deadline(self):
        """The earliest scripted deadline, or None."""
        return min(self.deadlines) if self.deadlines else None

    def on_timers(self, now):
        """Record the call and drop the deadlines now due; answer ``timer_output``."""
        self.timer_calls.append(now)
        self.deadlines = [d for d in self.deadlines if d > now]
        return list(self.timer_output)


class FakeDatagramPort:
    """What the switchboard uses of a listening UDP port: getHost(), and
    write() or its socket's sendto(); both record into ``written``."""

    def __init__(self, host="127.0.0.1", port=5060):
        self.written = []
        self.error = None
        self._host = IPv4Address("UDP", host, port)
        self.socket = self  # the switchboard may write to the socket directly

    def write(self, data, addr):
        """Record one datagram (or raise ``error``)."""
        if self.error is not None:
            raise self.error
        self.written.append((data, addr))

    sendto = write

    def getHost(self):
        """The bound address."""
        return self._host


class ResolvingClock(task.Clock):
    """task.Clock that also resolves host names from a fixed table."""

    def __init__(self, names=None):
        super().__init__()
        self.names = dict(names or {})

    def resolve(self, name, timeout=None):
        """Look ``name`` up in the table."""
        if name in self.names:
            return defer.succeed(self.names[name])
        return defer.fail(OSError(f"unknown host {name}"))


def peer_transport(host="127.0.0.1", port=40000, local_port=5060):
    """A StringTransport whose peer is ``host:port``."""
    return StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", local_port),
                           peerAddress=IPv4Address("TCP", host, port))


def real_stack(protos=("udp", "tcp", "ws"), next_hop="sip:127.0.0.1:5080", max_connections=16,
               branch_timeout=2.0, clock=None):
    """A real ProxyCore running the shipped route (dispatching to ``next_hop``) behind
    a Switchboard on a clock, one listener per proto (UDP ones backed by
    FakeDatagramPort); returns (switchboard, listeners, clock)."""
    clock = clock or ResolvingClock()
    listeners = {}
    for i, proto in enumerate(protos, 1):
        listeners[proto] = Listener(i, proto, "127.0.0.1", 5060 if proto != "ws" else 5062)
    core = ProxyCore(list(listeners.values()), None)
    shipped_route(core, [next_hop], branch_timeout=branch_timeout)
    board = Switchboard(core, clock, max_connections)
    for proto, lst in listeners.items():
        if proto == "udp":
            board.udp_ports[lst.id] = FakeDatagramPort(lst.host, lst.port)
    return board, listeners, clock
