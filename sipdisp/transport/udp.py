"""SIP over UDP: each datagram is one message (RFC 3261 section 18)."""

from twisted.internet.protocol import DatagramProtocol
from sipdisp.logs import Logger

from ..proxy.target import Target

log = Logger()


class SipDatagramProtocol(DatagramProtocol):
    """Hands every datagram to the switchboard, tagged with its listener."""

    def __init__(self, switchboard, listener):
        self.switchboard = switchboard
        self.listener = listener

    def datagramReceived(self, data, addr):
        if len(data) < 4:
            return  # keep-alive CRLFs and the like
        host, port = addr[0], addr[1]
        try:
            self.switchboard.receive(data, Target("udp", host, port, None, self.listener))
        except Exception:
            log.failure("dropping datagram from {host}:{port}", host=host, port=port)
