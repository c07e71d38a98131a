"""The dispatcher module, sans-IO: destination sets, the route functions
(``ds_select_dst``, ``ds_next_dst``, ``ds_mark_dst``, ``ds_is_from_list``),
call-load accounting and health probing.

It never reads a clock: route functions use ``ctx.now``, the core's
transaction-end hook passes ``now``, and its timers (the ping round and the
load sweep) live in the core's timer heap, so the edge wakes it like any
transaction. Probing is a :class:`~sipdisp.probing.Prober`'s: the
dispatcher names the destinations each round pings (by probing mode) and
turns the prober's state changes into its log lines and counters.

Per-request state lives in ``ctx.vars`` (Kamailio keeps it in XAVPs):
``_dsdst_`` the failover list, ``_dsidx_`` the index in use, ``_dsload_``
the destination this INVITE's call load is counted on.
"""

import random

from ..config.values import ReplyCodes
from ..logs import Logger, RepeatLimiter
from ..probing import (DISABLED, MODES, NOPING, PROBING, STATE_BITS, Prober,
                       parse_state_letters, ping_wanted, state_letters)
from ..auth.digest import DigestError, parse_auth_params
from . import algorithms as A
from .destination import Destination, DestinationSet

DST_LIST = "_dsdst_"
DST_INDEX = "_dsidx_"
DST_LOAD = "_dsload_"
DST_NOTED = "_dsnoted_"

#: a Retry-After longer than this is cut to it (seconds)
MAX_RETRY_AFTER = 3600


def _retry_after(response):
    """Seconds in a Retry-After header (RFC 3261 20.33), or None."""
    value = response.get("retry-after")
    if not value:
        return None
    digits = ""
    for ch in value.strip():
        if not ch.isdigit():
            break
        digits += ch
    return min(int(digits), MAX_RETRY_AFTER) if digits else None


def _reply_codes(value):
    return value if isinstance(value, ReplyCodes) else ReplyCodes(value)


def _prober_setting(name, doc):
    """A dispatcher parameter the prober holds, read under its config name."""
    return property(lambda self: getattr(self.prober, name), doc=doc)


#: constructor keyword -> the Prober setting it is (``ping_interval`` has its own path)
_PROBER_SETTINGS = {"ping_timeout": "timeout", "ping_method": "method", "ping_from": "from_uri",
                    "ping_reply_codes": "reply_codes", "probing_mode": "mode",
                    "probing_threshold": "probing_threshold",
                    "inactive_threshold": "inactive_threshold",
                    "ping_latency_stats": "latency_stats",
                    "latency_estimator_alpha": "latency_alpha"}


class Dispatcher:
    """Destination sets and everything routes and operators do with them.

    ``core`` (a ProxyCore) is needed for probing and load accounting; the
    route functions and the state machine work without it (unit tests).
    ``log`` is a Logger-like object with ``info`` and ``warn``.
    """

    def __init__(self, core=None, *, ping_interval=10.0, ping_timeout=1.0,
                 ping_method="OPTIONS", ping_from="sip:dispatcher@localhost",
                 ping_reply_codes="", probing_mode=0, probing_threshold=1,
                 inactive_threshold=1, load_expire=7200.0, load_init_expire=300.0,
                 sweep_interval=30.0, ping_latency_stats=True, latency_estimator_alpha=0.9,
                 rng=None, log=None):
        if probing_mode not in MODES:
            raise ValueError(f"probing_mode must be 0..3, got {probing_mode!r}")
        self.load_expire = load_expire
        self.load_init_expire = load_init_expire
        self.sweep_interval = sweep_interval
        self.ping_active = True
        self.source = "none"
        self.sets = {}
        self.timers = {}  # the core's TimerHeap keeps our load sweep here
        self.stats = {"state_changes": 0, "loads_expired": 0, "hash_key_missing": 0,
                      "forked": 0}
        self._rng = rng or random.Random()
        self._by_host = {}
        self._pending = {}    # ctx -> deadline: INVITEs whose load awaits their final
        self._calls = {}      # Call-ID -> (destination, deadline): answered calls
        self.prober = Prober(self._ping_targets, interval=ping_interval, timeout=ping_timeout,
                             method=ping_method, from_uri=ping_from,
                             reply_codes=_reply_codes(ping_reply_codes), mode=probing_mode,
                             probing_threshold=probing_threshold,
                             inactive_threshold=inactive_threshold, call_id_prefix="ds",
                             rng=self._rng, latency_stats=ping_latency_stats,
                             latency_alpha=latency_estimator_alpha)
        self.prober.listeners.append(self._on_state_change)
        self.log = log or Logger(namespace="sipdisp.dispatcher")
        # lines a request can trigger (a socket that names no listener): rate-limited
        self.limited_log = RepeatLimiter(self.log)
        self.core = None
        if core is not None:
            self.attach(core)

    ping_interval = _prober_setting("interval", "Seconds between ping rounds (0: never).")
    ping_timeout = _prober_setting("timeout", "Seconds a ping may wait for its final reply.")
    ping_method = _prober_setting("method", "The method pings use (OPTIONS).")
    ping_from = _prober_setting("from_uri", "The From URI of pings.")
    reply_codes = _prober_setting("reply_codes", "The ReplyCodes a ping reply counts as up by.")
    probing_mode = _prober_setting("mode", "Kamailio's ds_probing_mode (0..3).")
    probing_threshold = _prober_setting("probing_threshold",
                                        "Failed pings that make a destination inactive.")
    inactive_threshold = _prober_setting("inactive_threshold",
                                         "Good pings that make a destination active again.")
    ping_latency_stats = _prober_setting("latency_stats",
                                         "True if ping round-trip times are measured.")
    latency_estimator_alpha = _prober_setting("latency_alpha",
                                              "The EWMA weight of the past latency estimate.")

    # -- wiring ----------------------------------------------------------------
    def attach(self, core):
        """Register with ``core``: the
        transaction-end hook that releases call load."""
        self.core = core
        self.prober.core = core
        if self.on_txn_end not in core.txn_end_hooks:
            core.txn_end_hooks.append(self.on_txn_end)

    def start(self, now):
        """Arm the ping round and the load sweep in the core's timer heap."""
        self.prober.start(now)
        self.core.timer(self, "sweep").arm(now + self.sweep_interval)

    def stop(self):
        """Disarm the timers (the core's heap forgets cancelled names)."""
        self.prober.stop()
        self.timers.clear()

    def reconfigure(self, now, **params):
        """Apply new parameters (the keyword arguments of the constructor) to
        the running dispatcher; a new ping interval takes effect from ``now``."""
        if params.get("probing_mode", self.probing_mode) not in MODES:
            raise ValueError(f"probing_mode must be 0..3, got {params['probing_mode']!r}")
        interval = params.get("ping_interval", self.ping_interval)
        settings = {}
        for name, value in params.items():
            if name in _PROBER_SETTINGS:
                if name == "ping_reply_codes":
                    value = _reply_codes(value)
                settings[_PROBER_SETTINGS[name]] = value
            elif name in ("load_expire", "load_init_expire", "sweep_interval"):
                setattr(self, name, value)
            elif name != "ping_interval":
                raise TypeError(f"unknown dispatcher parameter {name!r}")
        self.prober.configure(**settings)
        self.prober.set_interval(interval, now)

    def on_timer(self, name, now):
        """The core's timer heap fired the load sweep."""
        self.sweep(now)
        self.core.timer(self, "sweep").arm(now + self.sweep_interval)

    # -- sets ------------------------------------------------------------------
    def load(self, rows, now=0.0, source=None):
        """Replace the sets with ``rows`` (from a list file or the table),
        keeping each surviving destination's runtime state (state, counters,
        call load) unless its configured flags changed. Returns a summary."""
        old = {}
        for dset in self.sets.values():
            for dest in dset.dests:
                old.setdefault(dest.key, dest)
        grouped = {}
        kept = added = 0
        for row in rows:
            setid = int(row["setid"])
            uri = row["destination"]
            flags = int(row.get("flags") or 0)
            priority = int(row.get("priority") or 0)
            attrs = row.get("attrs") or ""
            description = row.get("description") or ""
            # OpenSIPS' table (sources.rows_from_opensips): socket and numeric weights
            extra = (row.get("socket") or "", row.get("weight"), row.get("rweight"))
            dest = old.pop((setid, uri), None)
            if dest is None:
                dest = Destination(setid, uri, flags, priority, attrs, description, *extra)
                self._initial_state(dest)
                added += 1
            else:
                reset = dest.flags != flags
                dest.configure(flags, priority, attrs, description, *extra)
                if reset:
                    dest.failures = dest.successes = 0
                    self._initial_state(dest)
                kept += 1
            grouped.setdefault(setid, []).append(dest)
        sets = {}
        for setid, dests in sorted(grouped.items()):
            dset = self.sets.get(setid)
            if dset is None:
                dset = DestinationSet(setid, dests)
            else:
                dset.replace(dests)
            sets[setid] = dset
        self.sets = sets
        if source is not None:
            self.source = source
        self._index()
        return {"sets": len(sets), "destinations": kept + added, "kept": kept,
                "added": added, "removed": len(old)}

    def _initial_state(self, dest):
        dest.state = dest.flags & STATE_BITS
        if self.probing_mode == 1 and not dest.state & DISABLED and not dest.flags & NOPING:
            dest.state |= PROBING

    def _index(self):
        by_host = {}
        for dset in self.sets.values():
            for dest in dset.dests:
                for addr in dest.addrs:
                    by_host.setdefault(addr, []).append(dest)
        self._by_host = by_host

    def destinations(self):
        """Every destination of every set, in set order."""
        return [d for dset in self.sets.values() for d in dset.dests]

    def find(self, setid, uri):
        """The destinations of ``setid`` (or of all sets for -1) with ``uri``."""
        return [d for d in self.destinations()
                if (setid == -1 or d.setid == setid) and d.uri == uri]

    def add(self, setid, uri, flags=0, priority=0, attrs="", now=0.0):
        """Add a destination in memory (a reload forgets it, as in Kamailio)."""
        dest = Destination(setid, uri, flags, priority, attrs)
        self._initial_state(dest)
        dset = self.sets.get(setid)
        if dset is None:
            self.sets[setid] = DestinationSet(setid, [dest])
            self.sets = dict(sorted(self.sets.items()))
        else:
            dset.replace(dset.dests + [dest])
        self._index()
        return dest

    def remove(self, setid, uri):
        """Remove every destination ``uri`` of ``setid`` from memory; how many went."""
        dset = self.sets.get(setid)
        if dset is None:
            return 0
        keep = [d for d in dset.dests if d.uri != uri]
        removed = len(dset.dests) - len(keep)
        if not keep:
            del self.sets[setid]
        elif removed:
            dset.replace(keep)
        self._index()
        return removed

    # -- selection (route functions) ---------------------------------------------
    def order(self, dset, alg, request, now, key=None):
        """The failover order of ``dset`` for ``request`` with algorithm ``alg``
        (a list of Destinations, selected one first); ``key`` is the hashed
        value of algorithm 7 (``dispatcher.hash_pvar``)."""
        dests = dset.dests
        n = len(dests)
        usable = tuple(d.usable(now) for d in dests)
        username = auth_username(request) if alg == A.HASH_AUTH_USER else ""
        if username:
            idx = A.by_hash(n, usable, username)
        elif alg in (A.ROUND_ROBIN, A.HASH_AUTH_USER):
            # algorithm 5 without credentials to hash: round robin, as Kamailio does
            idx, dset.rr_next = A.round_robin(n, usable, dset.rr_next)
        elif alg == A.HASH_CALLID:
            idx = A.by_hash(n, usable, request.call_id)
        elif alg == A.HASH_FROM:
            idx = A.by_hash(n, usable, _uri_key(request, "from"))
        elif alg == A.HASH_TO:
            idx = A.by_hash(n, usable, _uri_key(request, "to"))
        elif alg == A.HASH_RURI_USER:
            idx = A.by_hash(n, usable, request.uri.user or "")
        elif alg == A.RANDOM:
            idx = A.at_random(n, usable, self._rng.random())
        elif alg == A.PRIORITY:
            idx = A.by_priority(n, usable)
        elif alg == A.WEIGHT:
            idx, dset.w_next = A.by_table(n, usable, dset.w_table, dset.w_next)
        elif alg == A.CALL_LOAD:
            idx = A.by_load([d.load for d in dests], [d.maxload for d in dests], usable)
        elif alg == A.RELATIVE_WEIGHT:
            idx, dset.rw_next = A.by_table(n, usable, dset.rweight_table(usable), dset.rw_next)
        elif alg == A.HASH_PVAR:
            idx = A.by_hash(n, usable, key)
        elif alg == A.PARALLEL:
            idx = A.by_priority(n, usable)
        elif alg == A.LATENCY:
            idx = A.by_latency([d.latency_estimate for d in dests], usable)
        else:
            A.check_algorithm(alg)
            idx = []
        return [dests[i] for i in idx]

    def select_dst(self, ctx, setid, alg, limit=0, domain=False, key=None):
        """Kamailio ``ds_select_dst(set, alg[, limit])``: pick a destination of
        ``setid`` and send there (``$du``; the R-URI host with ``domain``,
        ``ds_select_domain``). The rest of the order is kept for ``next_dst``.
        Algorithm 12 forks to every usable destination at once (``ctx.branches``,
        one transaction, no failover left). Algorithm 7 hashes ``key`` (the
        value of ``dispatcher.hash_pvar``); without one it selects nothing, as
        in Kamailio. False when the set is unknown or has no usable destination."""
        dset = self.sets.get(setid)
        if dset is None:
            return False
        if alg == A.HASH_PVAR and not key:
            self.stats["hash_key_missing"] += 1
            return False
        order = self.order(dset, alg, ctx.request, ctx.now, key)
        if limit > 0:
            order = order[:limit]
        if not order:
            return False
        vars = ctx.vars
        vars[DST_LIST] = order
        vars["_dsdomain_"] = domain
        if alg == A.PARALLEL:
            # every destination is in use at once: ds_next_dst has none left
            vars[DST_INDEX] = len(order) - 1
            self._fork(ctx, order, domain)
            return True
        vars[DST_INDEX] = 0
        self._use(ctx, order[0])
        if ctx.request.method == "INVITE":
            self._charge(ctx, order[0])
        return True

    def select_domain(self, ctx, setid, alg, limit=0, key=None):
        """Kamailio ``ds_select_domain``: as ``select_dst`` but rewriting the R-URI host:port."""
        return self.select_dst(ctx, setid, alg, limit, domain=True, key=key)

    def _fork(self, ctx, order, domain):
        """Algorithm 12: one branch per destination, relayed together by ``t_relay``."""
        ruri = ctx.request.uri
        branches = []
        for dest in order:
            if domain:
                uri = ruri.copy()
                uri.host, uri.port = dest.uri_obj.host, dest.uri_obj.port
                uri._text = None  # the cached text is stale now
                branches.append(ForkBranch(uri, socket=self._socket(dest)))
            else:
                branches.append(ForkBranch(ruri, dest.uri_obj, self._socket(dest)))
        first = branches[0]
        ctx.set_ruri(first.uri)
        if first.dst is not None:
            ctx.set_dst(first.dst)
        ctx.branches = branches
        self.stats["forked"] += 1

    def next_dst(self, ctx):
        """Kamailio ``ds_next_dst()``: use the next destination of the failover
        order that is still usable; False when none is left."""
        vars = ctx.vars
        order = vars.get(DST_LIST)
        if not order:
            return False
        self._note_failure(ctx)
        now = ctx.now
        i = vars[DST_INDEX] + 1
        while i < len(order) and not order[i].usable(now):
            i += 1
        if i >= len(order):
            return False
        vars[DST_INDEX] = i
        self._use(ctx, order[i])
        if DST_LOAD in vars:
            vars[DST_LOAD].load -= 1
            order[i].load += 1
            vars[DST_LOAD] = order[i]
        return True

    next_domain = next_dst

    def current(self, ctx):
        """The destination the request was last sent to, or None."""
        order = ctx.vars.get(DST_LIST)
        return order[ctx.vars[DST_INDEX]] if order else None

    def mark_dst(self, ctx, state="i"):
        """Kamailio ``ds_mark_dst([state])`` on the destination in use: ``i``
        inactive, ``a`` active, ``t`` trying, ``d`` disabled, plus ``p`` for
        probing (``"ip"``). A 503 with Retry-After also keeps it out for that long."""
        dest = self.current(ctx)
        if dest is None:
            return False
        base, probing = parse_state_letters(state) if isinstance(state, str) else state
        self._note_failure(ctx)
        self._mark(dest, base, probing, f"ds_mark_dst({''.join((base, 'p' if probing else ''))}) "
                   f"after {_failure_text(ctx)}")
        return True

    def _use(self, ctx, dest):
        # OpenSIPS' socket column: send from that listener (None: the core's choice)
        ctx.send_socket = self._socket(dest)
        if ctx.vars.get("_dsdomain_"):
            uri = ctx.request.uri.copy()
            uri.host, uri.port = dest.uri_obj.host, dest.uri_obj.port
            uri._text = None  # the cached text is stale now
            ctx.set_ruri(uri)
        else:
            ctx.set_dst(dest.uri_obj)

    def _socket(self, dest):
        """The listener a destination's ``socket`` names, or None (none
        named, or no such listener: logged, the core picks one)."""
        if not dest.socket or self.core is None:
            return None
        listener = self.core.listener_named(dest.socket)
        if listener is None:
            self.limited_log.warn(
                "dispatcher.socket", "dispatcher: {uri} names socket {socket}, which is not a "
                "listen address; sending from the listener its address family picks",
                uri=dest.uri, socket=dest.socket)
        return listener

    def _note_failure(self, ctx):
        """A 503 with Retry-After on the failed branch takes its destination out for that long."""
        txn = ctx.proxy_txn
        reply = getattr(txn, "last_reply", None) if txn is not None else None
        if reply is None or reply.status != 503 or ctx.vars.get(DST_NOTED) is reply:
            return
        ctx.vars[DST_NOTED] = reply
        seconds = _retry_after(reply)
        dest = self.current(ctx)
        if seconds and dest is not None:
            dest.out_until = max(dest.out_until, ctx.now + seconds)
            self.log.warn("dispatcher: {uri} (set {setid}) out of service for {secs} s "
                          "(503 with Retry-After)", uri=dest.uri, setid=dest.setid, secs=seconds)

    # -- ds_is_from_list -------------------------------------------------------------
    def is_from_list(self, ctx, setid=-1, mode=None, uri=None):
        """Kamailio ``ds_is_from_list([set[, mode[, uri]]])``: does the request
        come from (or ``uri`` name) a destination? ``mode`` bits: 1 ignore the
        port, 2 ignore the protocol, 4 only active destinations. Without a
        mode the protocol is ignored (Kamailio's default). On a match
        ``ctx.vars["ds_setid"]`` and ``["ds_attrs"]`` are set."""
        if uri is not None:
            host, port, proto = uri.host, uri.host_port[1], uri.transport
        else:
            src = ctx.source
            host, port, proto = src.host, src.port, src.proto
        candidates = self._by_host.get(host)
        if not candidates:
            return False
        if mode is None:
            mode = 2
        now = ctx.now
        for dest in candidates:
            if setid != -1 and dest.setid != setid:
                continue
            if not mode & 1 and dest.port != port:
                continue
            if not mode & 2 and dest.proto != proto:
                continue
            if mode & 4 and not dest.usable(now):
                continue
            ctx.vars["ds_setid"] = dest.setid
            ctx.vars["ds_attrs"] = dest.attrs_text
            return True
        return False

    # -- call load -----------------------------------------------------------------
    def _charge(self, ctx, dest):
        old = ctx.vars.get(DST_LOAD)
        if old is not None:
            old.load -= 1
        dest.load += 1
        ctx.vars[DST_LOAD] = dest
        self._pending[ctx] = ctx.now + self.load_init_expire

    def on_txn_end(self, proxy_txn, status, now):
        """The core's hook: an INVITE's final reply releases its load (or, for a
        2xx, keeps it until the BYE); a BYE's final releases its call's load."""
        ctx = proxy_txn.ctx
        request = proxy_txn.request
        if request.method == "BYE":
            if self._calls:
                entry = self._calls.pop(request.call_id, None)
                if entry is not None:
                    entry[0].load -= 1
            return
        dest = ctx.vars.pop(DST_LOAD, None)
        if dest is None:
            return
        self._pending.pop(ctx, None)
        if 200 <= status < 300:
            old = self._calls.pop(request.call_id, None)
            if old is not None:
                old[0].load -= 1
            self._calls[request.call_id] = (dest, now + self.load_expire)
        else:
            dest.load -= 1

    def release(self, ctx):
        """Drop the load a request took, if it never reached a transaction end
        (the route replied itself after selecting)."""
        dest = ctx.vars.pop(DST_LOAD, None)
        if dest is not None:
            self._pending.pop(ctx, None)
            dest.load -= 1

    def sweep(self, now):
        """Expire loads whose end was never seen (lost BYE, dropped request):
        answered calls after ``load_expire``, unanswered after ``load_init_expire``."""
        expired = 0
        for ctx, deadline in list(self._pending.items()):
            if deadline <= now:
                del self._pending[ctx]
                dest = ctx.vars.pop(DST_LOAD, None)
                if dest is not None:
                    dest.load -= 1
                    expired += 1
        for call_id, (dest, deadline) in list(self._calls.items()):
            if deadline <= now:
                del self._calls[call_id]
                dest.load -= 1
                expired += 1
        if expired:
            self.stats["loads_expired"] += expired
            self.log.info("dispatcher: {n} call load(s) expired without an end", n=expired)
        return expired

    @property
    def active_calls(self):
        """Calls counted in the loads: ``(unanswered, answered)``."""
        return len(self._pending), len(self._calls)

    # -- state -----------------------------------------------------------------------
    def _on_state_change(self, change):
        """The prober's StateChange: one counted log line, a warning unless active."""
        dest = change.target
        self.stats["state_changes"] += 1
        emit = self.log.warn if dest.state & (STATE_BITS & ~PROBING) else self.log.info
        emit("dispatcher: {uri} (set {setid}) {old} -> {new}: {why}",
             uri=dest.uri, setid=dest.setid, old=change.old, new=change.new, why=change.reason)

    def _mark(self, dest, base, probing, why):
        if base == "a":
            dest.out_until = 0.0
        self.prober.mark(dest, base, probing, why)

    def set_state(self, state, setid, address="all"):
        """``dispatcher.set_state``: apply ``state`` (a/i/t/d, optional p) to
        ``address`` of ``setid``, or to every destination of the set with ``all``."""
        base, probing = parse_state_letters(state)
        dset = self.sets.get(setid)
        if dset is None:
            raise KeyError(f"no destination set {setid}")
        targets = list(dset.dests) if address == "all" else [d for d in dset.dests
                                                             if d.uri == address]
        if not targets:
            raise KeyError(f"no destination {address} in set {setid}")
        for dest in targets:
            self._mark(dest, base, probing, f"dispatcher.set_state {state}")
        return len(targets)

    # -- probing ---------------------------------------------------------------------
    def _ping_targets(self):
        """The destinations the probing mode pings this round (none while
        ``dispatcher.ping_active`` is 0)."""
        if not self.ping_active:
            return []
        mode = self.prober.mode
        return [dest for dset in self.sets.values() for dest in dset.dests
                if ping_wanted(dest.state, dest.flags, mode)]

    # -- management ------------------------------------------------------------------
    def listing(self, now=None):
        """``dispatcher.list``: Kamailio's structure (sets, then each
        destination's URI, FLAGS such as ``AP``, PRIORITY and ATTRS) plus
        sipdisp's LOAD, counters and last ping."""
        records = []
        for setid, dset in self.sets.items():
            targets = []
            for dest in dset.dests:
                entry = {
                    "URI": dest.uri, "FLAGS": state_letters(dest.state),
                    "PRIORITY": dest.priority,
                    "ATTRS": {"BODY": dest.attrs_text, "DUID": dest.attrs.get("duid", ""),
                              "MAXLOAD": dest.maxload, "WEIGHT": dest.weight,
                              "RWEIGHT": dest.rweight},
                    "LOAD": dest.load, "FAILURES": dest.failures,
                }
                if dest.description:
                    entry["DESCRIPTION"] = dest.description
                if now is not None and dest.out_until > now:
                    entry["OUT_FOR"] = round(dest.out_until - now, 1)
                if dest.last_ping is not None:
                    entry["LAST_PING"] = dest.last_ping[1]
                if dest.socket:
                    entry["SOCKET"] = dest.socket
                if dest.latency is not None:
                    entry["LATENCY"] = dest.latency.describe()
                targets.append({"DEST": entry})
            records.append({"SET": {"ID": setid, "TARGETS": targets}})
        return {"NRSETS": len(self.sets), "SOURCE": self.source,
                "PING_ACTIVE": int(self.ping_active), "RECORDS": records}


class ForkBranch:
    """One branch of algorithm 12's parallel fork (the core's branch shape:
    ``uri`` the Request-URI, ``dst`` the $du, no flow, no routes)."""

    __slots__ = ("uri", "dst", "flow", "routes", "socket")

    def __init__(self, uri, dst=None, socket=None):
        self.uri = uri
        self.dst = dst
        self.flow = None
        self.routes = ()
        self.socket = socket  # the listener of the destination's socket column, or None

    def __repr__(self):
        return f"<ForkBranch {self.uri} dst={self.dst}>"


def auth_username(request):
    """The username of the request's digest credentials (Proxy-Authorization
    first, then Authorization, as Kamailio's algorithm 5 reads them), with
    ``@domain`` if it carries one; "" without credentials."""
    for header in ("proxy-authorization", "authorization"):
        value = request.get(header)
        if not value:
            continue
        scheme, _, rest = value.strip().partition(" ")
        if scheme.lower() != "digest":
            continue
        try:
            username = parse_auth_params(rest).get("username")
        except DigestError:
            continue
        if username:
            return username
    return ""


def _uri_key(request, header):
    """Hash key of the From/To URI: user@host, plus the port if it is not the default."""
    address = request.address(header)
    if address is None:
        return ""
    uri = address.uri
    if not uri.is_sip:
        return str(uri)
    key = f"{uri.user or ''}@{uri.host}"
    if uri.port is not None and uri.port != (5061 if uri.scheme == "sips" else 5060):
        key += f":{uri.port}"
    return key


def _failure_text(ctx):
    txn = ctx.proxy_txn
    reply = getattr(txn, "last_reply", None) if txn is not None else None
    if reply is None:
        return "a failure"
    branch = ctx.failed_branch
    if branch is not None and branch.local_reply:
        return "branch timeout"
    return f"{reply.status} {reply.reason}"

