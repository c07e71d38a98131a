"""The short path from epoll to a marked UDP port's doRead
(sipdisp/transport/fastpoll.py), on a real epoll reactor and real sockets:
marked ports get their datagrams, other descriptors still take Twisted's
path, and a port whose read fails is logged and dropped as Twisted does."""

import socket

import pytest
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import MemoryReactor

from sipdisp.transport import fastpoll


class Collect(DatagramProtocol):
    def __init__(self):
        self.got = []

    def datagramReceived(self, data, addr):
        self.got.append(data)


@pytest.fixture
def reactor():
    r = EPollReactor()
    yield r
    for reader in list(r.getReaders()):
        r.removeReader(reader)
    r._poller.close()


def spin(reactor, until, rounds=50):
    for _ in range(rounds):
        if until():
            return
        reactor.doIteration(0.05)
    assert until()


def test_marked_and_unmarked_ports_both_get_their_datagrams(reactor):
    through_twisted = []
    original = reactor._doReadOrWrite

    def counted(selectable, fd, event):
        through_twisted.append(selectable)
        return original(selectable, fd, event)
    reactor._doReadOrWrite = counted
    assert fastpoll.install(reactor) is True
    assert fastpoll.install(reactor) is True  # once is enough; twice changes nothing
    fast, slow = Collect(), Collect()
    fast_port = fastpoll.mark(reactor.listenUDP(0, fast, interface="127.0.0.1"))
    slow_port = reactor.listenUDP(0, slow, interface="127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for n in range(3):
            s.sendto(b"fast %d" % n, ("127.0.0.1", fast_port.getHost().port))
            s.sendto(b"slow %d" % n, ("127.0.0.1", slow_port.getHost().port))
        spin(reactor, lambda: len(fast.got) == 3 and len(slow.got) == 3)
    assert fast.got == [b"fast 0", b"fast 1", b"fast 2"]
    assert slow.got == [b"slow 0", b"slow 1", b"slow 2"]
    # only the unmarked port went Twisted's long way
    assert slow_port in through_twisted and fast_port not in through_twisted


def test_a_port_whose_read_fails_is_logged_and_dropped_as_twisted_drops_it(reactor):
    fastpoll.install(reactor)
    port = fastpoll.mark(reactor.listenUDP(0, Collect(), interface="127.0.0.1"))
    lost = []
    port.connectionLost = lost.append

    def broken():
        raise OSError(5, "Input/output error")
    port.doRead = broken
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"x", ("127.0.0.1", port.getHost().port))
    spin(reactor, lambda: lost)
    assert port not in reactor.getReaders()
    assert "Input/output error" in str(lost[0].value)


def test_a_reactor_without_epoll_is_left_alone():
    memory = MemoryReactor()
    assert fastpoll.install(memory) is False
    assert not hasattr(memory, "doPoll")
