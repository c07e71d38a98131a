"""SIP over UDP: each datagram is one message (RFC 3261 section 18)."""

from twisted.internet.protocol import DatagramProtocol
from sipdisp.logs import Logger

from ..proxy.target import Target

log = Logger()


class SipDatagramProtocol(DatagramProtocol):
    """Hands every datagram to the switchboard, tagged with its listener.

    ``handoff`` (a shared listener of a worker process, transport/handoff.py)
    passes a datagram another worker owns by its Call-ID to that worker."""

    handoff = None

    def __init__(self, switchboard, listener):
        self.switchboard = switchboard
        self.listener = listener

    def datagramReceived(self, data, addr):
        if len(data) < 4:
            return  # keep-alive CRLFs and the like
        handoff = self.handoff
        if handoff is not None and handoff.offer(data, addr, self.listener):
            return
        self.deliver(data, addr)

    def deliver(self, data, addr):
        """Feed one datagram from ``addr`` to the switchboard (also what the
        hand-off calls for a datagram another worker received for this one)."""
        host, port = addr[0], addr[1]
        try:
            self.switchboard.receive(data, Target("udp", host, port, None, self.listener))
        except Exception:
            log.failure("dropping datagram from {host}:{port}", host=host, port=port)
