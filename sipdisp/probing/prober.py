"""The prober, sans-IO: pings targets with the core's client transactions
on a round armed in the core's timer heap, feeds each outcome to the state
machine (:mod:`.states`) and tells its listeners about every state change.

It never reads a clock: rounds, replies and timeouts come with ``now``.
Each ping is a client transaction whose final-response timer is the short
``timeout``, so a dead target is noticed in a second, not after the 32 s of
Timer F; a ping that times out is a failure whatever the reply codes say.

The owner (the dispatcher, the load balancer) decides which targets a round
pings and turns :class:`StateChange` events into its own log lines and
counters; the prober writes no log.
"""

import itertools
from typing import NamedTuple

from ..proxy.target import Target
from ..sip.message import Request
from ..sip.uri import parse_uri
from .latency import LatencyStats
from .states import after_mark, after_ping, state_letters


class ProbeTarget:
    """Something pinged: its URI (where pings go) and its health state
    (state bits, failure and success counts, the ping in flight, the last
    outcome). Owners keep it across reloads so a pending ping still lands."""

    __slots__ = ("uri", "uri_obj", "proto", "host", "port", "state", "failures",
                 "successes", "pinging", "last_ping", "latency")

    def __init__(self, uri):
        self.uri = uri
        self.uri_obj = parse_uri(uri)
        if not self.uri_obj.is_sip or not self.uri_obj.host:
            raise ValueError(f"{uri!r} is not a SIP URI")
        self.proto = self.uri_obj.transport
        self.host, self.port = self.uri_obj.host_port
        self.state = 0
        self.failures = 0
        self.successes = 0
        self.pinging = False
        #: ``(now, why)`` of the last ping outcome, or None
        self.last_ping = None
        #: round-trip times of the pings (:class:`~.latency.LatencyStats`), when measured
        self.latency = None

    @property
    def letters(self):
        """The two-letter state (``AP``, ``IP``, ``AX`` ...)."""
        return state_letters(self.state)


class StateChange(NamedTuple):
    """A target's two-letter state changed (``old`` -> ``new``) for ``reason``;
    ``target.state`` already holds the new bits."""

    target: ProbeTarget
    old: str
    new: str
    reason: str


class Prober:
    """Pings the targets ``targets()`` names every ``interval`` seconds (0:
    never), one ping in flight per target, with ``method`` from ``from_uri``.

    A final reply is up when ``reply_codes.accepts(status)``; ``mode`` (0..3,
    see :mod:`.states`) and the thresholds drive the state machine. Call-IDs
    are ``<call_id_prefix>-<tag>-<n>``, the tag drawn once from ``rng``.
    ``listeners`` are called with each :class:`StateChange`. With
    ``latency_stats`` each reply's round-trip time goes into the target's
    :class:`~.latency.LatencyStats` (EWMA weight ``latency_alpha``).
    """

    _SETTINGS = ("timeout", "method", "from_uri", "reply_codes", "mode",
                 "probing_threshold", "inactive_threshold", "latency_stats", "latency_alpha")

    def __init__(self, targets, *, interval, timeout, method, from_uri, reply_codes, mode,
                 probing_threshold=1, inactive_threshold=1, call_id_prefix, rng,
                 latency_stats=False, latency_alpha=0.9):
        self.targets = targets
        self.interval = interval
        self.configure(timeout=timeout, method=method, from_uri=from_uri,
                       reply_codes=reply_codes, mode=mode, probing_threshold=probing_threshold,
                       inactive_threshold=inactive_threshold, latency_stats=latency_stats,
                       latency_alpha=latency_alpha)
        self.listeners = []
        self.core = None
        self.timers = {}  # the core's TimerHeap keeps our round here
        self.stats = {"pings_sent": 0, "pings_ok": 0, "pings_failed": 0}
        self._inflight = {}  # ping client transaction -> (target, time sent)
        self._ping_ids = itertools.count(1)
        self._call_id_prefix = call_id_prefix
        self._tag = f"{rng.getrandbits(32):08x}"

    def configure(self, **settings):
        """Change settings (the constructor's keywords but ``interval``, which
        :meth:`set_interval` changes); they apply from the next ping."""
        for name, value in settings.items():
            if name not in self._SETTINGS:
                raise TypeError(f"unknown prober setting {name!r}")
            if name == "method":
                value = value.upper()
            elif name in ("probing_threshold", "inactive_threshold"):
                value = max(1, value)
            elif name == "latency_alpha" and not 0.0 <= value < 1.0:
                raise ValueError(f"latency_alpha must be in [0, 1), got {value!r}")
            setattr(self, name, value)

    # -- rounds ----------------------------------------------------------------------
    def start(self, now):
        """Arm the first round (with a core and an interval)."""
        if self.core is not None and self.interval > 0:
            self._arm(now + self.interval)

    def stop(self):
        """Disarm the rounds (the core's heap forgets cancelled names)."""
        self.timers.clear()

    def set_interval(self, interval, now):
        """A new round interval, counted from ``now``; 0 stops the rounds."""
        self.interval = interval
        if self.core is not None:
            if interval > 0:
                self._arm(now + interval)
            else:
                self._cancel()

    def on_timer(self, name, now):
        """The core's timer heap fired the round: ping, then arm the next one."""
        try:
            self.ping_round(now)
        finally:
            if self.interval > 0:
                self._arm(now + self.interval)

    def ping_round(self, now):
        """Ping every target ``targets()`` names that has no ping in flight;
        how many pings went out."""
        if self.core is None:
            return 0
        sent = 0
        for target in self.targets():
            if not target.pinging:
                self.send_ping(target, now)
                sent += 1
        return sent

    # -- pings -----------------------------------------------------------------------
    def send_ping(self, target, now):
        """Send one ping to ``target`` (a failure at once if no listener can reach it)."""
        core = self.core
        listener = core.listener_for(target.proto, target.host)
        if listener is None:
            self.ping_result(target, False, now, f"no {target.proto} listener to ping from")
            return
        n = next(self._ping_ids)
        branch = core.new_branch()
        uri = target.uri_obj
        method = self.method
        request = Request(method, uri)
        request.call_id = f"{self._call_id_prefix}-{self._tag}-{n}"
        request.cseq = 1
        request.cseq_method = method
        request.headers = [
            ("via", "Via", listener.via_prefix + branch),
            ("max-forwards", "Max-Forwards", "70"),
            ("from", "From", f"<{self.from_uri}>;tag={self._tag}{n:x}"),
            ("to", "To", f"<{uri}>"),
            ("call-id", "Call-ID", request.call_id),
            ("cseq", "CSeq", f"1 {method}"),
            ("content-length", "Content-Length", "0"),
        ]
        if core.server_header:
            request.headers.insert(-1, ("user-agent", "User-Agent", core.server_header))
        route = Target(target.proto, target.host, target.port, None, listener)
        client = self._start_client(request, route, branch, now)
        self._inflight[client] = (target, now)
        target.pinging = True
        self.stats["pings_sent"] += 1

    # ClientTransaction owner protocol: the replies and timeouts of our pings
    def on_branch_response(self, txn, response, now):
        """A reply to a ping: a final one decides with ``reply_codes``."""
        if response.status < 200:
            return
        entry = self._inflight.pop(txn, None)
        if entry is not None:
            target, sent = entry
            if self.latency_stats:
                self._stats_of(target).add(max(now - sent, 0.0), self.latency_alpha)
            ok = self.reply_codes.accepts(response.status)
            self.ping_result(target, ok, now, f"{self.method} answered "
                                              f"{response.status} {response.reason}")

    def on_branch_timeout(self, txn, now):
        """A ping got no reply within ``timeout``: a failure (never a reply)."""
        entry = self._inflight.pop(txn, None)
        if entry is not None:
            target = entry[0]
            if self.latency_stats:
                self._stats_of(target).timed_out()
            self.ping_result(target, False, now, f"no reply to {self.method} "
                                                 f"in {self.timeout:g} s")

    def ping_result(self, target, ok, now, why):
        """Feed one ping outcome to the state machine (public for tests and tools)."""
        target.pinging = False
        target.last_ping = (now, why)
        self.stats["pings_ok" if ok else "pings_failed"] += 1
        state, target.failures, target.successes = after_ping(
            target.state, target.failures, target.successes, ok, self.mode,
            self.probing_threshold, self.inactive_threshold)
        if state != target.state:
            self.set_state(target, state, why)

    @staticmethod
    def _stats_of(target):
        if target.latency is None:
            target.latency = LatencyStats()
        return target.latency

    # -- states ----------------------------------------------------------------------
    def set_state(self, target, state, why):
        """Give ``target`` the state bits ``state``; a change of its letters
        is a :class:`StateChange` to every listener."""
        old = target.letters
        target.state = state
        new = target.letters
        if new != old:
            change = StateChange(target, old, new, why)
            for listener in self.listeners:
                listener(change)

    def mark(self, target, base, probing, why):
        """A mark (``ds_mark_dst``, ``dispatcher.set_state``): ``base`` a/i/t/d,
        ``probing`` the probing flag, as :func:`~.states.after_mark` says."""
        state, target.failures, target.successes = after_mark(
            target.state, target.failures, base, probing, self.probing_threshold)
        self.set_state(target, state, why)

    # -- the core's interface (proxy.interface.Core): client transactions, timers ----
    def _start_client(self, request, route, branch, now):
        return self.core.start_client(request, route, branch, self, self.timeout, now)

    def _arm(self, when):
        self.core.timer(self, "ping").arm(when)

    def _cancel(self):
        self.core.timer(self, "ping").cancel()
