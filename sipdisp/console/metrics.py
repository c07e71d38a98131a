"""Prometheus metrics in the text exposition format (version 0.0.4), served
at ``/metrics`` on the management HTTP listener.

The core's counters (``core.stats``) and tables give the SIP, transaction,
connection and error metrics.  Other subsystems add theirs through a small
hook: any object in ``root.modules`` with a ``metrics()`` method returning
an iterable of ``(name, kind, help, samples)``, where ``kind`` is
``"counter"`` or ``"gauge"`` and ``samples`` is a number or an iterable of
``(labels_dict, number)``::

    def metrics(self):
        yield ("sipdisp_dialogs", "gauge", "Dialogs by state.",
               [({"state": s}, n) for s, n in self.count_by_state().items()])

Names without the ``sipdisp_`` prefix get it.  A hook that raises is logged
and counted in ``sipdisp_metrics_hook_errors_total``; the rest still render.

Two modules are read without a hook: a storage (``queue_depth``, ``stats()``)
and a dispatcher, whose ``dispatcher.list`` command gives the destination
states; a ``metrics()`` method on either replaces that.
"""

import math
import re
from collections import Counter

from twisted.python.failure import Failure

from .. import __version__
from ..logs import Logger

log = Logger()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
KINDS = ("counter", "gauge")

# core.stats keys with a metric of their own (the rest go to sipdisp_core_events_total)
_ERROR_KINDS = {"parse_errors": "parse", "internal_errors": "internal",
                "route_errors": "route"}
_NAMED = {
    "absorbed_retransmissions": ("sipdisp_sip_retransmissions_absorbed_total",
                                 "Request retransmissions absorbed by server transactions."),
    "dropped_replies": ("sipdisp_sip_replies_dropped_total",
                        "Replies matching no transaction and not ours to forward."),
}
_BY_LABEL = {
    "rcv_request": ("sipdisp_sip_requests_received_total", "method",
                    "SIP requests received, by method."),
    "rcv_reply": ("sipdisp_sip_replies_received_total", "status",
                  "SIP replies received, by status code."),
    "snd_request": ("sipdisp_sip_requests_sent_total", "method",
                    "SIP requests sent (relayed), by method; retransmissions not included."),
    "snd_reply": ("sipdisp_sip_replies_sent_total", "status",
                  "SIP replies sent (relayed or local), by status code; "
                  "retransmissions not included."),
}


class Family:
    """One metric family: name, kind, help and ``[(labels, value)]`` samples."""

    __slots__ = ("name", "kind", "help", "samples")

    def __init__(self, name, kind, help, samples=()):
        if kind not in KINDS:
            raise ValueError(f"metric {name}: kind must be counter or gauge, got {kind!r}")
        if not name.startswith("sipdisp_"):
            name = "sipdisp_" + name
        if not _NAME.match(name):
            raise ValueError(f"bad metric name {name!r}")
        self.name = name
        self.kind = kind
        self.help = help
        if isinstance(samples, (int, float)):
            samples = [({}, samples)]
        self.samples = []
        for labels, value in samples:
            for label in labels:
                if not _LABEL.match(label) or label.startswith("__"):
                    raise ValueError(f"metric {name}: bad label name {label!r}")
            self.samples.append((dict(labels), value))

    def render(self, out):
        """Append this family's lines to ``out``."""
        out.append(f"# HELP {self.name} {_escape_help(self.help)}")
        out.append(f"# TYPE {self.name} {self.kind}")
        for labels, value in self.samples:
            if labels:
                text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                out.append(f"{self.name}{{{text}}} {_number(value)}")
            else:
                out.append(f"{self.name} {_number(value)}")


def _escape_help(text):
    return str(text).replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value):
    value = float(value) if not isinstance(value, int) else int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
    return repr(value)


def core_families(root):
    """The metrics of the proxy core: messages, retransmissions, errors,
    transactions, connections, uptime and build."""
    sip = root.sip
    core = sip.core
    stats = core.stats
    labelled = {prefix: [] for prefix in _BY_LABEL}
    errors = {kind: 0 for kind in _ERROR_KINDS.values()}
    named = {key: 0 for key in _NAMED}
    other = []
    for key, value in list(stats.items()):
        if isinstance(key, tuple) and len(key) == 2 and key[0] in labelled:
            labelled[key[0]].append((key[1], value))
        elif key in _ERROR_KINDS:
            errors[_ERROR_KINDS[key]] += value
        elif key in named:
            named[key] += value
        elif isinstance(key, str):
            other.append(({"event": key}, value))
    families = []
    for prefix, (name, label, help) in _BY_LABEL.items():
        rows = sorted(labelled[prefix], key=lambda kv: str(kv[0]))
        families.append(Family(name, "counter", help, [({label: k}, v) for k, v in rows]))
    families.append(Family("sipdisp_sip_retransmissions_sent_total", "counter",
                           "Retransmissions sent by transactions (timers A, E, G).",
                           core.layer.stats_retransmitted))
    for key, (name, help) in _NAMED.items():
        families.append(Family(name, "counter", help, named[key]))
    families.append(Family("sipdisp_errors_total", "counter",
                           "Messages that failed: parse (unparsable or invalid), internal "
                           "(a bug caught), route (the route raised).",
                           [({"kind": k}, v) for k, v in sorted(errors.items())]))
    families.append(Family("sipdisp_core_events_total", "counter",
                           "Every other counter of the proxy core (stats.get), by name.",
                           sorted(other, key=lambda s: s[0]["event"])))
    families.append(Family("sipdisp_transactions", "gauge", "Live SIP transactions, by kind.",
                           [({"kind": "server"}, len(core.layer.servers)),
                            ({"kind": "client"}, len(core.layer.clients))]))
    switchboard = getattr(sip, "switchboard", None)
    by_proto = Counter()
    if switchboard is not None:
        for conn in list(switchboard.connections.values()):
            by_proto[getattr(conn, "proto", "unknown")] += 1
    families.append(Family("sipdisp_connections", "gauge",
                           "Open stream connections (TCP, TLS, WS, WSS), by transport.",
                           [({"proto": p}, by_proto.get(p, 0))
                            for p in sorted(set(by_proto) | {"tcp", "tls", "ws", "wss"})]))
    started = getattr(root, "started_at", None)
    if started is not None:
        families.append(Family("sipdisp_uptime_seconds", "gauge", "Seconds since start-up.",
                               root._reactor.seconds() - started))
        families.append(Family("sipdisp_process_start_time_seconds", "gauge",
                               "When the process started, seconds since the epoch.", started))
    families.append(Family("sipdisp_build_info", "gauge", "The sipdisp version (always 1).",
                           [({"version": __version__}, 1)]))
    return families


def storage_families(storage):
    """Gauges of a Storage (``queue_depth``, ``stats()``): write queue, spool, connection."""
    stats = storage.stats() if callable(getattr(storage, "stats", None)) else {}
    fams = [Family("sipdisp_db_queue_depth", "gauge",
                   "Database writes accepted and not yet committed.", storage.queue_depth)]
    if "spool_pending" in stats:
        fams.append(Family("sipdisp_db_spool_pending", "gauge",
                           "Records spooled to disk waiting for the database.",
                           stats["spool_pending"]))
    state = getattr(storage, "state", None)
    if state is not None:
        fams.append(Family("sipdisp_db_up", "gauge", "1 when the database is connected.",
                           1 if state == "connected" else 0))
    return fams


_DISPATCHER_STATES = {"A": "active", "I": "inactive", "T": "trying", "D": "disabled"}


def dispatcher_families(listing):
    """Destination gauges from a ``dispatcher.list`` result (Kamailio's shape:
    RECORDS -> SET -> TARGETS -> DEST with URI and FLAGS such as ``AP``)."""
    by_state = Counter()
    up, probing = [], []
    for record in listing.get("RECORDS") or []:
        dset = record.get("SET", {})
        setid = str(dset.get("ID"))
        for target in dset.get("TARGETS") or []:
            dest = target.get("DEST", {})
            flags = str(dest.get("FLAGS", ""))
            state = _DISPATCHER_STATES.get(flags[:1], "unknown")
            labels = {"set": setid, "uri": str(dest.get("URI"))}
            by_state[setid, state] += 1
            up.append((labels, 1 if state == "active" else 0))
            probing.append((labels, 1 if flags[1:2] == "P" else 0))
    sets = sorted({setid for setid, _ in by_state})
    return [
        Family("sipdisp_dispatcher_destinations", "gauge",
               "Dispatcher destinations by set and state (active, inactive, trying, disabled).",
               [({"set": setid, "state": state}, by_state.get((setid, state), 0))
                for setid in sets for state in _DISPATCHER_STATES.values()]),
        Family("sipdisp_dispatcher_destination_up", "gauge",
               "1 when the dispatcher destination is active.", up),
        Family("sipdisp_dispatcher_destination_probing", "gauge",
               "1 when the dispatcher destination is being probed (OPTIONS pings).", probing),
    ]


class MetricsCollector:
    """Renders the whole ``/metrics`` page for the service tree ``root``."""

    def __init__(self, root):
        self.root = root
        self.hook_errors = Counter()

    def _storage(self):
        return self.root.modules.storage

    def _dispatcher(self, module):
        """Destination gauges from ``dispatcher.list``, for a dispatcher without a hook."""
        registry = getattr(self.root, "registry", None)
        if module is None or callable(getattr(module, "metrics", None)) \
                or registry is None or "dispatcher.list" not in registry:
            return []
        box = []
        registry.call("dispatcher.list").addBoth(box.append)
        if not box or isinstance(box[0], Failure) or not isinstance(box[0], dict):
            if box and isinstance(box[0], Failure):
                self.hook_errors["dispatcher"] += 1
                log.failure("dispatcher.list failed for metrics", box[0])
            return []
        return dispatcher_families(box[0])

    def families(self):
        """Every family: the core's, the storage's, then each module's hook."""
        families = core_families(self.root)
        storage = self._storage()
        if storage is not None and hasattr(storage, "queue_depth") \
                and not callable(getattr(storage, "metrics", None)):
            families += storage_families(storage)
        modules = self.root.modules
        try:
            families += self._dispatcher(modules.dispatcher)
        except Exception:
            self.hook_errors["dispatcher"] += 1
            log.failure("dispatcher metrics failed")
        seen = set()
        for name, module in sorted(modules.items()):
            hook = getattr(module, "metrics", None)
            if not callable(hook) or id(module) in seen:
                continue
            seen.add(id(module))
            try:
                families += [item if isinstance(item, Family) else Family(*item)
                             for item in hook()]
            except Exception:
                self.hook_errors[name] += 1
                log.failure("metrics hook of module {name} failed", name=name)
        families.append(Family("sipdisp_metrics_hook_errors_total", "counter",
                               "Failures of a module's metrics() hook, by module.",
                               [({"module": m}, n) for m, n in sorted(self.hook_errors.items())]))
        return _merge(families)

    def render(self):
        """The exposition text."""
        out = []
        for family in self.families():
            family.render(out)
        return "\n".join(out) + "\n"


def _merge(families):
    """One family per name (samples of repeated names joined; a kind clash keeps the first)."""
    merged = {}
    for family in families:
        first = merged.get(family.name)
        if first is None:
            merged[family.name] = family
        elif first.kind == family.kind:
            first.samples.extend(family.samples)
        else:
            log.warn("metric {name} reported as both {a} and {b}; keeping {a}",
                     name=family.name, a=first.kind, b=family.kind)
    return list(merged.values())
