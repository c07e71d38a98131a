"""The management of a node run as worker processes (``processes: N``).

Each worker (environment ``SIPDISP_WORKER=k``) serves the JSON-RPC of its own
command registry on a private Unix socket, :func:`worker_control_path`
(mode 0600: only the node's user reaches it), instead of the public SSH and
HTTP listeners.  The supervisor parent runs no SIP core: its console, JSON-RPC
over HTTP, ``/metrics`` and ``sipdisp-ctl`` are answered by
:class:`NodeManagement`, which calls each command on every worker's socket and
merges the answers (:func:`merge_results`): numbers in dicts summed, lists
concatenated with a ``worker`` field on each item, commands that act reported
per worker; a worker that does not answer within ``console.worker_timeout`` is
reported down instead of holding the answer.

The control protocol is one JSON-RPC 2.0 request per line, answered by one
line, over a Unix stream socket (no HTTP: nothing but the parent talks to it).
"""

import hashlib
import inspect
import os
import tempfile
import types
from collections import Counter

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.web import resource, server

from ..commands import CommandRegistry
from ..console import register_system_commands
from ..console.control import CONTROL_ENV, WORKER_ENV, ControlDown, call_control
from ..console.jsonrpc import INTERNAL_ERROR, RpcError
from ..console.listening import core_stats
from ..console.manhole import ConsoleService
from ..console.metrics import CONTENT_TYPE, Family
from ..console.web import HttpService, ManagementRoot, ManagementSite
from ..logs import Logger

log = Logger()

__all__ = ["CONTROL_ENV", "WORKER_ENV", "CounterCarry", "NodeManagement", "add_node_management",
           "merge_metrics", "merge_results", "merge_values", "worker_control_path",
           "worker_handoff_path",
           "worker_index"]

_SUN_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, the final NUL excluded
DOWN_LOG_INTERVAL = 60.0  # seconds between two warnings of the same worker not answering
DISCOVER_RETRY = 1.0  # seconds between tries to learn the commands while no worker answers


def worker_control_path(cfg, k):
    """The Unix socket path of worker ``k``'s control endpoint: beside the node
    secret (``proxy.secret_file``'s directory, ``var`` by default), or, when
    that absolute path would pass the 107 bytes of a Unix socket path, a short
    name in the temporary directory derived from that directory (so two nodes
    started from different directories never share one)."""
    directory = os.path.dirname(cfg.proxy.secret_file) or "."
    path = os.path.join(directory, f"worker-{k}.ctl")
    if len(os.fsencode(os.path.abspath(path))) <= _SUN_PATH_MAX:
        return path
    tag = hashlib.sha256(os.fsencode(os.path.abspath(directory))).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"sipdisp-{tag}-worker-{k}.ctl")


def worker_handoff_path(cfg, k):
    """The Unix socket path on which worker ``k`` takes the UDP datagrams other
    workers hand it (transport/handoff.py): its control socket's, ``.hnd``
    instead of ``.ctl``."""
    return worker_control_path(cfg, k)[:-len(".ctl")] + ".hnd"


def worker_index(environ=None):
    """This process's worker number (``SIPDISP_WORKER``), or None outside a worker."""
    value = (os.environ if environ is None else environ).get(WORKER_ENV)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{WORKER_ENV} must be a worker number, got {value!r}") from None


# --- merge rules (pure) ------------------------------------------------------

#: verbs of commands that only read: their answers are merged into one; any
#: other command acts (reload, set_state, add ...) and is reported per worker
QUERY_VERBS = frozenset((
    "get", "list", "dump", "stats", "status", "lookup", "fetch", "top", "watchers",
    "uptime", "version", "gw_status", "carrier_status", "number_routing",
    "profile_get_size", "listMethods", "methodHelp"))


def is_query(name):
    """True when command ``name`` only reads (its verb is in QUERY_VERBS, or starts
    with list/get/dump/stats/status)."""
    verb = name.rsplit(".", 1)[-1]
    return verb in QUERY_VERBS or verb.startswith(("list", "get", "dump", "stats", "status"))


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def merge_values(values):
    """One value from the ``[(worker, value)]`` answers of a query:

    - dicts: merged key by key (a key missing on a worker is merged from the others);
    - lists: concatenated, each dict item copied with ``worker`` added;
    - numbers: summed;
    - equal values: that value;
    - None beside other answers: left out (a lookup found on one worker only);
    - anything else: ``{"per_worker": {"k": value}}``.
    """
    present = [(k, v) for k, v in values if v is not None]
    if not present:
        return None
    values = present
    if all(isinstance(v, dict) for _, v in values):
        keys = []
        for _, v in values:
            keys.extend(key for key in v if key not in keys)
        return {key: merge_values([(k, v[key]) for k, v in values if key in v])
                for key in keys}
    if all(isinstance(v, list) for _, v in values):
        out = []
        for k, v in values:
            out.extend(dict(item, worker=k) if isinstance(item, dict) else item for item in v)
        return out
    if all(_number(v) for _, v in values):
        return sum(v for _, v in values)
    first = values[0][1]
    if all(v == first for _, v in values):
        return first
    return {"per_worker": {str(k): v for k, v in values}}


def _error_text(answer):
    if answer[0] == "down":
        return answer[1]
    return f"{answer[2]} ({answer[1]})" + (f": {answer[3]}" if answer[3] is not None else "")


def merge_results(name, answers):
    """The node's answer to command ``name`` from ``[(worker, answer)]``, where an
    answer is ``("ok", result)``, ``("error", code, message, data)`` (the
    worker's JSON-RPC error) or ``("down", reason)``.

    A query (:func:`is_query`) gets :func:`merge_values` of the results; the
    workers that failed are listed beside it (``workers_down`` in a dict, an
    item ``{"worker", "down", "error"}`` in a list, else the result is wrapped as
    ``{"result", "workers_down"}``).  A command that acts gets
    ``{"workers": [{"worker", "result"} or {"worker", "error"} or
    {"worker", "down", "error"}]}``.  RpcError when no worker gave a result:
    the workers' own error when they all gave the same one, else -32603.
    """
    ok = [(k, a[1]) for k, a in answers if a[0] == "ok"]
    failed = [(k, a) for k, a in answers if a[0] != "ok"]
    if not ok:
        errors = {a[1:] for _, a in failed if a[0] == "error"}
        if len(errors) == 1 and len(failed) == len([a for _, a in failed if a[0] == "error"]):
            code, message, data = next(iter(errors))
            raise RpcError(code, message, data)
        raise RpcError(INTERNAL_ERROR, "no worker answered",
                       [{"worker": k, "error": _error_text(a)} for k, a in failed])
    if not is_query(name):
        rows = []
        for k, a in answers:
            if a[0] == "ok":
                rows.append({"worker": k, "result": a[1]})
            elif a[0] == "error":
                rows.append({"worker": k, "error": {"code": a[1], "message": a[2],
                                                    "data": a[3]}})
            else:
                rows.append({"worker": k, "down": True, "error": a[1]})
        return {"workers": rows}
    result = merge_values(ok)
    if not failed:
        return result
    down = [{"worker": k, "down": a[0] == "down", "error": _error_text(a)} for k, a in failed]
    if isinstance(result, dict):
        return dict(result, workers_down=down)
    if isinstance(result, list):
        return result + down
    return {"result": result, "workers_down": down}


def _max_not_sum(name):
    """Gauges that say a state (1 = up, the build) or an age: the largest, not the sum."""
    return name.endswith(("_up", "_probing", "_info", "_uptime_seconds", "_start_time_seconds"))


class CounterCarry:
    """Keeps the node's counters counting across a worker's restart: a
    restarted worker starts its counters at zero, which would make the node's
    sums fall (a counter reset to Prometheus, a step back in a graph). Every
    answer of a worker is :meth:`observe`d; when its uptime falls (or, without
    one, any of its counters), it restarted, and the counters it last
    reported are carried, added to the node's from then on (:meth:`apply`).
    A restart is told by the worker's start time (``sipdisp_process_start_time_seconds``)
    changing or, without one, by any of its counters falling.
    What a worker counted after its last observed answer dies with it, which
    is why the supervisor also asks every ``workers.metrics_poll`` seconds."""

    def __init__(self):
        self._last = {}  # worker -> (start time or None, {(name, labels): value})
        self.carried = Counter()  # (name, labels) -> counts of earlier runs
        self.restarts_seen = 0

    def observe(self, k, families):
        """Take worker ``k``'s metric families (``worker.metrics``' answer)."""
        started = None
        counters = {}
        for name, kind, _help, samples in families:
            if name == "sipdisp_process_start_time_seconds" and samples:
                started = samples[0][1]
            elif kind == "counter":
                for labels, value in samples:
                    counters[(name, tuple(sorted(labels.items())))] = value
        last = self._last.get(k)
        if last is not None:
            before, old = last
            if before is not None and started is not None:
                restarted = started != before
            else:
                restarted = any(counters.get(key, 0) < value for key, value in old.items())
            if restarted:
                self.restarts_seen += 1
                self.carried.update(old)
        self._last[k] = (started, counters)

    def apply(self, families):
        """Add the carried counts to the merged ``families`` (Family objects),
        adding the samples only an earlier run had."""
        if not self.carried:
            return families
        by_name = {f.name: f for f in families if f.kind == "counter"}
        pending = dict(self.carried)
        for name, family in by_name.items():
            rows = []
            for labels, value in family.samples:
                key = (name, tuple(sorted(labels.items())))
                rows.append((labels, value + pending.pop(key, 0)))
            family.samples = rows
        for (name, labels), value in pending.items():
            family = by_name.get(name)
            if family is not None:
                family.samples.append((dict(labels), value))
        return families


def merge_metrics(answers, worker_count):
    """The node's metric families from ``[(worker, families or None)]``, each
    family ``[name, kind, help, [[labels, value]...]]`` (``worker.metrics``),
    None for a worker that did not answer: samples with the same labels summed
    across workers (the largest for state and age gauges such as
    ``sipdisp_build_info``), plus ``sipdisp_workers_up``, ``sipdisp_workers``
    and ``sipdisp_worker_up{worker}``."""
    merged = {}
    for _, families in answers:
        for name, kind, help, samples in families or ():
            entry = merged.get(name)
            if entry is None:
                entry = merged[name] = (kind, help, {})
            elif entry[0] != kind:
                continue
            table = entry[2]
            for labels, value in samples:
                key = tuple(sorted(labels.items()))
                if key not in table:
                    table[key] = (labels, value)
                elif _max_not_sum(name):
                    table[key] = (labels, max(table[key][1], value))
                else:
                    table[key] = (labels, table[key][1] + value)
    out = [Family(name, kind, help, list(table.values()))
           for name, (kind, help, table) in merged.items()]
    up = {k for k, families in answers if families is not None}
    out.append(Family("sipdisp_workers_up", "gauge",
                      "Worker processes answering the supervisor.", len(up)))
    out.append(Family("sipdisp_workers", "gauge", "Worker processes configured (processes).",
                      worker_count))
    out.append(Family("sipdisp_worker_up", "gauge", "1 when the worker answers, by worker.",
                      [({"worker": str(k)}, 1 if k in up else 0)
                       for k in range(1, worker_count + 1)]))
    return out


# --- the supervisor's management ---------------------------------------------

_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict, "list": list}


def _signature(params):
    """An inspect.Signature from a command's described parameters, so the parent's
    CommandRegistry converts and checks arguments as the workers' would."""
    out = []
    for p in params:
        default = inspect.Parameter.empty if p["required"] else p["default"]
        out.append(inspect.Parameter(p["name"], inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                     default=default,
                                     annotation=_TYPES.get(p["type"], object)))
    return inspect.Signature(out)


class NodeManagement(MultiService):
    """The supervisor's management of a node of ``worker_count`` workers: a
    service-tree root for the console and HTTP services (``cfg``,
    ``registry``, ``modules``), whose registry holds every worker command,
    learnt from the first worker that answers ``worker.commands``, each
    calling all workers and merging (:func:`merge_results`)."""

    def __init__(self, cfg, worker_count, reactor=None):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.cfg = cfg
        self.worker_count = worker_count
        self.timeout = cfg.console.worker_timeout
        self.registry = CommandRegistry()
        self.modules = types.SimpleNamespace()  # no subsystem lives in the supervisor
        self.sip = None
        self.started_at = None
        self.commands_known = False
        self._retry = None
        self.unanswered = Counter()  # calls a worker did not answer, by worker
        self.carry = CounterCarry()
        self._poll = None
        self._warned = {}
        register_system_commands(self.registry)
        self._register_local()

    def control_path(self, k):
        """Worker ``k``'s control socket."""
        return worker_control_path(self.cfg, k)

    def _register_local(self):
        registry = self.registry

        @registry.command("core.uptime")
        def uptime() -> dict:
            """Seconds since the node (its supervisor) started."""
            now = self._reactor.seconds()
            return {"now": now, "up_since": self.started_at,
                    "uptime": None if self.started_at is None else now - self.started_at}

        @registry.command("workers.list")
        def workers() -> list:
            """Each worker's number, pid and whether it answers."""
            return self.workers_status()

    def workers_status(self):
        """Deferred list of ``{"worker", "up", "pid"}`` (``error`` when down)."""
        def row(pair):
            k, answer = pair
            if answer[0] == "ok":
                return {"worker": k, "up": True, "pid": answer[1].get("pid")}
            return {"worker": k, "up": False, "error": _error_text(answer)}
        return self.ask_all("worker.info", {}).addCallback(lambda rows: [row(r) for r in rows])

    def startService(self):
        """Start the listeners and learn the workers' commands."""
        self.started_at = self._reactor.seconds()
        super().startService()
        self.discover()
        interval = self.cfg.workers.metrics_poll
        if interval > 0:
            from twisted.internet.task import LoopingCall
            self._poll = LoopingCall(self.poll_metrics)
            self._poll.clock = self._reactor
            self._poll.start(interval, now=False)

    def poll_metrics(self):
        """Ask every worker for its metrics and observe them (:class:`CounterCarry`)."""
        def observe(answers):
            self._observe(answers)
        return self.ask_all("worker.metrics", {}).addCallback(observe)

    def _observe(self, answers):
        per_worker = [(k, a[1] if a[0] == "ok" else None) for k, a in answers]
        for k, families in per_worker:
            if families is not None:
                self.carry.observe(k, families)
        return per_worker

    def stopService(self):
        """Stop retrying and stop the listeners."""
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        self._poll = None
        return super().stopService()

    def ask(self, k, method, params):
        """Deferred ``("ok", result)``, ``("error", code, message, data)`` or
        ``("down", reason)``: worker ``k``'s answer; never fails."""
        request = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
        d = call_control(self._reactor, self.control_path(k), request, self.timeout)

        def answer(response):
            if not isinstance(response, dict):
                return ("down", "answer is not a JSON-RPC response")
            if "error" in response:
                e = response["error"] or {}
                return ("error", e.get("code", INTERNAL_ERROR), e.get("message", ""),
                        e.get("data"))
            return ("ok", response.get("result"))

        def down(failure):
            if not failure.check(ControlDown):
                log.failure("control call to worker {k} failed", failure, k=k)
            reason = failure.getErrorMessage()
            self.unanswered[k] += 1
            now = self._reactor.seconds()
            if now - self._warned.get(k, -DOWN_LOG_INTERVAL) >= DOWN_LOG_INTERVAL:
                self._warned[k] = now
                log.warn("node management: worker {k} did not answer {method}: {reason} "
                         "(reported down; logged at most once a minute)",
                         k=k, method=method, reason=reason)
            return ("down", reason)
        return d.addCallback(answer).addErrback(down)

    def ask_all(self, method, params):
        """Deferred ``[(worker, answer)]`` of every worker, asked at once."""
        ks = list(range(1, self.worker_count + 1))
        d = defer.gatherResults([self.ask(k, method, params) for k in ks])
        return d.addCallback(lambda answers: list(zip(ks, answers)))

    def call(self, name, params):
        """Deferred node answer to command ``name`` with keyword ``params``."""
        d = self.ask_all(name, params)
        return d.addCallback(lambda answers: merge_results(name, answers))

    def discover(self):
        """Learn the commands from the first worker that answers; retried every
        DISCOVER_RETRY seconds while none does.  Deferred firing with True once known."""
        self._retry = None

        def first(answers):
            for k, answer in answers:
                if answer[0] == "ok":
                    self._learn(answer[1])
                    log.info("node management: {n} commands learnt from worker {k}",
                             n=len(self.registry), k=k)
                    return True
            if self.running:
                self._retry = self._reactor.callLater(DISCOVER_RETRY, self.discover)
            return False
        return self.ask_all("worker.commands", {}).addCallback(first)

    def _learn(self, described):
        local = set(self.registry.names())
        for item in described:
            name = item["name"]
            if name in local or name.startswith(("worker.", "system.")):
                continue
            self.registry.register(name, self._remote(name, item), item.get("help"))
        self.commands_known = True

    def _remote(self, name, item):
        def remote(**kwargs):
            return self.call(name, kwargs)
        remote.__signature__ = _signature(item.get("params", []))
        remote.__doc__ = item.get("doc") or item.get("help")
        remote.__name__ = name.replace(".", "_")
        return remote

    def metrics_text(self):
        """Deferred ``/metrics`` text of the whole node."""
        def render(answers):
            per_worker = self._observe(answers)
            lines = []
            families = self.carry.apply(merge_metrics(per_worker, self.worker_count))
            families.append(Family(
                "sipdisp_worker_restarts_carried_total", "counter",
                "Worker restarts whose counters the node carried on (workers.metrics_poll).",
                self.carry.restarts_seen))
            families.append(Family(
                "sipdisp_worker_unanswered_total", "counter",
                "Calls of the supervisor a worker did not answer in console.worker_timeout "
                "(or refused), by worker.",
                [({"worker": str(k)}, self.unanswered[k])
                 for k in range(1, self.worker_count + 1)]))
            for family in families:
                family.render(lines)
            return "\n".join(lines) + "\n"
        return self.ask_all("worker.metrics", {}).addCallback(render)


class NodeMetricsResource(resource.Resource):
    """``GET /metrics`` of the supervisor: every worker's metrics merged."""

    isLeaf = True

    def __init__(self, node):
        super().__init__()
        self.node = node

    def render_GET(self, request):
        """The node's metrics page, when the workers have answered (or timed out)."""
        finished = []
        request.notifyFinish().addBoth(finished.append)

        def respond(text):
            if finished:
                return
            request.setHeader(b"content-type", CONTENT_TYPE.encode("ascii"))
            request.write(text.encode("utf-8"))
            request.finish()

        def broken(failure):
            log.failure("node metrics failed", failure)
            if not finished:
                request.setResponseCode(500)
                request.finish()
        self.node.metrics_text().addCallback(respond).addErrback(broken)
        return server.NOT_DONE_YET


def make_node_site(node):
    """The management HTTP Site of the supervisor: the workers' JSON-RPC merged
    by ``node.registry`` and their metrics by NodeMetricsResource, behind the
    same guards (``http.*``) as a single process's."""
    cfg = node.cfg.http
    stats = core_stats(node)
    site = ManagementSite(None, cfg, stats, node._reactor)
    rpc_errors = site.alarms["rpc"]
    root = ManagementRoot(node.registry, None, cfg.token_sha256, cfg.metrics_need_token,
                          cfg.max_body_size, cfg.max_json_depth,
                          lambda reason: rpc_errors.trip(reason=reason))
    root.putChild(b"metrics", NodeMetricsResource(node))
    site.resource = root
    return site


class NodeHttpService(HttpService):
    """The supervisor's HTTP listener (``http.*``): JSON-RPC and /metrics of the node."""

    def _listen(self):
        host, port = self.cfg.listen
        self.port = self._reactor.listenTCP(port, make_node_site(self.root), interface=host)
        bound = self.port.getHost()
        log.info("listening on http:{host}:{port} (the node's {n} workers)",
                 host=bound.host, port=bound.port, n=self.root.worker_count)


def add_node_management(root, reactor=None, worker_count=None):
    """Attach to the supervisor's service tree ``root`` (with ``root.cfg`` and,
    unless given, ``root.worker_count``) a NodeManagement serving the
    configured console and HTTP listeners for the whole node; returns it."""
    if worker_count is None:
        worker_count = root.worker_count
    node = NodeManagement(root.cfg, worker_count, reactor)
    cfg = root.cfg
    if cfg.console.enabled:
        ConsoleService(node, cfg.console, node._reactor).setServiceParent(node)
    if cfg.http.enabled:
        NodeHttpService(node, cfg.http, node._reactor).setServiceParent(node)
    node.setName("management")
    node.setServiceParent(root)
    return node
