"""An in-memory proxy for dispatcher and routing tests: a real ProxyCore with
the configured dispatcher and compiled route, fed bytes with an explicit
clock. Outgoing messages come back parsed, with where they were sent."""

from sipdisp.schema import config_from_dict
from sipdisp.dispatcher.service import dispatcher_from_config
from sipdisp.proxy import ProxyCore
from sipdisp.proxy.target import Listener, Target
from sipdisp.routing import Modules, build_routing
from sipdisp.shipped import shipped_functions
from sipdisp.sip import parse_message

PROXY = ("127.0.0.1", 5060)
UAC = ("127.0.0.1", 5070)


class Ctx:
    """The slice of RequestContext the dispatcher uses."""

    def __init__(self, raw, now=0.0):
        self.request = parse_message(raw)
        self.now = now
        self.vars = {}
        self.dst_uri = None
        self.proxy_txn = None
        self.failed_branch = None

    def set_dst(self, uri):
        """$du, as RequestContext.set_dst (a URI object here)."""
        self.dst_uri = uri

    def set_ruri(self, uri):
        """The Request-URI, as RequestContext.set_ruri."""
        self.request.uri = uri


class Recorder:
    """A Logger stand-in collecting formatted lines."""

    def __init__(self):
        self.lines = []

    def _emit(self, fmt, **kw):
        self.lines.append(fmt.format(**kw))

    info = warn = error = debug = _emit


class Proxy:
    """ProxyCore + Dispatcher + compiled route on a UDP listener 127.0.0.1:5060;
    ``secret`` is the node secret (random when None)."""

    def __init__(self, config=None, rows=(), now=0.0, secret=None):
        raw = {"console": {"enabled": False}, "http": {"enabled": False}}
        for key, value in (config or {}).items():
            raw[key] = value
        self.cfg = config_from_dict(raw)
        self.listener = Listener(1, "udp", *PROXY)
        cfg = self.cfg
        self.core = ProxyCore([self.listener], None, t1=cfg.sip.t1, t2=cfg.sip.t2,
                              t4=cfg.sip.t4, fr_timer=cfg.sip.fr_timer,
                              fr_inv_timer=cfg.sip.fr_inv_timer,
                              max_forwards=cfg.proxy.max_forwards, secret=secret)
        self.log = Recorder()
        self.dispatcher = dispatcher_from_config(cfg, self.core)
        self.dispatcher.log = self.log
        self.dispatcher.load([{"setid": s, "destination": u, "flags": f, "priority": p,
                               "attrs": a} for s, u, f, p, a in
                              (_row(r) for r in rows)], now)
        self.core.modules = Modules(dispatcher=self.dispatcher)
        self.routing = build_routing(cfg, shipped_functions(), self.core.modules, self.core)
        self.core.route = self.routing.entry
        self.now = now
        self.dispatcher.start(now)

    def send(self, data, source=UAC, proto="udp"):
        """Feed ``data`` from ``source``; returns ``[(message, (host, port))]`` sent."""
        target = Target(proto, source[0], source[1], None, self.listener)
        return self._parse(self.core.receive(data, target, self.now))

    def advance(self, seconds):
        """Move the clock and fire every timer due, step by step; returns what was sent."""
        return self.advance_to(self.now + seconds)

    def advance_to(self, end):
        """Move the clock to ``end`` firing every timer due; returns what was sent."""
        out = []
        while True:
            deadline = self.core.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            out += self._parse(self.core.on_timers(self.now))
        self.now = end
        return out

    @staticmethod
    def _parse(out):
        return [(parse_message(data), (t.host, t.port)) for data, t in out]


def _row(row):
    if isinstance(row, str):
        row = (0, row)
    row = tuple(row) + (0, 0, "")[len(row) - 2:]
    return row[:5]


def requests(out, method=None):
    """The requests in ``out`` (of ``method``)."""
    return [(m, to) for m, to in out if m.is_request and (method is None or m.method == method)]


def responses(out, status=None):
    """The responses in ``out`` (with ``status``)."""
    return [(m, to) for m, to in out if not m.is_request and (status is None or m.status == status)]
