"""Calls through an in-memory proxy with the dialog table, the load balancer
and accounting, for the unit tests of those modules.

``Switch`` is a :class:`tests.support.harness.Link` whose core runs a YAML
route compiled against a DialogTable, a LoadBalancer and an Accounting
writing into :class:`FakeStorage`; ``Switch.call()`` plays a caller and the
FreeSWITCH node the call lands on, step by step, with an explicit clock.
"""

import itertools
from collections import defaultdict

from twisted.internet import defer

from sipdisp.accounting import Accounting
from sipdisp.schema import config_from_dict
from sipdisp.dialog import DialogTable, Profiles
from sipdisp.loadbalancer import LoadBalancer, rows_from_config
from sipdisp.proxy import Listener, ProxyCore
from sipdisp.routing import Env, Modules, compile_routing
from sipdisp.shipped import shipped_functions
from sipdisp.sip import parse_message
from tests.support import sipmsg
from tests.support.harness import Link

#: the route of the unit tests: the OpenSIPS seed's INVITE handling, reduced
#: to dialogs, load balancing (group 1, "pstn"), failover and accounting
ROUTE = {
    "request_route": [
        {"if": "has_totag", "then": [
            {"if": "loose_route", "then": [
                {"if": {"is_method": "BYE"}, "then": [{"do_accounting": ["db", "failed"]}]},
                "t_relay", "exit"]},
            {"sl_send_reply": [404, "Not here"]}, "exit"]},
        {"if": {"is_method": "INVITE"}, "then": [
            "record_route",
            {"if": {"not": {"create_dialog": "B"}},
             "then": [{"send_reply": [500, "Internal Server Error"]}, "exit"]},
            {"if": {"lb_is_destination": ["$si", "$sp", 3]},
             "then": [{"send_reply": [404, "Not Found"]}, "exit"]},
            {"if": {"not": {"lb_start_or_next": [1, "pstn"]}},
             "then": [{"send_reply": [503, "No Capacity"]}, "exit"]},
            {"do_accounting": ["db", "missed"]},
            {"t_set_fr": [0, 1000]},
            {"t_on_failure": "FAILOVER"},
            "t_relay", "exit"]},
        {"sl_send_reply": [405, "Method Not Allowed"]},
    ],
    "failure_routes": {
        "FAILOVER": [
            {"if": "t_is_canceled", "then": ["exit"]},
            {"if": {"any": [{"t_check_status": "5[0-9][0-9]"}, "t_branch_timeout"]},
             "then": [{"if": "lb_next",
                       "then": [{"t_on_failure": "FAILOVER"}, "t_relay", "exit"]}]},
        ],
    },
}

NODES = {"fs1": 5081, "fs2": 5082}


class FakeStorage:
    """The slice of the storage API the modules use, answering at once from dicts."""

    def __init__(self):
        self.tables = defaultdict(list)
        self.writes = []

    @staticmethod
    def _matches(row, where):
        return all(row.get(k) == v for k, v in (where or {}).items())

    def insert(self, table, row):
        """Append a row."""
        self.writes.append(("insert", table))
        self.tables[table].append(dict(row))
        return defer.succeed(1)

    def upsert(self, table, row, keys):
        """Replace the row with the same ``keys`` values, else append."""
        self.writes.append(("upsert", table))
        where = {k: row[k] for k in keys}
        rows = self.tables[table]
        for i, old in enumerate(rows):
            if self._matches(old, where):
                rows[i] = dict(row)
                return defer.succeed(1)
        rows.append(dict(row))
        return defer.succeed(1)

    def delete(self, table, where=None):
        """Remove the matching rows."""
        self.writes.append(("delete", table))
        rows = self.tables[table]
        keep = [r for r in rows if not self._matches(r, where)]
        self.tables[table] = keep
        return defer.succeed(len(rows) - len(keep))

    def select(self, table, where=None, **kw):
        """The matching rows."""
        return defer.succeed([dict(r) for r in self.tables[table] if self._matches(r, where)])


class Switch(Link):
    """A proxy on 127.0.0.1:5060 with the dialog table, a load balancer over
    two nodes (``fs1``, ``fs2``: group 1, ``pstn=<capacity>``) and accounting."""

    def __init__(self, route=None, capacity=5, dialog=None, lb=None, accounting=None,
                 destinations=None, storage=None, config=None, now=1000.0):
        listener = Listener("udp0", "udp", "127.0.0.1", 5060)
        # one node secret across "restarts", as proxy.secret_file keeps it
        core = ProxyCore([listener], None, fr_timer=4.0, fr_inv_timer=30.0,
                         secret=b"calls test node secret")
        super().__init__(core, now)
        self.listener = listener
        self.storage = storage if storage is not None else FakeStorage()
        raw = {"console": {"enabled": False}, "http": {"enabled": False}}
        raw.update(config or {})
        cfg = config_from_dict(raw)
        profiles = Profiles(cfg.dialog.profiles_with_value, cfg.dialog.profiles_no_value)
        self.dialogs = DialogTable(core, storage=self.storage, profiles=profiles,
                                   **(dialog or {}))
        self.lb = LoadBalancer(self.dialogs, core, **(lb or {}))
        if destinations is None:
            destinations = [{"group": 1, "uri": f"sip:127.0.0.1:{port}",
                             "resources": f"vm=100;pstn={capacity}", "description": name}
                            for name, port in NODES.items()]
        self.lb.load(rows_from_config(destinations), "config")
        functions = shipped_functions()
        self.acc = Accounting(self.storage.insert, variables=functions.variables,
                              **(accounting or {}))
        self.acc.attach(core, self.dialogs)
        core.modules = Modules(dialogs=self.dialogs, load_balancer=self.lb, accounting=self.acc)
        self.routing = compile_routing(route or ROUTE, Env(functions, core.modules, cfg, core))
        core.route = self.routing.request_route
        self.dialogs.start(now)
        self.lb.start_probing(now)
        self.uac = self.add_peer("uac", "udp", "10.0.0.1", 5070, listener)
        self.nodes = {name: self.add_peer(name, "udp", "127.0.0.1", port, listener)
                      for name, port in NODES.items()}
        self._calls = itertools.count(1)

    def loads(self, resource="pstn"):
        """``{node name: calls counted on resource}``."""
        by_uri = {d.uri: d for d in self.lb.destinations}
        return {name: self.lb.load_of(by_uri[f"sip:127.0.0.1:{port}"], resource)
                for name, port in NODES.items()}

    def node_with(self, what="INVITE"):
        """The node whose inbox holds one message (returns ``(name, raw)``)."""
        found = [(name, peer) for name, peer in self.nodes.items() if peer.inbox]
        assert len(found) == 1, f"expected one node to receive, got {[n for n, _ in found]}"
        name, peer = found[0]
        return name, peer.expect(what)

    def call(self, user="1000", from_user="alice"):
        """A new :class:`Call` from the UAC to ``user``."""
        return Call(self, user, from_user, next(self._calls))

    def rows(self, table):
        """Rows written to ``table``."""
        return self.storage.tables[table]


class Call:
    """One call: the caller (``switch.uac``) and the node the INVITE reached."""

    def __init__(self, switch, user, from_user, n):
        self.sw = switch
        self.n = n
        self.call_id = f"call-{n}@10.0.0.1"
        self.from_tag = f"caller{n}"
        self.to_tag = f"callee{n}"
        self.invite = sipmsg.request(
            "INVITE", f"sip:{user}@127.0.0.1:5060", via_host="10.0.0.1", via_port=5070,
            call_id=self.call_id, from_tag=self.from_tag,
            extra=[f"Contact: <sip:{from_user}@10.0.0.1:5070>"])
        self.invite = self.invite.replace(b"sip:alice@example.com",
                                          f"sip:{from_user}@example.com".encode())
        self.node = None
        self.fwd = None
        self.ok = None

    # -- the caller ----------------------------------------------------------------
    def start(self):
        """Send the INVITE; returns the name of the node it reached (None if refused)."""
        self.sw.uac.send(self.invite)
        if not any(peer.inbox for peer in self.sw.nodes.values()):
            return None
        self.node, self.fwd = self.sw.node_with("INVITE")
        return self.node

    def answer(self, status=200, reason="OK"):
        """The node answers 180 then ``status``; for a 2xx the caller ACKs."""
        peer = self.sw.nodes[self.node]
        contact = [("contact", f"<sip:fs@127.0.0.1:{peer.port}>")]
        peer.send(sipmsg.response_to(self.fwd, 180, "Ringing", to_tag=self.to_tag, extra=contact))
        peer.send(sipmsg.response_to(self.fwd, status, reason, to_tag=self.to_tag, extra=contact))
        got = [m for m in self.sw.uac.messages() if not m.is_request]
        if 200 <= status < 300:
            self.ok = [m for m in got if m.status == status][-1]
            self.caller_request("ACK", 1)
            self.sw.nodes[self.node].take()  # the ACK
        else:
            peer.take()  # the hop-by-hop ACK of the proxy
        return got

    def routes(self):
        """The caller's route set (reversed Record-Route of the 2xx)."""
        return list(reversed(self.ok.values("record-route")))

    def caller_request(self, method, cseq):
        """An in-dialog request from the caller through the proxy."""
        contact = self.ok.addresses("contact")[0].uri
        raw = sipmsg.in_dialog(method, str(contact), self.routes(), to_tag=self.to_tag,
                               via_host="10.0.0.1", via_port=5070, call_id=self.call_id,
                               from_tag=self.from_tag, cseq=cseq)
        self.sw.uac.send(raw)
        return raw

    def hangup(self, cseq=2):
        """The caller sends BYE; the node answers 200; returns what the caller got."""
        self.caller_request("BYE", cseq)
        peer = self.sw.nodes[self.node]
        bye = peer.expect("BYE")
        peer.send(sipmsg.response_to(bye, 200, "OK", to_tag=None))
        return self.sw.uac.messages()

    def ring(self):
        """The node answers 180 Ringing; returns what the caller got."""
        peer = self.sw.nodes[self.node]
        peer.send(sipmsg.response_to(self.fwd, 180, "Ringing", to_tag=self.to_tag))
        return self.sw.uac.messages()

    def cancel(self):
        """The node rings, the caller CANCELs; the node answers 200 to the
        CANCEL and 487 to the INVITE. Returns what the caller got."""
        self.ring()
        cancel = self.invite.replace(b"INVITE sip:", b"CANCEL sip:", 1).replace(
            b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL")
        self.sw.uac.send(cancel)
        peer = self.sw.nodes[self.node]
        fwd_cancel = peer.expect("CANCEL")
        peer.send(sipmsg.response_to(fwd_cancel, 200, "OK", to_tag=None))
        peer.send(sipmsg.response_to(self.fwd, 487, "Request Terminated", to_tag=self.to_tag))
        peer.take()
        return self.sw.uac.messages()


def parse_all(raws):
    """Parse a list of raw messages."""
    return [parse_message(r) for r in raws]


# -- integration helpers (a twistd-started sipdisp, SIPp nodes) ---------------------

#: the route of the integration tests: seed-like INVITE handling with dialogs,
#: lb_start_or_next(1, "pstn"), accounting, and failover on 5xx or a branch
#: timeout that marks the retried INVITE with X-Failover (lb_node.xml then answers)
LB_ROUTE = {
    "request_route": [
        {"if": "has_totag", "then": [
            {"if": "loose_route", "then": [
                {"if": {"is_method": "BYE"}, "then": [{"do_accounting": ["db", "failed"]}]},
                "t_relay", "exit"]},
            {"if": {"is_method": "ACK"}, "then": ["exit"]},
            {"sl_send_reply": [404, "Not here"]}, "exit"]},
        {"if": {"not": {"is_method": "INVITE"}},
         "then": [{"sl_send_reply": [405, "Method Not Allowed"]}, "exit"]},
        "record_route",
        {"create_dialog": "B"},
        {"if": {"not": {"lb_start_or_next": [1, "pstn"]}},
         "then": [{"send_reply": [503, "No Capacity"]}, "exit"]},
        {"do_accounting": ["db", "missed"]},
        {"t_set_fr": [0, 1000]},
        {"t_on_failure": "LB_FAILOVER"},
        {"if": {"not": "t_relay"}, "then": ["sl_reply_error"]},
    ],
    "failure_routes": {
        "LB_FAILOVER": [
            {"if": "t_is_canceled", "then": ["exit"]},
            {"if": {"any": [{"t_check_status": "5[0-9][0-9]"}, "t_branch_timeout"]},
             "then": [{"if": "lb_next", "then": [
                 {"append_hf": "X-Failover: 1"}, {"t_on_failure": "LB_FAILOVER"}, "t_relay"]}]},
        ],
    },
}


def rpc(proxy, method, *params, timeout=10):
    """Call a management command of a running sipdisp over JSON-RPC; its result."""
    import json
    import urllib.request
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params),
                       "id": 1}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{proxy.port('http')}/rpc", body,
                                 {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as response:
        answer = json.loads(response.read())
    assert "error" not in answer, answer
    return answer["result"]


def lb_loads(proxy, resource="pstn"):
    """``{destination uri: load}`` from ``lb.list``."""
    out = {}
    for dest in rpc(proxy, "lb.list")["destinations"]:
        for res in dest["resources"]:
            if res["name"] == resource:
                out[dest["uri"]] = res["load"]
    return out


def wait_until(check, timeout, step=0.1):
    """Poll ``check()`` until it returns a true value (bounded); returns it or the last value."""
    import time
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(step)
        value = check()
    return value
