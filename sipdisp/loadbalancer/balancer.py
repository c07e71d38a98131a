"""The load balancer module, sans-IO (OpenSIPS load_balancer): groups of
destinations with capacities per resource, selection by free capacity,
failover, ``lb_is_destination`` and probing.

Calls are counted in dialog profiles, one per resource (``lb-pstn`` with
the destination id as value), so a call counts from the moment it is sent
to a destination until its dialog ends: answered calls until the BYE (or the
dialog timeout), failed and cancelled ones until the INVITE's final reply.
Nothing else keeps load, so nothing can leak: the load of a destination is
the number of live dialogs in its profile.

Probing is a :class:`~sipdisp.probing.Prober`'s, the dispatcher's state
machine in probing mode 1 with thresholds of 1: each destination has a
probe target as its health state, and the balancer turns the prober's state
changes into its log lines. OpenSIPS' ``probe_mode`` per destination
decides who is pinged: 0 never, 1 only while disabled (so probing
re-enables it), 2 always (probing disables and re-enables it).

Per-request state is ``ctx.vars["_lb_"]``: the group, the asked resources,
the flags, the destinations tried and the one in use.

Across a restart (dialog ``db_mode`` 1 or 2) the binding of a call to its
destination also lives in the dialog's variables (``dialog_vars``, key
``lb_dst``: ``"<id>:<resource>,<resource>"``). The dialog table restores its
profile memberships only for profiles defined when it reloads, and with
``load_balancer.source: db`` the ``lb-<resource>`` profiles are defined only
once the table is read; :meth:`LoadBalancer.rebind` counts every restored call
again from that variable, whichever of the two loads comes first.
"""

import random

from ..dispatcher.destination import resolve
from ..logs import Logger
from ..probing import (DISABLED, INACTIVE, PROBING, STATE_BITS, ProbedTable, ProbeTarget,
                       parse_reply_codes)
from ..sip.uri import parse_uri
from .resources import choose, format_resources, parse_resources

#: ``ctx.vars`` key of the request's load balancing state
LB = "_lb_"
#: prefix of the dialog profiles that count calls per resource
PROFILE_PREFIX = "lb-"
#: the dialog variable (``dialog_vars``) binding a call to its destination and resources
BINDING_VAR = "lb_dst"
PROBE_MODES = (0, 1, 2)


def profile_name(resource):
    """The dialog profile counting calls on ``resource``."""
    return PROFILE_PREFIX + resource


#: OpenSIPS' ``probing_reply_codes`` (``"501, 403"``) or Kamailio's syntax, as ReplyCodes
reply_codes = parse_reply_codes


class LbProbe(ProbeTarget):
    """A destination's health state; ``group`` is the one it was created in
    (a reload moving the destination keeps its probe)."""

    __slots__ = ("group",)

    def __init__(self, uri, group):
        super().__init__(uri)
        self.group = group


class LbDestination:
    """One destination of a group: URI, resources, probe mode and its health
    state (``probe``, an :class:`LbProbe`)."""

    __slots__ = ("id", "group", "uri", "uri_obj", "resources", "probe_mode", "attrs",
                 "description", "probe", "addrs", "port")

    def __init__(self, id, group, uri, resources, probe_mode=0, attrs="", description=""):
        if probe_mode not in PROBE_MODES:
            raise ValueError(f"probe_mode must be 0, 1 or 2, got {probe_mode!r}")
        self.id = int(id)
        self.group = int(group)
        self.uri = uri
        self.uri_obj = parse_uri(uri)
        if not self.uri_obj.is_sip or not self.uri_obj.host:
            raise ValueError(f"{uri!r} is not a SIP URI")
        self.resources = parse_resources(resources) if isinstance(resources, str) \
            else dict(resources)
        self.probe_mode = probe_mode
        self.attrs = attrs or ""
        self.description = description or ""
        self.probe = LbProbe(uri, self.group)
        self.addrs = resolve(self.probe.host)
        self.port = self.probe.port

    @property
    def enabled(self):
        """True if calls may be sent to it (not disabled by probing, failover or an operator)."""
        return not self.probe.state & (INACTIVE | DISABLED)

    def __repr__(self):
        return f"<LbDestination {self.id} group {self.group} {self.uri}>"


class LbCall:
    """What one request asked for and where it went (``ctx.vars["_lb_"]``)."""

    __slots__ = ("group", "resources", "flags", "tried", "current")

    def __init__(self, group, resources, flags):
        self.group = group
        self.resources = resources
        self.flags = flags
        self.tried = []
        self.current = None


class LoadBalancer(ProbedTable):
    """Destinations by group and everything routes and operators do with them.

    ``dialogs`` (a DialogTable) counts the calls; ``core`` (a ProxyCore) is
    needed for probing. ``log`` is a Logger-like object.
    """

    def __init__(self, dialogs, core=None, *, probing_interval=30.0, probing_method="OPTIONS",
                 probing_from="sip:prober@localhost", probing_reply_codes="",
                 probing_timeout=1.0, rng=None, log=None):
        self.dialogs = dialogs
        self.log = log or Logger(namespace="sipdisp.loadbalancer")
        self.destinations = []
        self.by_id = {}
        self.groups = {}
        self.source = "none"
        self._by_host = {}
        self._rng = rng or random.Random()
        self._defined = set()
        self.stats = {"rebound": 0}
        #: called with the destination after every change of its state here
        #: (probing, lb_disable_dst, lb.status): the cluster sync shares them
        self.state_listeners = []
        # mode 1, thresholds 1: one failed probe disables, one good reply enables;
        # Call-IDs keep the ds- prefix the balancer's pings have always had
        self._init_prober(interval=probing_interval, timeout=probing_timeout,
                          method=probing_method, from_uri=probing_from,
                          reply_codes=probing_reply_codes, call_id_prefix="ds", rng=self._rng)
        self.core = None
        if core is not None:
            self.attach(core)

    def reconfigure(self, now, probing_interval=None, probing_method=None, probing_from=None,
                    probing_reply_codes=None, probing_timeout=None):
        """Apply new probing parameters to the running balancer (SIGHUP)."""
        prober = self.prober
        if probing_method is not None:
            prober.configure(method=probing_method)
        if probing_from is not None:
            prober.configure(from_uri=probing_from)
        if probing_reply_codes is not None:
            prober.configure(reply_codes=reply_codes(probing_reply_codes))
        if probing_timeout is not None:
            prober.configure(timeout=probing_timeout)
        if probing_interval is not None and probing_interval != prober.interval:
            prober.set_interval(probing_interval, now)

    # -- destinations --------------------------------------------------------------------
    def load(self, rows, source=None):
        """Replace the destinations with ``rows`` (``load_balancer`` table
        columns: id, group_id, dst_uri, resources, probe_mode, attrs,
        description). A destination keeping its id and URI keeps its health
        state; its calls stay counted (they are counted by id). Returns a summary."""
        old = {d.id: d for d in self.destinations}
        dests = []
        kept = added = 0
        seen = set()
        for row in rows:
            dest = LbDestination(row["id"], row["group_id"], row["dst_uri"], row["resources"],
                                 int(row.get("probe_mode") or 0), row.get("attrs") or "",
                                 row.get("description") or "")
            if dest.id in seen:
                raise ValueError(f"destination id {dest.id} is given twice")
            seen.add(dest.id)
            previous = old.pop(dest.id, None)
            if previous is not None and previous.uri == dest.uri:
                dest.probe = previous.probe
                kept += 1
            else:
                added += 1
            self._initial_state(dest, previous is None or previous.uri != dest.uri)
            for resource in dest.resources:
                self._define(resource)
            dests.append(dest)
        self.destinations = dests
        self.by_id = {d.id: d for d in dests}
        groups = {}
        for dest in dests:
            groups.setdefault(dest.group, []).append(dest)
        self.groups = groups
        by_host = {}
        for dest in dests:
            for addr in dest.addrs:
                by_host.setdefault(addr, []).append(dest)
        self._by_host = by_host
        if source is not None:
            self.source = source
        # dialogs restored before these profiles existed count again now
        rebound = self.rebind()
        return {"groups": len(groups), "destinations": len(dests), "kept": kept,
                "added": added, "removed": len(old), "rebound": rebound}

    def _initial_state(self, dest, new):
        if new:
            dest.probe.state = 0
        if dest.probe_mode == 2:
            dest.probe.state |= PROBING

    def _define(self, resource):
        if resource not in self._defined:
            self.dialogs.profiles.define(profile_name(resource), True)
            self._defined.add(resource)

    def load_of(self, dest, resource):
        """Calls counted on ``resource`` of ``dest`` (its dialog profile size)."""
        if resource not in self._defined:
            return 0
        return self.dialogs.profiles.size(profile_name(resource), str(dest.id))

    # -- selection (route functions) --------------------------------------------------------
    def start(self, ctx, group, resources, flags=frozenset()):
        """OpenSIPS ``lb_start(group, resources[, flags])``: send the call to
        the destination of ``group`` with the most free capacity on the asked
        ``resources`` (a tuple) and count it there. False if none can take it."""
        call = LbCall(int(group), tuple(resources), frozenset(flags))
        ctx.vars[LB] = call
        return self._pick(ctx, call)

    def next(self, ctx):
        """OpenSIPS ``lb_next()``: move the call to the best destination not
        tried yet (failover); False when none is left."""
        call = ctx.vars.get(LB)
        if call is None:
            return False
        return self._pick(ctx, call)

    def start_or_next(self, ctx, group, resources, flags=frozenset()):
        """OpenSIPS ``lb_start_or_next``: ``next`` if this request already
        started load balancing, else ``start``."""
        if LB in ctx.vars:
            return self.next(ctx)
        return self.start(ctx, group, resources, flags)

    def _pick(self, ctx, call):
        dests = [d for d in self.groups.get(call.group, ())
                 if d.enabled and d not in call.tried
                 and all(r in d.resources for r in call.resources)]
        candidates = [[(d.resources[r], self.load_of(d, r)) for r in call.resources]
                      for d in dests]
        index = choose(candidates, call.flags, self._rng.random)
        if index is None:
            return False
        dest = dests[index]
        dlg = self._dialog(ctx)
        if dlg is not None:
            if call.current is not None:
                self._uncount(dlg, call.current, call.resources)
            for resource in call.resources:
                self.dialogs.profiles.add(dlg, profile_name(resource), str(dest.id))
            dlg.vars[BINDING_VAR] = binding_text(dest.id, call.resources)
            dlg.vars_stored = False  # rewrite dialog_vars with the new binding
        call.tried.append(dest)
        call.current = dest
        ctx.set_dst(dest.uri_obj)
        return True

    def _dialog(self, ctx):
        """The dialog that counts this call, created here if the route did not
        (as OpenSIPS does); None for requests other than an initial INVITE."""
        from ..dialog.table import DLG
        dlg = ctx.vars.get(DLG)
        if dlg is None and ctx.request.method == "INVITE" and ctx.request.to_tag is None:
            dlg = self.dialogs.create(ctx)
        return dlg

    def rebind(self):
        """Count again every dialog whose ``lb_dst`` variable binds it to a
        destination but that is not in that destination's profiles (dialogs
        restored after a restart before the profiles were defined). Idempotent;
        returns how many dialogs were counted again."""
        profiles = self.dialogs.profiles
        counted = 0
        for dlg in list(self.dialogs.dialogs.values()):
            text = dlg.vars.get(BINDING_VAR)
            if not text:
                continue
            try:
                dest_id, resources = parse_binding(text)
            except ValueError as exc:
                self.log.warn("load_balancer: dialog {id}: ignoring a bad {var} variable: {err}",
                              id=dlg.id, var=BINDING_VAR, err=exc)
                continue
            added = False
            for resource in resources:
                self._define(resource)
                added = profiles.add(dlg, profile_name(resource), str(dest_id)) or added
            counted += added
        if counted:
            self.stats["rebound"] += counted
            self.log.info("load_balancer: {n} restored call(s) counted again on their "
                          "destinations", n=counted)
        return counted

    def _uncount(self, dlg, dest, resources):
        for resource in resources:
            self.dialogs.profiles.remove(dlg, profile_name(resource), str(dest.id))

    def current(self, ctx):
        """The destination the request was sent to, or None."""
        call = ctx.vars.get(LB)
        return None if call is None else call.current

    def disable_current(self, ctx):
        """OpenSIPS ``lb_disable_dst()``: take the destination in use out of
        selection; probing (modes 1 and 2) brings it back when it answers."""
        dest = self.current(ctx)
        if dest is None:
            return False
        self._set_state(dest, (dest.probe.state | INACTIVE | PROBING) & ~DISABLED,
                        "lb_disable_dst after a failure")
        return True

    def is_destination(self, host, port=0, group=-1, active=False):
        """OpenSIPS ``lb_is_destination(ip, port[, group[, active]])``: is
        ``host:port`` a destination (of ``group``; -1 any)? Port 0 matches any."""
        for dest in self._by_host.get(host, ()):
            if group != -1 and dest.group != group:
                continue
            if port and dest.port != int(port):
                continue
            if active and not dest.enabled:
                continue
            return True
        return False

    # -- operators --------------------------------------------------------------------------
    def set_status(self, dest_id, enabled):
        """``lb.status ID 0|1``: disable (administratively: probing leaves it
        alone) or enable a destination. KeyError for an unknown id."""
        dest = self.by_id[int(dest_id)]
        if enabled:
            state = dest.probe.state & ~(INACTIVE | DISABLED)
            dest.probe.failures = 0
        else:
            state = (dest.probe.state | DISABLED) & ~PROBING
        self._set_state(dest, state, f"lb.status {int(bool(enabled))}")
        return dest

    def resize(self, dest_id, resource, capacity):
        """``lb.resize ID RESOURCE CAPACITY``: change one capacity at run time
        (until the next reload). KeyError for an unknown id or resource."""
        dest = self.by_id[int(dest_id)]
        if resource not in dest.resources:
            raise KeyError(f"destination {dest.id} has no resource {resource!r}")
        if int(capacity) < 0:
            raise ValueError("the capacity must be >= 0")
        dest.resources[resource] = int(capacity)
        return dest

    def _on_state_change(self, change):
        """The prober's StateChange: one log line, a warning unless active."""
        probe = change.target
        if self.state_listeners:
            for dest in self.destinations:
                if dest.probe is probe:
                    for listener in self.state_listeners:
                        listener(dest)
        emit = self.log.warn if probe.state & (STATE_BITS & ~PROBING) else self.log.info
        # the field names of the dispatcher's line: JSON log consumers see the same event
        emit("load_balancer: {uri} (group {setid}) {old} -> {new}: {why}",
             uri=probe.uri, setid=probe.group, old=change.old, new=change.new,
             why=change.reason)

    def apply_state(self, dest_id, state, why):
        """Give destination ``dest_id`` the state bits ``state`` (another
        cluster node's); False for an unknown id."""
        dest = self.by_id.get(int(dest_id))
        if dest is None:
            return False
        self._set_state(dest, state, why)
        return True

    def _set_state(self, dest, state, why):
        old, old_state = dest.probe.letters, dest.probe.state
        dest.probe.state = state
        if state != old_state:
            for listener in self.state_listeners:
                listener(dest)
        if dest.probe.letters != old:
            emit = self.log.warn if not dest.enabled else self.log.info
            emit("load_balancer: {uri} (group {group}, id {id}) {old} -> {new}: {why}",
                 uri=dest.uri, group=dest.group, id=dest.id, old=old,
                 new=dest.probe.letters, why=why)

    # -- probing ------------------------------------------------------------------------------
    def _probe_targets(self):
        """The probes of the destinations their probe_mode pings this round:
        never disabled ones (lb.status 0 is the operator's), mode 1 only inactive ones."""
        targets = []
        for dest in self.destinations:
            state = dest.probe.state
            if state & DISABLED or dest.probe_mode == 0:
                continue
            if dest.probe_mode == 1 and not state & INACTIVE:
                continue
            targets.append(dest.probe)
        return targets

    # -- listing and metrics --------------------------------------------------------------------
    def listing(self):
        """``lb.list``: every destination with its resources, capacities and loads."""
        out = []
        for dest in self.destinations:
            out.append({
                "id": dest.id, "group": dest.group, "uri": dest.uri,
                "enabled": "yes" if dest.enabled else "no",
                "state": dest.probe.letters,
                "auto-re": "on" if dest.probe_mode else "off", "probe_mode": dest.probe_mode,
                "description": dest.description,
                "resources": [{"name": name, "max": cap, "load": self.load_of(dest, name)}
                              for name, cap in dest.resources.items()],
            })
        return {"source": self.source, "destinations": out}

    def row_of(self, dest):
        """The ``load_balancer`` row of a destination (for tools and tests)."""
        return {"id": dest.id, "group_id": dest.group, "dst_uri": dest.uri,
                "resources": format_resources(dest.resources), "probe_mode": dest.probe_mode,
                "attrs": dest.attrs, "description": dest.description}

    def metrics(self):
        """Prometheus families: load and capacity per destination and resource, and health."""
        load, cap, up = [], [], []
        for dest in self.destinations:
            base = {"id": str(dest.id), "group": str(dest.group), "uri": dest.uri}
            for name, capacity in dest.resources.items():
                labels = dict(base, resource=name)
                load.append((labels, self.load_of(dest, name)))
                cap.append((labels, capacity))
            up.append((base, 1 if dest.enabled else 0))
        yield ("sipdisp_lb_load", "gauge", "Calls counted on a load balancer destination, "
               "by resource.", load)
        yield ("sipdisp_lb_capacity", "gauge", "Capacity of a load balancer destination, "
               "by resource.", cap)
        yield ("sipdisp_lb_destination_up", "gauge", "1 when a load balancer destination "
               "takes calls.", up)


def binding_text(dest_id, resources):
    """The ``lb_dst`` dialog variable: ``"7:pstn,vm"``."""
    return f"{int(dest_id)}:{','.join(resources)}"


def parse_binding(text):
    """``"7:pstn,vm"`` -> ``(7, ("pstn", "vm"))``; ValueError when malformed."""
    dest_id, sep, names = str(text).partition(":")
    resources = tuple(r.strip() for r in names.split(",") if r.strip())
    if not sep or not dest_id.strip().isdigit() or not resources:
        raise ValueError(f"expected '<id>:<resource>[,<resource>...]', got {text!r}")
    return int(dest_id), resources


def rows_from_config(entries):
    """``load_balancer.destinations`` entries as table rows (ids 1, 2 ... when not given)."""
    rows = []
    for n, entry in enumerate(entries, 1):
        rows.append({"id": entry.get("id", n), "group_id": entry["group"],
                     "dst_uri": entry["uri"], "resources": entry["resources"],
                     "probe_mode": entry.get("probe_mode", 0),
                     "attrs": entry.get("attrs", ""), "description": entry.get("description", "")})
    return rows


__all__ = ["BINDING_VAR", "LB", "LbCall", "binding_text", "parse_binding", "LbDestination", "LoadBalancer", "profile_name", "reply_codes",
           "rows_from_config"]
