"""An in-memory UAC <-> ProxyCore <-> UAS link with an explicit clock.

Nothing here touches a socket or a reactor: peers hand bytes to the core
with ``Peer.send``, everything the core emits is delivered to the peer whose
``(proto, host, port)`` it is addressed to, and ``Link.advance(dt)`` steps
``now`` through every deadline the core asked for, firing its timers in
order. ``Link.drop(...)`` loses the next matching datagram, in either
direction, to simulate packet loss.

    link = Link.udp()                      # UAC 10.0.0.1:5070, proxy :5060, UAS :5080,
                                           # the shipped route
    invite = link.uac.send(sipmsg.request("INVITE", ...))
    fwd = link.uas.expect("INVITE")        # what the proxy forwarded
    link.uas.send(sipmsg.response_to(fwd, 180, "Ringing"))
    link.advance(0.5)                      # timers fire as the clock passes them
"""

from sipdisp.proxy import Listener, ProxyCore, Target
from sipdisp.sip import parse_message
from tests.support.shipped import shipped_route

PROXY_HOST = "127.0.0.1"


class Peer:
    """One remote SIP element: where its datagrams come from and its inbox.

    ``conn`` is set for a stream peer (the connection id the edge would give
    it); its messages then arrive at the core tagged with that connection.
    """

    def __init__(self, link, name, proto, host, port, listener, conn=None):
        self.link = link
        self.name = name
        self.proto = proto
        self.host = host
        self.port = port
        self.listener = listener
        self.conn = conn
        self.inbox = []  # raw bytes, in arrival order, not yet taken

    @property
    def source(self):
        """This peer as the ``source`` Target of what it sends."""
        return Target(self.proto, self.host, self.port, self.conn, self.listener)

    @property
    def uri(self):
        """A SIP URI naming this peer (for Contact and next-hop settings)."""
        params = "" if self.proto == "udp" else f";transport={self.proto}"
        return f"sip:{self.host}:{self.port}{params}"

    def send(self, data):
        """Send ``data`` to the proxy (unless a drop rule eats it); returns ``data``."""
        self.link.deliver_to_core(self, data)
        return data

    def take(self):
        """Remove and return every message received so far, as raw bytes."""
        out, self.inbox = self.inbox, []
        return out

    def messages(self):
        """Every message received so far, parsed, and forget them."""
        return [parse_message(data) for data in self.take()]

    def expect(self, what):
        """Take exactly one message and check its method (str) or status (int).

        Returns it as raw bytes; fails loudly when the inbox holds something else.
        """
        got = self.take()
        summary = [_first_line(d) for d in got]
        assert len(got) == 1, f"{self.name} expected one {what!r}, got {summary}"
        msg = parse_message(got[0])
        if isinstance(what, int):
            assert not msg.is_request and msg.status == what, \
                f"{self.name} expected {what}, got {summary}"
        else:
            assert msg.is_request and msg.method == what, \
                f"{self.name} expected {what}, got {summary}"
        return got[0]

    def expect_nothing(self):
        """Assert that nothing arrived since the last take."""
        got = self.take()
        assert not got, f"{self.name} expected nothing, got {[_first_line(d) for d in got]}"

    def __repr__(self):
        return f"<Peer {self.name} {self.proto}:{self.host}:{self.port}>"


class Link:
    """A ProxyCore and the peers around it, with an explicit clock ``now``."""

    def __init__(self, core, now=0.0):
        self.core = core
        self.now = now
        self.peers = {}
        self.stray = []         # (bytes, Target) sent to nobody we know
        self.dropped = []       # (direction, bytes) lost on purpose
        self.sent_by_core = []  # (bytes, Target), everything the core emitted
        self._drop_rules = []

    # -- construction ------------------------------------------------------------
    @classmethod
    def udp(cls, route=None, next_hop_ports=(5080,), branch_timeout=None, failover_codes=None,
            **core_args):
        """A UDP proxy on 127.0.0.1:5060 with a UAC at 10.0.0.1:5070 and a UAS at
        127.0.0.1:``next_hop_ports[0]`` (other ports' peers are the test's to add).

        The core runs ``route`` when given, else the shipped etc/sipdisp.yaml
        route dispatching over ``next_hop_ports`` as set 0, with
        ``branch_timeout`` and ``failover_codes`` as ``proxy.branch_timeout``
        and ``proxy.failover_codes``; its dispatcher is ``link.dispatcher``.
        """
        listener = Listener("udp0", "udp", PROXY_HOST, 5060)
        link = cls(ProxyCore([listener], route, **core_args))
        link.dispatcher = None
        if route is None:
            link.dispatcher = shipped_route(
                link.core, [f"sip:{PROXY_HOST}:{port}" for port in next_hop_ports],
                branch_timeout=branch_timeout, failover_codes=failover_codes)
        link.listener = listener
        link.uac = link.add_peer("uac", "udp", "10.0.0.1", 5070, listener)
        link.uas = link.add_peer("uas", "udp", PROXY_HOST, next_hop_ports[0], listener)
        return link

    def add_peer(self, name, proto, host, port, listener, conn=None):
        """Add a peer the core can reach at ``(proto, host, port)``."""
        peer = Peer(self, name, proto, host, port, listener, conn)
        self.peers[(proto, host, port)] = peer
        if conn is not None:
            self.peers[("conn", conn)] = peer
        return peer

    # -- loss ---------------------------------------------------------------------
    def drop(self, direction="any", match=None, count=1):
        """Lose the next ``count`` datagrams going ``direction`` ("to-core",
        "from-core" or "any") whose bytes contain ``match`` (anything if None)."""
        if isinstance(match, str):
            match = match.encode()
        self._drop_rules.append([direction, match, count])

    def _should_drop(self, direction, data):
        for rule in self._drop_rules:
            want, match, count = rule
            if count > 0 and want in ("any", direction) and (match is None or match in data):
                rule[1:] = [match, count - 1]
                self.dropped.append((direction, data))
                return True
        return False

    # -- moving bytes ---------------------------------------------------------------
    def deliver_to_core(self, peer, data):
        """Hand ``data`` from ``peer`` to the core and deliver what it sends."""
        if self._should_drop("to-core", data):
            return
        self._dispatch(self.core.receive(data, peer.source, self.now))

    def _dispatch(self, out):
        for data, target in out:
            self.sent_by_core.append((data, target))
            if self._should_drop("from-core", data):
                continue
            peer = None
            if target.conn is not None:
                peer = self.peers.get(("conn", target.conn))
            if peer is None:
                peer = self.peers.get((target.proto, target.host, target.port))
            if peer is None:
                self.stray.append((data, target))
            else:
                peer.inbox.append(data)

    # -- time ---------------------------------------------------------------------------
    def advance(self, dt):
        """Move the clock forward by ``dt`` seconds, firing each due timer at its
        deadline (as the edge's single reactor timer would)."""
        end = self.now + dt
        while True:
            deadline = self.core.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self._dispatch(self.core.on_timers(self.now))
        self.now = end

    def advance_to(self, when):
        """Move the clock to absolute time ``when``."""
        self.advance(max(0.0, when - self.now))


def _first_line(data):
    return data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
