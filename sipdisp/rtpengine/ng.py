"""rtpengine's ``ng`` control protocol, sans-IO: requests matched to replies
by cookie, retransmission timers, several instances with weights, pings and
failover, as Kamailio's ``rtpengine`` module has them.

A request is ``<cookie> <bencoded dict>`` in one UDP datagram, its reply
``<cookie> <bencoded dict>`` with ``"result"``: ``"ok"``, ``"pong"`` or
``"error"`` (and ``"error-reason"``). A request not answered within
``timeout`` seconds is sent again, up to ``retries`` more times (Kamailio's
``rtpengine_tout_ms`` and ``rtpengine_retr``); an instance that leaves a
request unanswered that long is disabled, and the same request goes to the
next instance by weight (a new cookie). A disabled instance is pinged every
``ping_interval`` seconds and enabled again by its first pong. An ``error``
reply is the instance's answer, not a failure of the instance.

The call's instance is chosen by a hash of its Call-ID over the weights of
the instances that are up (Kamailio's ``select_rtpp_node``), so every
command of one call goes to the same instance while it stays up.

The owner sends datagrams through ``send(data, (host, port))`` and feeds
replies to :meth:`NgClient.on_datagram`; timers live in the core's heap
(``timer(owner, name)`` is :meth:`~sipdisp.proxy.interface.Core.timer`).
"""

import itertools
import os
import zlib

from twisted.internet import defer

from ..logs import Logger
from .bencode import BencodeError, decode, encode

log = Logger(namespace="sipdisp.rtpengine")


class NgError(Exception):
    """An ng command failed: ``reason`` says why; ``instance`` answered
    (an ``error`` result) or is None when no instance answered at all."""

    def __init__(self, reason, instance=None):
        super().__init__(reason)
        self.reason = reason
        self.instance = instance


class Instance:
    """One rtpengine ``udp:host:port`` with its weight, state and counters."""

    __slots__ = ("url", "host", "port", "weight", "up", "admin", "last_ping", "last_pong",
                 "requests", "errors", "timeouts", "disabled_at")

    def __init__(self, url, host, port, weight=1):
        self.url = url
        self.host = host
        self.port = port
        self.weight = weight
        self.up = True          # answers (pings, commands); False: timed out
        self.admin = True       # rtpengine.enable sets it; False: never chosen
        self.last_ping = None   # when the last ping was sent
        self.last_pong = None   # when an answer last came
        self.requests = 0
        self.errors = 0
        self.timeouts = 0
        self.disabled_at = None

    @property
    def usable(self):
        """Chosen for new commands: up and not disabled by the operator."""
        return self.up and self.admin

    @property
    def state(self):
        """``active``, ``inactive`` (stopped answering) or ``disabled`` (operator)."""
        if not self.admin:
            return "disabled"
        return "active" if self.up else "inactive"

    def snapshot(self):
        """What ``rtpengine.list`` shows of this instance."""
        return {"url": self.url, "weight": self.weight, "state": self.state,
                "last_ping": self.last_ping, "last_pong": self.last_pong,
                "requests": self.requests, "errors": self.errors, "timeouts": self.timeouts}

    def __repr__(self):
        return f"<Instance {self.url}={self.weight} {self.state}>"


def parse_sockets(text):
    """Instances of a Kamailio ``rtpengine_sock`` value:
    ``"udp:127.0.0.1:2223=2 udp:127.0.0.1:2224"`` (weight 1 when absent;
    ``udp:`` may be left out). ValueError naming the bad entry."""
    out = []
    for item in text.split():
        spec, _, weight = item.partition("=")
        try:
            w = int(weight) if weight else 1
        except ValueError:
            raise ValueError(f"bad weight in {item!r}") from None
        if w < 0:
            raise ValueError(f"bad weight in {item!r}")
        proto, sep, rest = spec.partition(":")
        if not sep or proto not in ("udp", "udp6"):
            if proto in ("tcp", "ws", "wss", "unix"):
                raise ValueError(f"{item!r}: only udp: ng sockets are supported")
            rest = spec  # host:port without a scheme
        host, sep, port = rest.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad socket {item!r} (udp:HOST:PORT[=WEIGHT])")
        out.append(Instance(f"udp:{host}:{port}", host, int(port), w))
    if not out:
        raise ValueError("no rtpengine socket given")
    return out


class _Pending:
    __slots__ = ("cookie", "command", "data", "instance", "tries", "tried", "deferred",
                 "call_id", "is_ping")

    def __init__(self, command, call_id, deferred, is_ping):
        self.command = command
        self.call_id = call_id
        self.deferred = deferred
        self.is_ping = is_ping
        self.cookie = None
        self.data = None
        self.instance = None
        self.tries = 0
        self.tried = []


class NgClient:
    """The ng requests of one proxy to a set of rtpengine instances."""

    def __init__(self, instances, send, timer, timeout=1.0, retries=5, ping_interval=10.0):
        self.instances = list(instances)
        self.send = send
        self.timer = timer
        self.timeout = timeout
        self.retries = retries
        self.ping_interval = ping_interval
        self.timers = {}  # the core's heap keeps our deadlines here
        self._pending = {}
        self._prefix = os.urandom(4).hex()
        self._seq = itertools.count(1)

    # -- choosing ----------------------------------------------------------------
    def instance_named(self, url):
        """The instance whose url (or ``host:port``) is ``url``, or None."""
        for inst in self.instances:
            if url in (inst.url, inst.url[4:]):
                return inst
        return None

    def select(self, call_id, exclude=()):
        """The instance for ``call_id``: a hash over the weights of the usable
        instances not in ``exclude``; None when none is left."""
        usable = [i for i in self.instances if i.usable and i.weight > 0 and i not in exclude]
        if not usable:
            return None
        total = sum(i.weight for i in usable)
        cut = zlib.crc32(call_id.encode("utf-8", "surrogateescape")) % total if call_id else 0
        for inst in usable:
            if cut < inst.weight:
                return inst
            cut -= inst.weight
        return usable[-1]

    # -- requests ----------------------------------------------------------------
    def request(self, command, call_id, now, instance=None):
        """Send ``command`` (a dict with ``"command"``) to ``instance`` (when
        given and usable) or the Call-ID's instance; a Deferred firing
        ``(instance, reply dict)``, or failing with :class:`NgError` (an
        ``error`` result, or every instance tried without an answer)."""
        d = defer.Deferred()
        p = _Pending(command, call_id, d, False)
        if instance is None or not instance.usable:
            instance = self.select(call_id)
        if instance is None:
            d.errback(NgError("no rtpengine instance is up"))
            return d
        self._send(p, instance, now)
        return d

    def ping(self, instance, now):
        """Send one ping to ``instance`` (whatever its state); a Deferred
        firing True (it answered) or False (it did not)."""
        d = defer.Deferred()
        p = _Pending({"command": "ping"}, None, d, True)
        instance.last_ping = now
        self._send(p, instance, now)
        return d

    def ping_all(self, now):
        """Ping every instance (the start-up and periodic round)."""
        return [self.ping(inst, now) for inst in self.instances]

    def _send(self, p, instance, now):
        p.instance = instance
        p.tries = 0
        p.tried.append(instance)
        p.cookie = f"{self._prefix}_{next(self._seq)}"
        p.data = p.cookie.encode("ascii") + b" " + encode(p.command)
        self._pending[p.cookie] = p
        if not p.is_ping:
            instance.requests += 1
        self._transmit(p, now)

    def _transmit(self, p, now):
        self.send(p.data, (p.instance.host, p.instance.port))
        self.timer(self, p.cookie).arm(now + self.timeout)

    def on_timer(self, name, now):
        """A retransmission deadline, or the ping round."""
        if name == "ping":
            self._ping_round(now)
            return
        p = self._pending.get(name)
        if p is None:
            return
        if p.tries < self.retries:
            p.tries += 1
            self._transmit(p, now)
            return
        del self._pending[name]
        inst = p.instance
        inst.timeouts += 1
        if p.is_ping:
            if inst.up:
                self._set_up(inst, False, now)
            p.deferred.callback(False)
            return
        if inst.up:
            self._set_up(inst, False, now)
        nxt = self.select(p.call_id, exclude=p.tried)
        if nxt is not None:
            log.info("rtpengine {url} did not answer {cmd}: trying {nxt}",
                     url=inst.url, cmd=p.command.get("command"), nxt=nxt.url)
            self._send(p, nxt, now)
            return
        p.deferred.errback(NgError("no rtpengine instance answered"))

    def _set_up(self, inst, up, now):
        inst.up = up
        if up:
            inst.disabled_at = None
            log.info("rtpengine {url} answers again: enabled", url=inst.url)
        else:
            inst.disabled_at = now
            log.warn("rtpengine {url} stopped answering: disabled until it answers a ping",
                     url=inst.url)

    def on_datagram(self, data, addr, now):
        """A reply from an instance: fire its request's Deferred. Garbage and
        replies to nothing pending (late retransmissions) are dropped."""
        cookie, sep, payload = bytes(data).partition(b" ")
        p = self._pending.pop(cookie.decode("ascii", "replace"), None) if sep else None
        if p is None:
            log.debug("rtpengine: reply to no pending request from {addr}", addr=addr)
            return
        self.timer(self, p.cookie).cancel()
        inst = p.instance
        inst.last_pong = now
        if not inst.up:
            self._set_up(inst, True, now)
        try:
            reply = decode(payload)
            if not isinstance(reply, dict):
                raise BencodeError("the reply is not a dictionary")
        except BencodeError as exc:
            inst.errors += 1
            log.warn("rtpengine {url}: unreadable reply ({exc})", url=inst.url, exc=exc)
            if p.is_ping:
                p.deferred.callback(False)
            else:
                p.deferred.errback(NgError(f"unreadable reply: {exc}", inst))
            return
        result = reply.get("result")
        if p.is_ping:
            p.deferred.callback(result == "pong")
            return
        if result == "error":
            inst.errors += 1
            p.deferred.errback(NgError(str(reply.get("error-reason", "error")), inst))
            return
        p.deferred.callback((inst, reply))

    # -- pings -------------------------------------------------------------------
    def start(self, now):
        """Ping every instance now and every ``ping_interval`` seconds."""
        self.ping_all(now)
        if self.ping_interval > 0:
            self.timer(self, "ping").arm(now + self.ping_interval)

    def stop(self):
        """Forget every timer (pending requests never complete after this)."""
        self.timers.clear()

    def _ping_round(self, now):
        self.ping_all(now)
        if self.ping_interval > 0:
            self.timer(self, "ping").arm(now + self.ping_interval)

    @property
    def pending(self):
        """Requests waiting for a reply."""
        return len(self._pending)
