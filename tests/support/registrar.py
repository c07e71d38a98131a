"""An in-memory proxy with the registrar, usrloc and auth for registrar and
auth tests: a real ProxyCore running the configured (default: built-in)
route, the RegistrarService wired to it on a task.Clock, memory storage,
and a small user agent that builds REGISTERs and answers digest challenges.

    stack = Stack({"auth": {"enabled": True}}, users={"alice": "secret"})
    ua = stack.ua("alice")
    ok = ua.register()                    # 401, then 200 with credentials
    out = stack.send(invite_for("alice"), source=NODE)

Outgoing messages come back as ``[(message, Target)]``.
"""

import itertools
import json
from types import SimpleNamespace
import urllib.request

from twisted.internet import defer, task

from sipdisp.auth.digest import calc_ha1, calc_response, parse_auth_params
from sipdisp.commands import CommandRegistry
from sipdisp.schema import config_from_dict
from sipdisp.dispatcher.service import dispatcher_from_config
from sipdisp.proxy import ProxyCore
from sipdisp.proxy.target import Listener, Target
from sipdisp.registrar.service import RegistrarService
from sipdisp.routing import Modules, build_routing
from sipdisp.shipped import shipped_functions
from sipdisp.sip import parse_message
from sipdisp.storage import open_storage

_ids = itertools.count(1)
DOMAIN = "example.com"


class _Switchboard:
    def __init__(self, stack):
        self.stack = stack

    def wake(self):
        self.stack.out.extend(self.stack.core.layer.drain())


class _Sip:
    def __init__(self, core, switchboard):
        self.core = core
        self.switchboard = switchboard


class FakeRoot:
    """The slice of SipdispService the RegistrarService uses."""

    def __init__(self, cfg, core, switchboard, storage=None):
        self.cfg = cfg
        self.sip = _Sip(core, switchboard)
        self.modules = core.modules
        self.modules.storage = storage
        self.registry = CommandRegistry()
        self.reload_hooks = {}

    def getServiceNamed(self, name):
        raise KeyError(name)


class SlowStorage:
    """A storage whose reads answer ``delay`` seconds later on the clock
    (as a database server does), to exercise suspended routes."""

    def __init__(self, storage, clock, delay=0.01):
        self._storage = storage
        self._clock = clock
        self.delay = delay
        self.reads = 0

    def select(self, *args, **kwargs):
        self.reads += 1
        d = defer.Deferred()
        inner = self._storage.select(*args, **kwargs)
        inner.addBoth(lambda r: self._clock.callLater(self.delay, d.callback, r))
        return d

    def __getattr__(self, name):
        return getattr(self._storage, name)


class Stack:
    """ProxyCore + dispatcher + RegistrarService + compiled route.

    Listeners: UDP and TCP 127.0.0.1:5060, WS 127.0.0.1:5062. ``rows`` are
    dispatcher destinations (FreeSWITCH nodes); ``users`` maps usernames to
    passwords in the subscriber table of ``example.com``.
    """

    def __init__(self, config=None, users=None, rows=(), now=1000.0, slow=False,
                 db="memory://"):
        raw = {"console": {"enabled": False}, "http": {"enabled": False},
               "storage": {"url": db}, "proxy": {"domains": [DOMAIN]},
               "dispatcher": {"list_file": "/nonexistent"}}
        for key, value in (config or {}).items():
            raw[key] = dict(raw.get(key, {}), **value) if isinstance(value, dict) else value
        self.cfg = cfg = config_from_dict(raw)
        self.clock = task.Clock()
        self.clock.advance(now)
        self.udp = Listener(1, "udp", "127.0.0.1", 5060)
        self.tcp = Listener(2, "tcp", "127.0.0.1", 5060)
        self.ws = Listener(3, "ws", "127.0.0.1", 5062)
        self.listeners = {"udp": self.udp, "tcp": self.tcp, "ws": self.ws}
        self.core = ProxyCore([self.udp, self.tcp, self.ws], None, t1=cfg.sip.t1,
                              t2=cfg.sip.t2, t4=cfg.sip.t4, fr_timer=cfg.sip.fr_timer,
                              fr_inv_timer=cfg.sip.fr_inv_timer, domains=cfg.proxy.domains,
                              modules=Modules())
        self.out = []
        self.dispatcher = dispatcher_from_config(cfg, self.core)
        self.core.modules.dispatcher = self.dispatcher
        self.dispatcher.load([{"setid": s, "destination": u, "flags": 0, "priority": 0,
                               "attrs": ""} for s, u in rows], now)
        self.storage = open_storage(db, reactor=self.clock, ping_interval=0)
        self.storage.start()
        storage = SlowStorage(self.storage, self.clock) if slow else self.storage
        self.root = FakeRoot(cfg, self.core, _Switchboard(self), storage)
        self.service = RegistrarService(self.root, self.clock)
        self.service.startService()
        self.registry = self.root.registry
        self.registrar = self.service.registrar
        self.location = self.service.location
        self.auth = self.service.auth
        self.routing = build_routing(cfg, shipped_functions(), self.core.modules, self.core)
        self.core.route = self.routing.entry
        for user, password in (users or {}).items():
            self.add_user(user, password)

    @property
    def now(self):
        """The clock's time."""
        return self.clock.seconds()

    def add_user(self, user, password, domain=DOMAIN):
        """Put a subscriber in the table."""
        d = self.service.subscribers.add(user, domain, password)
        self.clock.advance(0)
        return d

    # -- connections -------------------------------------------------------------------
    def open_conn(self, proto, host, port):
        """A live stream connection from ``host:port``; returns its id."""
        conn_id = next(_ids) + 1000
        self.core.flows.connections[conn_id] = SimpleNamespace(
            proto=proto, peer_host=host, peer_port=port, listener=self.listeners[proto])
        return conn_id

    def close_conn(self, conn_id):
        """The connection closed."""
        self.core.flows.connections.pop(conn_id, None)

    # -- moving messages -----------------------------------------------------------------
    def send(self, data, source=("10.0.0.1", 5070), proto="udp", conn=None, settle=True):
        """Feed ``data``; returns ``[(message, Target)]`` sent, including what
        resumed (suspended) routes sent once the clock let their reads finish."""
        if isinstance(data, str):
            data = data.encode()
        target = Target(proto, source[0], source[1], conn, self.listeners[proto])
        self.out.extend(self.core.receive(data, target, self.now))
        if settle:
            self.settle()
        return self.take()

    def settle(self, rounds=20):
        """Let pending storage reads complete (a few clock steps)."""
        for _ in range(rounds):
            if not self.clock.getDelayedCalls():
                break
            calls = sorted(c.getTime() for c in self.clock.getDelayedCalls())
            if calls[0] > self.now + 1.0:
                break
            self.clock.advance(max(0.0, calls[0] - self.now))

    def take(self):
        """Everything sent so far, parsed."""
        out, self.out = self.out, []
        return [(parse_message(d) if not d.strip() == b"" else d, t) for d, t in out]

    def advance(self, seconds):
        """Move the clock, firing the core's timers in order; returns what was sent."""
        end = self.now + seconds
        while True:
            deadline = self.core.next_deadline()
            if deadline is None or deadline > end:
                break
            self.clock.advance(max(0.0, deadline - self.now))
            self.out.extend(self.core.on_timers(self.now))
        self.clock.advance(max(0.0, end - self.now))
        return self.take()

    def ua(self, user, host="10.0.0.1", port=5070, proto="udp", conn=None, **kw):
        """A user agent for ``user`` at ``host:port``."""
        return UA(self, user, host, port, proto, conn, **kw)


def responses(out, status=None):
    """The responses in ``out`` (with ``status``)."""
    return [m for m, _ in out if not isinstance(m, bytes) and not m.is_request
            and (status is None or m.status == status)]


def requests(out, method=None):
    """``[(request, Target)]`` in ``out`` (of ``method``)."""
    return [(m, t) for m, t in out if not isinstance(m, bytes) and m.is_request
            and (method is None or m.method == method)]


def final(out):
    """The one final response in ``out``."""
    got = [m for m in responses(out) if m.status >= 200]
    assert len(got) == 1, [(m.status, m.reason) for m in responses(out)]
    return got[0]


class UA:
    """A registering user agent: builds REGISTERs and answers challenges."""

    def __init__(self, stack, user, host, port, proto, conn, domain=DOMAIN, password=None,
                 contact=None, algorithm=None):
        self.stack = stack
        self.user = user
        self.host = host
        self.port = port
        self.proto = proto
        self.conn = conn
        self.domain = domain
        self.password = password
        tp = "" if proto == "udp" else f";transport={proto}"
        self.contact = contact or f"<sip:{user}@{host}:{port}{tp}>"
        self.call_id = f"reg-{next(_ids)}@{host}"
        self.cseq = 0
        self.nc = 0
        self.algorithm = algorithm

    def register_bytes(self, contact=None, expires=None, extra=(), auth=None, cseq=None,
                       call_id=None):
        """One REGISTER as bytes."""
        self.cseq = cseq if cseq is not None else self.cseq + 1
        lines = [f"REGISTER sip:{self.domain} SIP/2.0",
                 f"Via: SIP/2.0/{self.proto.upper()} {self.host}:{self.port};"
                 f"branch=z9hG4bKua{next(_ids)};rport",
                 f"From: <sip:{self.user}@{self.domain}>;tag=f{next(_ids)}",
                 f"To: <sip:{self.user}@{self.domain}>",
                 f"Call-ID: {call_id or self.call_id}",
                 f"CSeq: {self.cseq} REGISTER", "Max-Forwards: 70"]
        contact = self.contact if contact is None else contact
        if contact:
            lines.append(f"Contact: {contact}")
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if auth:
            lines.append(f"Authorization: {auth}")
        lines.extend(extra)
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    def send(self, data):
        """Send from this UA; returns what the stack sent."""
        return self.stack.send(data, (self.host, self.port), self.proto, self.conn)

    def answer(self, challenge, method, uri, password=None, body=b""):
        """The Authorization value answering one challenge header."""
        params = parse_auth_params(challenge.split(" ", 1)[1])
        algorithm = params.get("algorithm", "MD5")
        realm = params["realm"]
        ha1 = calc_ha1(algorithm, self.user, realm, password or self.password)
        self.nc += 1
        nc = f"{self.nc:08x}"
        cnonce = f"cn{next(_ids)}"
        qop = "auth" if "qop" in params else None
        response = calc_response(algorithm, ha1, params["nonce"], method, uri, qop, nc, cnonce,
                                 body)
        value = (f'Digest username="{self.user}", realm="{realm}", nonce="{params["nonce"]}", '
                 f'uri="{uri}", response="{response}", algorithm={algorithm}')
        if qop:
            value += f', qop={qop}, nc={nc}, cnonce="{cnonce}"'
        return value

    def register(self, contact=None, expires=None, extra=(), password=None):
        """REGISTER, answering a 401 once; returns the final response."""
        out = self.send(self.register_bytes(contact, expires, extra))
        resp = final(out)
        if resp.status != 401:
            return resp
        challenges = resp.get_all("www-authenticate")
        pick = challenges[0]
        if self.algorithm:
            pick = next(c for c in challenges if f"algorithm={self.algorithm}" in c)
        self.nc = 0
        auth = self.answer(pick, "REGISTER", f"sip:{self.domain}", password)
        self.last_auth = auth
        return final(self.send(self.register_bytes(contact, expires, extra, auth=auth)))


def invite(ruri, from_user="bob", from_domain="fs.example.net", via=("127.0.0.1", 5080),
           call_id=None, extra=(), method="INVITE", to_tag=None, from_tag=None):
    """An initial request (INVITE by default) as bytes."""
    n = next(_ids)
    to = f"<{ruri}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} {ruri} SIP/2.0",
             f"Via: SIP/2.0/UDP {via[0]}:{via[1]};branch=z9hG4bKinv{n}",
             f"From: <sip:{from_user}@{from_domain}>;tag={from_tag or f'i{n}'}", f"To: {to}",
             f"Call-ID: {call_id or f'inv-{n}@test'}", f"CSeq: 1 {method}", "Max-Forwards: 70",
             f"Contact: <sip:{from_user}@{via[0]}:{via[1]}>", *extra]
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def rpc(proxy, method, *params, timeout=10):
    """One JSON-RPC call to a running sipdisp (tests.support.processes.Sipdisp); its result."""
    url = f"http://127.0.0.1:{proxy.port('http')}/rpc"
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})
    req = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as response:
        answer = json.loads(response.read())
    assert "error" not in answer, answer
    return answer["result"]
