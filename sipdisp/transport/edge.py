"""The Twisted edge around the sans-IO core: one place that feeds received
messages to the core, sends what it returns, keeps the connection table and
arms the single timer the core asks for.
"""

import errno
import itertools
from collections import Counter
from dataclasses import dataclass, fields, replace

from twisted.internet.abstract import isIPAddress, isIPv6Address
from sipdisp.logs import Logger, RepeatLimiter

from ..proxy.target import Target
from .ratelimit import TokenBucket

log = Logger()


@dataclass
class ConnectionLimits:
    """The ``connections`` section as the transports use it (the defaults are
    the schema's). Times in seconds, sizes in bytes; 0 for ``max_per_source``
    and the message rates means no limit."""

    max_incoming: int = 2048
    max_outgoing: int = 1024
    max_per_source: int = 64
    idle_timeout: float = 3605.0
    first_message_timeout: float = 10.0
    idle_timeout_before_message: float = 30.0
    max_write_buffer: int = 1024 * 1024
    send_timeout: float = 10.0
    max_header_size: int = 16384
    max_messages_per_second: int = 1000
    max_messages_per_source: int = 2000

    @classmethod
    def from_config(cls, section):
        """Limits from a loaded ``cfg.connections`` (``max`` is the incoming cap)."""
        kwargs = {f.name: getattr(section, f.name) for f in fields(cls)
                  if f.name != "max_incoming"}
        return cls(max_incoming=section.max, **kwargs)


class Switchboard:
    """Connects listeners and connections to a ProxyCore.

    ``udp_ports`` maps listener id -> bound UDP port object; stream
    connections register themselves with ``add_connection``. ``connector``
    (set by the service) opens outgoing TCP/TLS connections.
    """

    def __init__(self, core, reactor, max_connections=None, limits=None):
        self.core = core
        # the core's table of open connections, which this edge keeps
        self.flows = core.flows
        self._reactor = reactor
        limits = limits or ConnectionLimits()
        if max_connections is not None:
            limits = replace(limits, max_incoming=max_connections)
        self.limits = limits
        self.udp_ports = {}
        self.connections = self.flows.connections
        self._by_addr = {}
        # incoming and outgoing connections have separate caps, so a flood of
        # idle clients cannot take the slots the proxy needs to reach its next hop
        self.incoming = 0
        self.outgoing = 0
        self._per_source = Counter()  # peer host -> open incoming connections
        # peer host -> TokenBucket of connections.max_messages_per_source, kept
        # while the host has an incoming connection open (so bounded by them)
        self._source_rates = {}
        # a flood of refusals must not flood the log: one line per limit a minute
        self.limit_log = RepeatLimiter(log, limit=1, interval=60.0, clock=reactor.seconds)
        # counters of refusals and forced closes when the core keeps none
        # (tests' RecordingCore); ProxyCore's show in /metrics
        self._stats = Counter()
        self._conn_ids = itertools.count(1)
        self._timer = None
        self._timer_at = None
        self.connector = None
        self.send_errors = 0
        self._is_ip = {}
        # host -> Deferred of an address, for names the core leaves to the
        # edge (subsystems' pings): the service sets sipdisp.dns's cached one,
        # the reactor's resolver otherwise
        self.resolve_name = None
        # check(data, host, now) / accept(host, now) of sipdisp.flood's guard,
        # set by the service; None: nothing is checked
        self.flood = None

    # -- receiving ---------------------------------------------------------------
    def receive(self, data, source):
        """Feed one message to the core and act on its output."""
        now = self._reactor.seconds()
        # flood/: banned sources, floods and scanners are dropped before parsing
        flood = self.flood
        if flood is not None and not flood.check(data, source.host, now):
            return
        out = self.core.receive(data, source, now)
        if out:
            self.send_all(out)
        self._rearm()

    def reject(self, exc, source):
        """Let the core answer a message the transport could not frame."""
        out = self.core.reject(exc, source)
        if out:
            self.send_all(out)

    def send_all(self, out):
        """Send ``[(bytes, Target)]``."""
        for data, target in out:
            try:
                self.send(data, target)
            except Exception:
                self.send_errors += 1
                log.failure("send to {target!r} failed", target=target)

    # -- timers ------------------------------------------------------------------
    def _rearm(self):
        deadline = self.core.next_deadline()
        if deadline is None:
            return
        timer = self._timer
        if timer is not None and timer.active():
            if self._timer_at <= deadline:
                return
            timer.cancel()
        delay = max(0.0, deadline - self._reactor.seconds())
        self._timer_at = deadline
        self._timer = self._reactor.callLater(delay, self._fire)

    def _fire(self):
        self._timer = None
        out = self.core.on_timers(self._reactor.seconds())
        if out:
            self.send_all(out)
        self._rearm()

    def connect_failed(self, target):
        """An outgoing connection to ``target`` failed: let the core fail its
        branches over to another target of the same name."""
        transport_failed = getattr(self.core, "transport_failed", None)
        if transport_failed is not None:
            out = transport_failed(target, self._reactor.seconds())
            if out:
                self.send_all(out)
            self._rearm()

    def stop(self):
        """Cancel the pending timer (service shutdown)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def wake(self):
        """Send what the core queued outside a receive or timer event (a
        service arming timers or sending pings) and re-arm for its deadlines."""
        out = self.core.layer.drain()
        if out:
            self.send_all(out)
        self._rearm()

    # -- sending -----------------------------------------------------------------
    def send(self, data, target):
        """Send ``data`` to ``target``: UDP socket, known connection, or a new one."""
        host = target.host
        is_ip = self._is_ip.get(host)
        if is_ip is None:
            is_ip = isIPAddress(host) or isIPv6Address(host)
            if len(self._is_ip) > 10000:  # hosts come from the network: stay bounded
                self._is_ip.clear()
            self._is_ip[host] = is_ip
        if not is_ip:
            d = (self.resolve_name or self._reactor.resolve)(host)
            d.addCallback(lambda ip: self.send(data, Target(
                target.proto, ip, target.port, target.conn, target.listener)))
            d.addErrback(lambda f: log.warn("cannot resolve {host}: {err}", host=host,
                                            err=f.getErrorMessage()))
            return
        if target.proto == "udp":
            port = self._udp_port_for(target)
            if port is None:
                self.send_errors += 1
                log.warn("no UDP socket to send to {target!r}", target=target)
                return
            try:
                # straight to the socket: Port.write re-validates the address
                # with isIPAddress on every datagram, a measurable cost here.
                port.socket.sendto(data, (host, target.port))
            except OSError as exc:
                if exc.errno != errno.ECONNREFUSED:  # ICMP from an earlier send
                    self.send_errors += 1
                    log.warn("UDP send to {host}:{port} failed: {exc}", host=host,
                             port=target.port, exc=exc)
            return
        conn = None
        if target.conn is not None:
            conn = self.connections.get(target.conn)
        if conn is None:
            conn = self._by_addr.get((target.proto, host, target.port))
        if conn is not None:
            conn.send_message(data)
            return
        if target.proto in ("tcp", "tls") and self.connector is not None:
            self.connector(target, data)
            return
        self.send_errors += 1
        log.warn("no connection to {target!r}; message dropped", target=target)

    def _udp_port_for(self, target):
        listener = target.listener
        if listener is not None and listener.proto == "udp":
            port = self.udp_ports.get(listener.id)
            if port is not None:
                return port
        want_v6 = ":" in target.host
        fallback = None
        for lst_id, port in self.udp_ports.items():
            is_v6 = ":" in port.getHost().host
            if is_v6 == want_v6:
                return port
            fallback = fallback or port
        return fallback

    # -- the connection table ----------------------------------------------------
    @property
    def max_connections(self):
        """The incoming connection cap (``connections.max``)."""
        return self.limits.max_incoming

    @property
    def stats(self):
        """The counter limits are counted in: the core's, so they reach /metrics."""
        stats = getattr(self.core, "stats", None)
        return self._stats if stats is None else stats

    def count(self, name, fmt=None, **kw):
        """Count event ``name`` and, for a tripped limit, log ``fmt`` (rate-limited)."""
        self.stats[name] += 1
        if fmt is not None:
            self.limit_log.warn(name, fmt, **kw)

    def can_accept(self):
        """False when the incoming connection limit is reached."""
        return self.incoming < self.limits.max_incoming

    def can_connect(self):
        """False when the outgoing connection limit is reached."""
        return self.outgoing < self.limits.max_outgoing

    def admit(self, host, port):
        """Decide on a new incoming connection from ``host:port``: True if a
        slot is free, else count and log the refusal and return False."""
        flood = self.flood
        if flood is not None and not flood.accept(host, self._reactor.seconds()):
            return False  # a banned source (counted by the guard)
        if self.incoming >= self.limits.max_incoming:
            self.count("connections_refused_max", "incoming connection limit "
                       "(connections.max = {max}) reached; refusing {host}:{port}",
                       max=self.limits.max_incoming, host=host, port=port)
            return False
        per_source = self.limits.max_per_source
        if per_source and self._per_source[host] >= per_source:
            self.count("connections_refused_per_source", "{host} has {max} connections "
                       "open (connections.max_per_source); refusing another from port {port}",
                       max=per_source, host=host, port=port)
            return False
        return True

    def message_allowed(self, conn):
        """Spend one message of ``conn``'s rate and of its source's: False
        (counted and logged) when either is over ``connections.max_messages_per_second``
        or ``connections.max_messages_per_source``; the caller closes it.
        Outgoing connections (to next hops we chose) are not limited."""
        limits = self.limits
        if conn.outgoing:
            return True
        now = self._reactor.seconds()
        rate = limits.max_messages_per_second
        if rate:
            bucket = conn.rate
            if bucket is None:
                bucket = conn.rate = TokenBucket(rate, now)
            if not bucket.take(now):
                self.count("connections_closed_message_rate",
                           "closing {proto} connection from {host}:{port}: more than "
                           "{rate} messages a second (connections.max_messages_per_second)",
                           proto=conn.proto, host=conn.peer_host, port=conn.peer_port, rate=rate)
                return False
        rate = limits.max_messages_per_source
        if rate:
            host = conn.peer_host
            bucket = self._source_rates.get(host)
            if bucket is None:
                bucket = self._source_rates[host] = TokenBucket(rate, now)
            if not bucket.take(now):
                self.count("connections_closed_source_rate",
                           "closing {proto} connection from {host}:{port}: {host} sent more "
                           "than {rate} messages a second (connections.max_messages_per_source)",
                           proto=conn.proto, host=host, port=conn.peer_port, rate=rate)
                return False
        return True

    def add_connection(self, conn):
        """Register a live stream connection; returns its id."""
        conn_id = next(self._conn_ids)
        self.connections[conn_id] = conn
        self._by_addr[(conn.proto, conn.peer_host, conn.peer_port)] = conn
        if getattr(conn, "outgoing", False):
            self.outgoing += 1
        else:
            self.incoming += 1
            self._per_source[conn.peer_host] += 1
        return conn_id

    def remove_connection(self, conn):
        """Forget a closed connection."""
        if self.connections.pop(conn.conn_id, None) is not None:
            if getattr(conn, "outgoing", False):
                self.outgoing -= 1
            else:
                self.incoming -= 1
                host = conn.peer_host
                left = self._per_source[host] - 1
                if left > 0:
                    self._per_source[host] = left
                else:
                    del self._per_source[host]
                    self._source_rates.pop(host, None)
        key = (conn.proto, conn.peer_host, conn.peer_port)
        if self._by_addr.get(key) is conn:
            del self._by_addr[key]

    def flow_target(self, conn_id):
        """A Target for live connection ``conn_id`` (RFC 5626 flows), or None."""
        return self.flows.target(conn_id)
