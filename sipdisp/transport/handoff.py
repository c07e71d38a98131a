"""Hand-off of UDP datagrams between worker processes (issue 16, README
"Worker processes").

SO_REUSEPORT hashes each 4-tuple to one worker, so every call of one source
(a trunk, an SBC) would land on one worker. A worker that receives a
datagram on a shared UDP listener computes the datagram's owner from its
Call-ID (:func:`call_id_owner`); when another worker owns it, the datagram
goes to that worker unchanged with its source address and listener id, and
the owner feeds it to its switchboard exactly as if it had received it on
its own socket bound to the shared port (so its answers leave from the shared
port too).

The link between workers is a Unix stream socket per worker (mode 0600,
beside its control socket), one connection per sending worker, framed with a
4-byte length. Not datagrams: a Unix datagram socket queues only
``net.unix.max_dgram_qlen`` messages (10 by default) and would drop a burst;
a stream is bounded by its socket buffer (``workers.handoff_buffer``), beyond
which a datagram is dropped and counted as the network would drop it (the
sender retransmits).
"""

import os
import re
import socket
import struct
import zlib

from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from sipdisp.logs import Logger

log = Logger()

# the Call-ID header (long or compact form, any case) at the start of a line
_CALL_ID = re.compile(rb"\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.I)
_LENGTH = struct.Struct("!I")
#: seconds a worker whose socket could not be reached is skipped (its
#: datagrams handled where they land) before the next try
RETRY_DOWN = 1.0


def call_id(data):
    """The Call-ID value of a raw SIP message (bytes), or None: a scan of the
    header part only, no parse."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = len(data)
    match = _CALL_ID.search(data, 0, end)
    if match is None:
        return None
    value = match.group(1).strip()
    return value or None


def call_id_owner(data, count):
    """The worker (1..``count``) that owns a raw SIP message by its Call-ID
    (a stable hash, crc32 mod ``count``), or None when it has no Call-ID."""
    value = call_id(data)
    if value is None:
        return None
    return zlib.crc32(value) % count + 1


def _frame(listener_id, host, port, data):
    body = b"%d %s %d\n" % (listener_id, host.encode("ascii"), port) + data
    return _LENGTH.pack(len(body)) + body


class _Receiver(Protocol):
    """One sending worker's connection: length-prefixed frames in."""

    def __init__(self, handoff):
        self.handoff = handoff
        self._buf = b""

    def dataReceived(self, data):
        buf = self._buf + data if self._buf else data
        pos, size = 0, len(buf)
        handoff = self.handoff
        limit = handoff.max_frame
        while size - pos >= 4:
            (length,) = _LENGTH.unpack_from(buf, pos)
            if length > limit:
                log.warn("hand-off frame of {n} bytes from another worker; closing", n=length)
                self.transport.loseConnection()
                self._buf = b""
                return
            if size - pos - 4 < length:
                break
            handoff.received(buf[pos + 4:pos + 4 + length])
            pos += 4 + length
        self._buf = buf[pos:]

    def connectionLost(self, reason=None):
        self._buf = b""
        self.handoff = None  # no cycle left between the handoff and a dead link


@implementer(IPushProducer)
class _Sender(Protocol):
    """This worker's connection to one owner; paused while its buffers are full."""

    def __init__(self, handoff, owner):
        self.handoff = handoff
        self.owner = owner
        self.paused = False

    def connectionMade(self):
        self.transport.registerProducer(self, True)
        self.handoff.link_made(self)

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False

    def stopProducing(self):
        self.paused = True

    def dataReceived(self, data):
        pass  # the owner never answers on the link

    def connectionLost(self, reason=None):
        handoff, self.handoff = self.handoff, None
        if handoff is not None:
            handoff.link_lost(self)


class _ReceiverFactory(Factory):
    def __init__(self, handoff):
        self.handoff = handoff

    def buildProtocol(self, addr):
        return _Receiver(self.handoff)


class _SenderFactory(Factory):
    def __init__(self, handoff, owner):
        self.handoff = handoff
        self.owner = owner

    def buildProtocol(self, addr):
        return _Sender(self.handoff, self.owner)


class Handoff:
    """The hand-off of worker ``me`` of ``count``: ``paths[k]`` is worker k's
    hand-off socket. Shared UDP listeners' protocols register in
    ``protocols`` (listener id -> protocol with ``deliver(data, addr)``).

    Counters (in ``switchboard.count``, so in ``stats.get`` and /metrics):
    ``udp_handoff_sent``, ``udp_handoff_received``, ``udp_handoff_failed``
    (owner's socket unreachable: handled here), ``udp_handoff_dropped``
    (the link's buffers full: dropped like a lost datagram)."""

    def __init__(self, reactor, switchboard, me, count, paths, max_message_size,
                 buffer_size=4 * 1024 * 1024):
        self._reactor = reactor
        self.switchboard = switchboard
        self.me = me
        self.count = count
        self.paths = paths
        self.buffer_size = buffer_size
        self.max_frame = max_message_size + 128
        self.protocols = {}
        self._links = {}
        self._down_until = {}
        self._port = None

    # -- the receiving side -------------------------------------------------------
    def start(self):
        """Listen on this worker's hand-off socket (mode 0600)."""
        path = self.paths[self.me]
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        try:
            os.unlink(path)  # left by a worker that was killed
        except FileNotFoundError:
            pass
        old = os.umask(0o177)
        try:
            self._port = self._reactor.listenUNIX(path, _ReceiverFactory(self), mode=0o600,
                                                  wantPID=False)
        finally:
            os.umask(old)
        log.info("UDP hand-off: worker {me} of {n} listening on {path}", me=self.me,
                 n=self.count, path=path)

    def stop(self):
        """Close the links and the listening socket, and remove its file."""
        for link in list(self._links.values()):
            if link.transport is not None:
                link.transport.loseConnection()
        self._links.clear()
        port, self._port = self._port, None
        if port is not None:
            port.stopListening()
            try:
                os.unlink(self.paths[self.me])
            except OSError:
                pass

    def received(self, frame):
        """A datagram another worker handed over: deliver it as received here."""
        head, sep, data = frame.partition(b"\n")
        try:
            lid, host, port = head.split(b" ")
            protocol = self.protocols[int(lid)]
            addr = (host.decode("ascii"), int(port))
        except (ValueError, KeyError, UnicodeDecodeError):
            self.switchboard.count("udp_handoff_bad", "bad hand-off frame from another "
                                   "worker ({head!r}); dropped", head=head[:80])
            return
        self.switchboard.count("udp_handoff_received")
        protocol.deliver(data, addr)

    # -- the sending side -----------------------------------------------------------
    def offer(self, data, addr, listener):
        """Hand ``data`` (from ``addr`` on ``listener``) to its owner when that
        is another worker: True if it is gone (or dropped), False to handle it here."""
        owner = call_id_owner(data, self.count)
        if owner is None or owner == self.me:
            return False
        link = self._links.get(owner)
        if link is None:
            link = self._connect(owner)
            if link is None:
                return False
        if link.paused:
            self.switchboard.count("udp_handoff_dropped", "hand-off to worker {k}: its "
                                   "buffers are full (workers.handoff_buffer); datagrams "
                                   "dropped", k=owner)
            return True
        link.transport.write(_frame(listener.id, addr[0], addr[1], data))
        self.switchboard.count("udp_handoff_sent")
        return True

    def _connect(self, owner):
        now = self._reactor.seconds()
        if self._down_until.get(owner, 0.0) > now:
            self.switchboard.count("udp_handoff_failed")
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.buffer_size)
            sock.settimeout(0.05)  # a Unix connect does not wait unless the backlog is full
            sock.connect(self.paths[owner])
            sock.setblocking(False)
            self._reactor.adoptStreamConnection(sock.fileno(), socket.AF_UNIX,
                                                _SenderFactory(self, owner))
        except OSError as exc:
            self._down_until[owner] = now + RETRY_DOWN
            self.switchboard.count("udp_handoff_failed", "hand-off to worker {k} "
                                   "impossible ({err}); its datagrams are handled here "
                                   "until it is back", k=owner, err=exc.strerror or exc)
            return None
        finally:
            sock.close()  # the reactor holds its own duplicate
        link = self._links.get(owner)
        if link is None:  # adopted but not made (should not happen): handle here
            self.switchboard.count("udp_handoff_failed")
        else:
            self._down_until.pop(owner, None)
            log.info("UDP hand-off: worker {me} linked to worker {k}", me=self.me, k=owner)
        return link

    def link_made(self, link):
        """A link to an owner is connected."""
        self._links[link.owner] = link

    def link_lost(self, link):
        """A link to an owner closed (the owner stopped): forget it."""
        if self._links.get(link.owner) is link:
            del self._links[link.owner]
            if self._port is not None:
                log.info("UDP hand-off: link to worker {k} closed", k=link.owner)
