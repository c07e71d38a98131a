"""Dynamic routing (OpenSIPS drouting), sans-IO: gateways, carriers, rules
and groups as OpenSIPS' tables hold them, rule selection, gateway lists
with weights and failover, strip and prefix, ``is_from_gw`` and probing.

Rows are loaded whole and checked whole (:meth:`DRouting.load`): a rule
naming an unknown gateway or carrier, a time recurrence that cannot be
evaluated or an unknown sort algorithm refuses the load with one line
naming the row, and the previous tables stay in use.

Rule selection (``do_routing``): the group is the argument, else the
caller's ``dr_groups`` row, else ``drouting.default_group``. Within the
group the longest rule prefix that the R-URI user starts with and that has
a rule whose time recurrence holds now wins, then the highest priority
(ties: the lowest rule id). Shorter prefixes and the rules without prefix
are the fallback when no rule of a longer prefix holds at this time.

The gateways of the chosen rule (its ``gwlist``, carriers expanded to
their own gateways) are ordered by the rule's ``sort_alg`` (``N``/0 as
given, ``W``/1 weighted random order); disabled gateways and carriers are
skipped. The first is used at once (R-URI user: stripped, then prefixed
with the gateway's ``pri_prefix``; ``$du``: the gateway), the next ones by
``use_next_gw`` in the failure route.

Probing is a :class:`~sipdisp.probing.Prober`'s, as the load balancer's:
``probe_mode`` 0 never, 1 only while the gateway is inactive (probing brings
it back), 2 always. The ``state`` column: 0 active, 1 disabled (an
operator's: never probed, never used), 2 probing (inactive until a probe is
answered).
"""

import random
from collections import Counter

from ..dispatcher.destination import resolve
from ..logs import Logger
from ..probing import (DISABLED, INACTIVE, PROBING, STATE_BITS, ProbedTable, ProbeTarget,
                       parse_reply_codes)
from ..sip.uri import parse_uri
from .timerec import TimerecError, parse_timerec

#: ``ctx.vars`` key of the request's drouting state
DR = "_dr_"
PROBE_MODES = (0, 1, 2)
#: sort_alg values: OpenSIPS 3.2+ letters and the 3.0/3.1 numbers
SORT_ALGS = {"N": "N", "0": "N", "": "N", "W": "W", "1": "W"}
#: carrier flag: use only the first usable gateway of the carrier
CARRIER_FIRST_ONLY = 0x1
#: the ``state`` column of dr_gateways -> probe state bits
GW_STATES = {0: 0, 1: DISABLED, 2: INACTIVE | PROBING}


class LoadError(ValueError):
    """Rows that cannot be loaded; the message names the table and row."""


#: OpenSIPS' probing reply codes (``"501, 403"``) or Kamailio's syntax, as ReplyCodes
reply_codes = parse_reply_codes


def _text(value):
    return "" if value is None else str(value)


def _int(value, default=0):
    if value is None or value == "":
        return default
    return int(value)


def gateway_uri(address):
    """The SIP URI of a gateway ``address`` (``10.0.0.1:5080`` or already ``sip:...``)."""
    address = address.strip()
    return address if address.lower().startswith(("sip:", "sips:")) else "sip:" + address


class DrProbe(ProbeTarget):
    """A gateway's health state; ``gwid`` names it in log lines."""

    __slots__ = ("gwid",)

    def __init__(self, uri, gwid):
        super().__init__(uri)
        self.gwid = gwid


class Gateway:
    """One ``dr_gateways`` row and its health (``probe``)."""

    __slots__ = ("id", "gwid", "type", "address", "uri", "uri_obj", "strip", "pri_prefix",
                 "attrs", "probe_mode", "state", "socket", "description", "probe", "addrs",
                 "port")

    def __init__(self, row):
        self.id = _int(row.get("id"))
        self.gwid = _text(row.get("gwid")).strip()
        if not self.gwid:
            raise ValueError("gwid is empty")
        self.type = _int(row.get("type"))
        self.address = _text(row.get("address")).strip()
        self.uri = gateway_uri(self.address)
        self.uri_obj = parse_uri(self.uri)
        if not self.uri_obj.is_sip or not self.uri_obj.host:
            raise ValueError(f"address {self.address!r} is not host[:port] or a SIP URI")
        self.strip = _int(row.get("strip"))
        if self.strip < 0:
            raise ValueError(f"strip {self.strip} is negative")
        self.pri_prefix = _text(row.get("pri_prefix"))
        self.attrs = _text(row.get("attrs"))
        self.probe_mode = _int(row.get("probe_mode"))
        if self.probe_mode not in PROBE_MODES:
            raise ValueError(f"probe_mode must be 0, 1 or 2, got {self.probe_mode}")
        self.state = _int(row.get("state"))
        if self.state not in GW_STATES:
            raise ValueError(f"state must be 0 (active), 1 (disabled) or 2 (probing), "
                             f"got {self.state}")
        self.socket = _text(row.get("socket"))
        self.description = _text(row.get("description"))
        self.probe = DrProbe(self.uri, self.gwid)
        self.probe.state = GW_STATES[self.state]
        self.addrs = resolve(self.probe.host)
        # an address without a port matches any source port (is_from_gw)
        self.port = self.uri_obj.port

    @property
    def enabled(self):
        """True if calls may be sent to it."""
        return not self.probe.state & (INACTIVE | DISABLED)

    def __repr__(self):
        return f"<Gateway {self.gwid} {self.uri}>"


def parse_gwlist(text, where):
    """``1,2``, ``1=70,2=30``, ``#cr1,3`` -> ``[(is_carrier, id, weight)]``
    (weight 1 when not given); LoadError naming ``where`` otherwise."""
    out = []
    for part in _text(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        ident, _, weight = part.partition("=")
        ident = ident.strip()
        carrier = ident.startswith("#")
        if carrier:
            ident = ident[1:].strip()
        if not ident:
            raise LoadError(f"{where}: gwlist entry {part!r} names nothing")
        try:
            w = int(weight) if weight.strip() else 1
        except ValueError:
            raise LoadError(f"{where}: gwlist weight {weight!r} is not an integer") from None
        if w < 0:
            raise LoadError(f"{where}: gwlist weight {w} is negative")
        out.append((carrier, ident, w))
    return out


def sort_alg(value, where):
    """The sort algorithm letter (``N`` or ``W``) of a ``sort_alg`` column."""
    key = _text(value).strip().upper()
    if key in SORT_ALGS:
        return SORT_ALGS[key]
    if key in ("Q", "2"):
        raise LoadError(f"{where}: sort_alg {value!r} (quality-based) needs OpenSIPS' "
                        "qrouting, which sipdisp does not have; use N or W")
    raise LoadError(f"{where}: sort_alg {value!r} is not N (0, given order) or "
                    "W (1, weight-based)")


class Carrier:
    """One ``dr_carriers`` row: gateways with weights, flags, sort_alg and state."""

    __slots__ = ("id", "carrierid", "gwlist", "flags", "sort_alg", "state", "attrs",
                 "description")

    def __init__(self, row, gateways):
        self.id = _int(row.get("id"))
        self.carrierid = _text(row.get("carrierid")).strip()
        where = f"dr_carriers id {self.id} ({self.carrierid})"
        if not self.carrierid:
            raise LoadError(f"{where}: carrierid is empty")
        self.gwlist = []
        for carrier, ident, weight in parse_gwlist(row.get("gwlist"), where):
            if carrier:
                raise LoadError(f"{where}: a carrier cannot list the carrier #{ident}")
            if ident not in gateways:
                raise LoadError(f"{where}: gwlist names the unknown gateway {ident!r}")
            self.gwlist.append((gateways[ident], weight))
        self.flags = _int(row.get("flags"))
        self.sort_alg = sort_alg(row.get("sort_alg"), where)
        self.state = _int(row.get("state"))
        if self.state not in (0, 1):
            raise LoadError(f"{where}: state must be 0 (active) or 1 (disabled), "
                            f"got {self.state}")
        self.attrs = _text(row.get("attrs"))
        self.description = _text(row.get("description"))

    @property
    def enabled(self):
        """True unless an operator (or the table) turned the carrier off."""
        return self.state == 0


class Rule:
    """One ``dr_rules`` row: groups, prefix, time recurrence, priority, gwlist."""

    __slots__ = ("id", "groups", "prefix", "timerec", "timerec_text", "priority", "routeid",
                 "gwlist", "sort_alg", "sort_profile", "attrs", "description")

    def __init__(self, row, gateways, carriers):
        self.id = _int(row.get("ruleid"))
        where = f"dr_rules ruleid {self.id}"
        try:
            self.groups = tuple(int(g) for g in _text(row.get("groupid")).split(",")
                                if g.strip())
        except ValueError:
            raise LoadError(f"{where}: groupid {row.get('groupid')!r} is not a list of "
                            "integers") from None
        if not self.groups:
            raise LoadError(f"{where}: groupid is empty")
        self.prefix = _text(row.get("prefix")).strip()
        self.timerec_text = _text(row.get("timerec")).strip()
        try:
            self.timerec = parse_timerec(self.timerec_text)
        except TimerecError as exc:
            raise LoadError(f"{where}: timerec cannot be evaluated: {exc}") from None
        self.priority = _int(row.get("priority"))
        self.routeid = _text(row.get("routeid")).strip()
        if self.routeid and self.routeid != "0":
            # OpenSIPS runs a script route here; a sipdisp route has none to name
            raise LoadError(f"{where}: routeid {self.routeid!r} is not supported (sipdisp "
                            "runs no route from a rule); leave it empty")
        self.gwlist = []
        for carrier, ident, weight in parse_gwlist(row.get("gwlist"), where):
            table = carriers if carrier else gateways
            if ident not in table:
                what = "carrier #" if carrier else "gateway "
                raise LoadError(f"{where}: gwlist names the unknown {what}{ident!r}")
            self.gwlist.append((table[ident], weight))
        if not self.gwlist:
            raise LoadError(f"{where}: gwlist is empty")
        self.sort_alg = sort_alg(row.get("sort_alg"), where)
        self.sort_profile = row.get("sort_profile")
        self.attrs = _text(row.get("attrs"))
        self.description = _text(row.get("description"))

    def active_at(self, now, tz):
        """True if the rule's time recurrence holds at ``now`` (always without one)."""
        return self.timerec is None or self.timerec.matches_at(now, tz)

    def __repr__(self):
        return f"<Rule {self.id} prefix {self.prefix!r}>"


class DrCall:
    """One request's drouting state (``ctx.vars["_dr_"]``): the user before
    strip/prefix, the rules still to fall back to, the gateways left and the
    gateway and rule in use."""

    __slots__ = ("user", "rules", "pending", "current", "rule", "tried")

    def __init__(self, user, rules):
        self.user = user
        self.rules = rules
        self.pending = []
        self.current = None
        self.rule = None
        self.tried = []


class DRouting(ProbedTable):
    """The drouting tables in memory and what routes and operators do with them.

    ``log`` is a Logger-like object; ``rng`` draws the weighted orders and the
    probes' tag; ``tz`` is the tzinfo time recurrences are read in (None: the
    host's local time).
    """

    def __init__(self, core=None, *, probing_interval=30.0, probing_method="OPTIONS",
                 probing_from="sip:prober@localhost", probing_reply_codes="",
                 probing_timeout=1.0, default_group=-1, use_domain=True, tz=None,
                 rng=None, log=None):
        self.log = log or Logger(namespace="sipdisp.drouting")
        self.default_group = default_group
        self.use_domain = use_domain
        self.tz = tz
        self.gateways = {}
        self.carriers = {}
        self.rules = []
        self.by_group = {}
        self.groups = {}
        self.stats = Counter()
        self._by_host = {}
        self._rng = rng or random.Random()
        self._init_prober(interval=probing_interval, timeout=probing_timeout,
                          method=probing_method, from_uri=probing_from,
                          reply_codes=probing_reply_codes, call_id_prefix="dr", rng=self._rng)
        #: callables given every StateChange of a gateway (after the log line)
        self.listeners = []
        self.core = None
        if core is not None:
            self.attach(core)

    # -- loading ----------------------------------------------------------------------
    def load(self, gateways, rules, carriers=(), groups=()):
        """Replace the tables with these rows (OpenSIPS' columns), all or nothing.

        A gateway keeping its gwid and address keeps its health state unless
        its ``state`` column changed. LoadError (one line naming the row) leaves
        the running tables as they were. Returns a summary."""
        gws = {}
        for row in gateways:
            try:
                gw = Gateway(row)
            except (TypeError, ValueError) as exc:
                raise LoadError(f"dr_gateways id {row.get('id')} "
                                f"({row.get('gwid')}): {exc}") from None
            if gw.gwid in gws:
                raise LoadError(f"dr_gateways id {gw.id}: gwid {gw.gwid!r} is given twice")
            old = self.gateways.get(gw.gwid)
            if old is not None and old.uri == gw.uri and old.state == gw.state:
                gw.probe = old.probe
            if gw.probe_mode == 2 and not gw.probe.state & DISABLED:
                gw.probe.state |= PROBING
            gws[gw.gwid] = gw
        crs = {}
        for row in carriers:
            try:
                cr = Carrier(row, gws)
            except (TypeError, ValueError) as exc:
                if isinstance(exc, LoadError):
                    raise
                raise LoadError(f"dr_carriers id {row.get('id')}: {exc}") from None
            if cr.carrierid in crs:
                raise LoadError(f"dr_carriers id {cr.id}: carrierid {cr.carrierid!r} "
                                "is given twice")
            crs[cr.carrierid] = cr
        rls = []
        for row in rules:
            try:
                rls.append(Rule(row, gws, crs))
            except (TypeError, ValueError) as exc:
                if isinstance(exc, LoadError):
                    raise
                raise LoadError(f"dr_rules ruleid {row.get('ruleid')}: {exc}") from None
        grps = {}
        for row in groups:
            user = _text(row.get("username")).strip()
            domain = _text(row.get("domain")).strip().lower()
            try:
                grps[(user, domain if self.use_domain else "")] = int(row.get("groupid") or 0)
            except (TypeError, ValueError):
                raise LoadError(f"dr_groups id {row.get('id')}: groupid "
                                f"{row.get('groupid')!r} is not an integer") from None
        by_group = {}
        for rule in rls:
            for group in rule.groups:
                by_group.setdefault(group, {}).setdefault(rule.prefix, []).append(rule)
        for prefixes in by_group.values():
            for bucket in prefixes.values():
                bucket.sort(key=lambda r: (-r.priority, r.id))
        by_host = {}
        for gw in gws.values():
            for addr in gw.addrs:
                by_host.setdefault(addr, []).append(gw)
        self.gateways, self.carriers, self.rules = gws, crs, rls
        self.by_group, self.groups, self._by_host = by_group, grps, by_host
        return {"gateways": len(gws), "carriers": len(crs), "rules": len(rls),
                "groups": len(grps)}

    # -- rule selection ---------------------------------------------------------------
    def group_of(self, user, domain):
        """The routing group of a caller (``dr_groups``), else ``default_group`` (-1: none)."""
        key = (user or "", (domain or "").lower() if self.use_domain else "")
        return self.groups.get(key, self.default_group)

    def candidate_rules(self, group, number, now, strict=False):
        """The rules that apply to ``number`` in ``group`` at ``now``, best
        first: longest prefix, then priority, then rule id. ``strict`` (flag
        ``L``) only takes a prefix as long as the number."""
        prefixes = self.by_group.get(group)
        if not prefixes:
            return []
        out = []
        for n in range(len(number), -1, -1):
            if strict and n != len(number) and n:
                continue
            bucket = prefixes.get(number[:n])
            if bucket:
                out.extend(r for r in bucket if r.active_at(now, self.tz))
        return out

    def order(self, rule):
        """The gateways of ``rule`` to try, in order: carriers expanded, sort
        algorithms applied, disabled gateways and carriers left out."""
        out = []
        for entry, _ in self._sorted(rule.gwlist, rule.sort_alg):
            if isinstance(entry, Carrier):
                if not entry.enabled:
                    continue
                usable = [gw for gw, _ in self._sorted(entry.gwlist, entry.sort_alg)
                          if gw.enabled]
                if entry.flags & CARRIER_FIRST_ONLY:
                    usable = usable[:1]
                out.extend((gw, entry) for gw in usable)
            elif entry.enabled:
                out.append((entry, None))
        return out

    def _sorted(self, entries, alg):
        if alg != "W":
            return list(entries)
        # weighted random order: each place drawn by weight among those left;
        # weight 0 entries keep their order at the end
        left = [e for e in entries if e[1] > 0]
        out = []
        while left:
            total = sum(w for _, w in left)
            pick = self._rng.random() * total
            for i, (_, w) in enumerate(left):
                pick -= w
                if pick < 0:
                    break
            out.append(left.pop(i))
        return out + [e for e in entries if e[1] <= 0]

    # -- route functions --------------------------------------------------------------
    def do_routing(self, ctx, group=None, flags=""):
        """OpenSIPS ``do_routing([group], [flags])``: pick the rule for the
        R-URI user and send the request to its first usable gateway. Flags:
        ``F`` fall back to the next rule when a rule's gateways are used up,
        ``L`` strict length prefix match, ``C`` only check that a gateway exists.
        False when no rule or no gateway applies."""
        user = ctx.request.uri.user or ""
        if group is None or group == "":
            address = ctx.request.address("from")
            uri = address.uri if address is not None else None
            if uri is not None and uri.is_sip:
                group = self.group_of(uri.user, uri.host)
            else:
                group = self.default_group
        group = int(group)
        rules = self.candidate_rules(group, user, ctx.now, strict="L" in flags)
        if not rules:
            self.stats["no_rule"] += 1
            return False
        if "F" not in flags:
            rules = rules[:1]
        call = DrCall(user, rules)
        if "C" in flags:
            return any(self.order(rule) for rule in rules)
        ctx.vars[DR] = call
        return self._next(ctx, call)

    def next_gw(self, ctx):
        """OpenSIPS ``use_next_gw()``: move the request to the next gateway
        (of the next rule with flag ``F``); False when none is left."""
        call = ctx.vars.get(DR)
        if call is None:
            return False
        return self._next(ctx, call)

    def _next(self, ctx, call):
        while True:
            while call.pending:
                gw, carrier = call.pending.pop(0)
                if gw.enabled and gw not in call.tried:
                    self._use(ctx, call, gw)
                    return True
            if not call.rules:
                self.stats["gateways_exhausted"] += 1
                return False
            call.rule = call.rules.pop(0)
            call.pending = self.order(call.rule)

    def _use(self, ctx, call, gw):
        user = call.user[gw.strip:] if gw.strip else call.user
        uri = ctx.request.uri.copy()
        uri.user = gw.pri_prefix + user
        ctx.set_ruri(parse_uri(uri._format()))
        ctx.set_dst(gw.uri_obj)
        call.current = gw
        call.tried.append(gw)
        self.stats["routed"] += 1

    def current(self, ctx):
        """The gateway the request was sent to, or None."""
        call = ctx.vars.get(DR)
        return None if call is None else call.current

    def disable_current(self, ctx):
        """OpenSIPS ``dr_disable()``: take the gateway in use out of routing;
        probing (modes 1 and 2) brings it back when it answers."""
        gw = self.current(ctx)
        if gw is None:
            return False
        self.prober.set_state(gw.probe, (gw.probe.state | INACTIVE | PROBING) & ~DISABLED,
                              "dr_disable after a failure")
        return True

    def is_from_gw(self, host, port, gw_type=-1, ignore_port=False):
        """OpenSIPS ``is_from_gw([type], [flags])``: does ``host:port`` belong
        to a gateway (of ``gw_type``; -1 any)? A gateway address without a
        port, or flag ``n``, matches any port."""
        for gw in self._by_host.get(host, ()):
            if gw_type != -1 and gw.type != gw_type:
                continue
            if not ignore_port and gw.port and port and gw.port != int(port):
                continue
            return True
        return False

    # -- operators --------------------------------------------------------------------
    def set_gw_status(self, gwid, status):
        """``dr.gw_status GWID 0|1|2``: disable (an operator's: never probed),
        enable, or probing (inactive until a probe is answered). KeyError for
        an unknown gwid, ValueError for another status."""
        gw = self.gateways[gwid]
        if status == 1:
            state = gw.probe.state & ~(INACTIVE | DISABLED)
            gw.probe.failures = 0
            if gw.probe_mode != 2:
                state &= ~PROBING
        elif status == 0:
            state = (gw.probe.state | DISABLED) & ~PROBING
        elif status == 2:
            state = (gw.probe.state | INACTIVE | PROBING) & ~DISABLED
        else:
            raise ValueError("status must be 0 (disable), 1 (enable) or 2 (probing)")
        self.prober.set_state(gw.probe, state, f"dr.gw_status {status}")
        return gw

    def set_carrier_status(self, carrierid, status):
        """``dr.carrier_status CARRIERID 0|1``: disable or enable a carrier."""
        carrier = self.carriers[carrierid]
        if status not in (0, 1):
            raise ValueError("status must be 0 (disable) or 1 (enable)")
        carrier.state = 0 if status else 1
        return carrier

    def gw_listing(self, gwid=None):
        """``dr.gw_status``: gateways with their address, state and probing."""
        gws = [self.gateways[gwid]] if gwid is not None else self.gateways.values()
        return [{"id": gw.gwid, "address": gw.address, "type": gw.type,
                 "state": _state_name(gw), "flags": gw.probe.letters,
                 "probe_mode": gw.probe_mode, "description": gw.description}
                for gw in gws]

    def number_routing(self, group, number, now):
        """``dr.number_routing GROUP NUMBER``: the rule and gateways a number
        would use now (without weighted draws: the listed order)."""
        rules = self.candidate_rules(int(group), number, now)
        if not rules:
            return {"group": int(group), "number": number, "rule": None, "gateways": []}
        rule = rules[0]
        gws = []
        for entry, weight in rule.gwlist:
            members = entry.gwlist if isinstance(entry, Carrier) else [(entry, weight)]
            for gw, w in members:
                user = number[gw.strip:] if gw.strip else number
                gws.append({"id": gw.gwid, "carrier": entry.carrierid
                            if isinstance(entry, Carrier) else None,
                            "weight": w if isinstance(entry, Carrier) else weight,
                            "uri": gw.uri, "user": gw.pri_prefix + user,
                            "state": _state_name(gw)})
        return {"group": int(group), "number": number,
                "rule": {"ruleid": rule.id, "prefix": rule.prefix, "priority": rule.priority,
                         "timerec": rule.timerec_text, "sort_alg": rule.sort_alg,
                         "description": rule.description},
                "gateways": gws}

    # -- probing ----------------------------------------------------------------------
    def _probe_targets(self):
        """The probes of the gateways their probe_mode pings this round: never
        disabled ones (an operator's), mode 1 only inactive ones."""
        out = []
        for gw in self.gateways.values():
            state = gw.probe.state
            if state & DISABLED or gw.probe_mode == 0:
                continue
            if gw.probe_mode == 1 and not state & INACTIVE:
                continue
            out.append(gw.probe)
        return out

    def _on_state_change(self, change):
        """The prober's StateChange: one log line (a warning unless active), a counter."""
        probe = change.target
        self.stats["gw_state_changes"] += 1
        emit = self.log.warn if probe.state & (STATE_BITS & ~PROBING) else self.log.info
        emit("drouting: gateway {gwid} {uri} {old} -> {new}: {why}", gwid=probe.gwid,
             uri=probe.uri, old=change.old, new=change.new, why=change.reason)
        for listener in self.listeners:
            listener(change)

    def metrics(self):
        """Prometheus families: 1 per gateway that takes calls, and the event counters."""
        up = [({"gwid": gw.gwid, "address": gw.address}, 1 if gw.enabled else 0)
              for gw in self.gateways.values()]
        yield ("sipdisp_dr_gateway_up", "gauge", "1 when a drouting gateway takes calls.", up)
        events = [({"event": name}, n) for name, n in sorted(self.stats.items())]
        yield ("sipdisp_dr_events_total", "counter", "drouting events: requests routed, "
               "no rule, gateways exhausted, gateway state changes, loads refused.", events)


def _state_name(gw):
    state = gw.probe.state
    if state & DISABLED:
        return "disabled"
    if state & INACTIVE:
        return "probing" if state & PROBING else "inactive"
    return "active"


__all__ = ["DR", "Carrier", "DRouting", "DrCall", "Gateway", "LoadError", "Rule",
           "gateway_uri", "parse_gwlist", "reply_codes", "sort_alg"]
