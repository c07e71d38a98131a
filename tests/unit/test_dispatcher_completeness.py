"""Kamailio algorithms 5, 7, 12 and 13, ping round-trip times, and OpenSIPS'
dispatcher table read as is: sans-IO through the Dispatcher, and through a
proxy core in memory for forking and the compiled hash_pvar."""

import pytest
from twisted.internet import defer

from sipdisp.dispatcher import Dispatcher
from sipdisp.dispatcher import algorithms as A
from sipdisp.dispatcher.dispatcher import auth_username
from sipdisp.dispatcher.sources import (OPENSIPS_TABLE, TableSource, detect_format,
                                        rows_from_opensips)
from sipdisp.probing import INACTIVE, PROBING, LatencyStats
from tests.support.dispatch import Ctx, Proxy, requests, responses
from tests.support.sipmsg import request, response_to

NODES = ["sip:127.0.0.1:5081", "sip:127.0.0.1:5082", "sip:127.0.0.1:5083"]


def dispatcher(uris=NODES, **kw):
    d = Dispatcher(**kw)
    d.load([{"setid": 1, "destination": u} for u in uris])
    return d


def creds(header, user):
    return f"{header}: Digest username=\"{user}\", realm=\"ex\", nonce=\"n\", " \
           f"uri=\"sip:a\", response=\"00\""


def pick(d, alg, raw=None, key=None, now=0.0):
    ctx = Ctx(raw or request("INVITE", call_id="fixed@t"), now)
    ok = d.select_dst(ctx, 1, alg, key=key)
    return str(ctx.dst_uri) if ok else None


# -- algorithm 5 --------------------------------------------------------------------

def test_alg5_hashes_the_auth_username_whatever_the_call():
    """The same username always lands on the same node, whatever the Call-ID."""
    d = dispatcher()
    got = {pick(d, A.HASH_AUTH_USER, request(extra=[creds("Proxy-Authorization", "alice")]))
           for _ in range(10)}
    assert len(got) == 1
    users = {pick(d, A.HASH_AUTH_USER, request(extra=[creds("Authorization", f"u{n}")]))
             for n in range(30)}
    assert len(users) > 1  # different users spread


def test_alg5_prefers_proxy_authorization_and_falls_back_to_round_robin():
    """Proxy-Authorization wins over Authorization; no credentials means round robin."""
    both = request(extra=[creds("Authorization", "bob"), creds("Proxy-Authorization", "carol")])
    from sipdisp.sip import parse_message
    assert auth_username(parse_message(both)) == "carol"
    assert auth_username(parse_message(request(extra=["Authorization: Basic eHg="]))) == ""
    d = dispatcher()
    assert [pick(d, A.HASH_AUTH_USER) for _ in range(4)] == NODES + NODES[:1]


# -- algorithm 7 --------------------------------------------------------------------

def test_alg7_hashes_the_key_and_refuses_an_empty_one():
    """One key is one node; an empty key selects nothing and is counted."""
    d = dispatcher()
    assert len({pick(d, A.HASH_PVAR, key="alice@example.com") for _ in range(5)}) == 1
    assert len({pick(d, A.HASH_PVAR, key=f"user{n}") for n in range(30)}) > 1
    assert pick(d, A.HASH_PVAR, key="") is None
    assert d.stats["hash_key_missing"] == 1


def test_alg7_in_a_route_hashes_dispatcher_hash_pvar():
    """With hash_pvar "$fU" every INVITE from alice goes to the same node, Call-IDs apart."""
    p = Proxy({"dispatcher": {"list_file": "/nonexistent", "hash_pvar": "$fU"},
               "routing": {"routes": {"DISPATCH": [
                   {"if": {"not": {"ds_select_dst": [0, 7]}},
                    "then": [{"sl_send_reply": [404, "No destination"]}, "exit"]},
                   {"route": "RELAY"}, "exit"]}}},
              rows=NODES)
    nodes = set()
    for n in range(6):
        out = p.send(request("INVITE", "sip:1000@127.0.0.1:5060", call_id=f"h{n}@t"))
        nodes.add(requests(out, "INVITE")[0][1])
    assert len(nodes) == 1


# -- algorithm 12 -------------------------------------------------------------------

def test_alg12_forks_to_every_usable_node_in_one_transaction():
    """One INVITE goes to all three usable nodes at once; the 2xx is relayed to the caller
    and the ringing branches are cancelled."""
    p = Proxy({"dispatcher": {"list_file": "/nonexistent"},
               "routing": {"routes": {"DISPATCH": [
                   {"if": {"not": {"ds_select_dst": [0, 12]}},
                    "then": [{"sl_send_reply": [404, "No destination"]}, "exit"]},
                   {"route": "RELAY"}, "exit"]}}},
              rows=NODES + ["sip:127.0.0.1:5084"])
    p.dispatcher.set_state("i", 0, "sip:127.0.0.1:5084")
    out = p.send(request("INVITE", "sip:1000@127.0.0.1:5060", call_id="fork@t"))
    invites = requests(out, "INVITE")
    assert sorted(to[1] for _, to in invites) == [5081, 5082, 5083]
    assert len({m.via.branch for m, _ in invites}) == 3
    assert p.dispatcher.stats["forked"] == 1
    for other, where in invites[::2]:  # the others ring (a CANCEL waits for a provisional)
        p.send(response_to(other.to_bytes(), 180, "Ringing"), source=where)
    msg, node = invites[1]
    out = p.send(response_to(msg.to_bytes(), 200, "OK"), source=node)
    assert responses(out, 200)
    cancels = requests(out, "CANCEL")
    assert sorted(to[1] for _, to in cancels) == sorted({5081, 5082, 5083} - {node[1]})


def test_alg12_leaves_nothing_for_ds_next_dst():
    """Every destination is in use at once, so failover has none left."""
    d = dispatcher()
    ctx = Ctx(request())
    assert d.select_dst(ctx, 1, A.PARALLEL)
    assert [str(b.dst) for b in ctx.branches] == NODES
    assert not d.next_dst(ctx)


# -- algorithm 13 and latency --------------------------------------------------------

def test_latency_stats_follow_kamailio_fields():
    """Average, deviation, EWMA estimate with alpha 0.9, maximum and timeouts."""
    stats = LatencyStats()
    for rtt in (0.010, 0.020, 0.030):
        stats.add(rtt, 0.9)
    stats.timed_out()
    assert stats.average == pytest.approx(0.020)
    assert stats.stdev == pytest.approx(0.010)
    assert stats.estimate == pytest.approx(0.9 * (0.9 * 0.010 + 0.1 * 0.020) + 0.1 * 0.030)
    assert stats.describe()["MAX"] == 30.0 and stats.timeouts == 1


def test_alg13_picks_the_lowest_estimate_measured_by_pings():
    """Pings answered after 50, 5 and 20 ms: the 5 ms node first, then 20, then 50."""
    p = Proxy({"dispatcher": {"list_file": "/nonexistent", "probing_mode": 1,
                              "ping_interval": 5, "ping_timeout": 1}}, rows=NODES)
    out = p.advance(5.0)
    pings = {to: m for m, to in requests(out, "OPTIONS")}
    for port, delay in ((5081, 0.050), (5082, 0.005), (5083, 0.020)):
        p.now = 5.0 + delay
        node = ("127.0.0.1", port)
        p.send(response_to(pings[node].to_bytes(), 200, "OK"), source=node)
    dests = p.dispatcher.destinations()
    assert [round(d.latency_estimate, 3) for d in dests] == [0.050, 0.005, 0.020]
    ctx = Ctx(request(), p.now)
    assert p.dispatcher.select_dst(ctx, 0, A.LATENCY)
    assert [d.port for d in ctx.vars["_dsdst_"]] == [5082, 5083, 5081]
    listing = p.dispatcher.listing()["RECORDS"][0]["SET"]["TARGETS"][1]["DEST"]
    assert listing["LATENCY"]["EST"] == 5.0


def test_alg13_puts_unmeasured_nodes_last_and_seeds_from_the_latency_attr():
    """The ``latency`` attr (ms) stands in for a measurement; never measured ones come last."""
    d = Dispatcher()
    d.load([{"setid": 1, "destination": NODES[0]},
            {"setid": 1, "destination": NODES[1], "attrs": "latency=40"},
            {"setid": 1, "destination": NODES[2], "attrs": "latency=10"}])
    ctx = Ctx(request())
    d.select_dst(ctx, 1, A.LATENCY)
    assert [x.uri for x in ctx.vars["_dsdst_"]] == [NODES[2], NODES[1], NODES[0]]


def test_no_latency_is_measured_when_stats_are_off():
    """With ping_latency_stats false a ping reply leaves no statistics."""
    p = Proxy({"dispatcher": {"list_file": "/nonexistent", "probing_mode": 1,
                              "ping_interval": 5, "ping_latency_stats": False}}, rows=NODES[:1])
    (msg, node), = requests(p.advance(5.0), "OPTIONS")
    p.send(response_to(msg.to_bytes(), 200, "OK"), source=node)
    assert p.dispatcher.destinations()[0].latency is None


# -- OpenSIPS' table -------------------------------------------------------------------

OPENSIPS_ROWS = [
    {"id": 1, "setid": 1, "destination": "sip:10.0.0.1:5060", "socket": "udp:127.0.0.1:5060",
     "state": 0, "probe_mode": 1, "weight": "1", "priority": 0, "attrs": "duid=fs1",
     "description": "fs1"},
    {"id": 2, "setid": 1, "destination": "sip:10.0.0.2:5060", "socket": None,
     "state": 1, "probe_mode": 0, "weight": "3", "priority": 5, "attrs": None,
     "description": None},
    {"id": 3, "setid": 2, "destination": "sip:10.0.0.3:5060", "socket": "",
     "state": 2, "probe_mode": 0, "weight": "1", "priority": 0, "attrs": "",
     "description": ""},
]


def test_opensips_rows_map_state_probe_mode_weight_and_socket():
    """state 0/1/2 become AX/IX/IP, probe_mode 1 the probing flag, weights 1 and 3 become
    25 % and 75 % (and relative weights), the socket is kept."""
    rows = rows_from_opensips(OPENSIPS_ROWS)
    assert [r["flags"] for r in rows] == [PROBING, INACTIVE, INACTIVE | PROBING]
    assert [(r["weight"], r["rweight"]) for r in rows] == [(25, 1), (75, 3), (100, 1)]
    assert rows[0]["socket"] == "udp:127.0.0.1:5060" and rows[1]["socket"] == ""
    d = Dispatcher()
    d.load(rows)
    s1 = d.sets[1]
    assert [x.uri for x in s1] == ["sip:10.0.0.2:5060", "sip:10.0.0.1:5060"]  # priority 5 first
    assert [x.letters for x in d.destinations()] == ["IX", "AP", "IP"]
    assert d.find(1, "sip:10.0.0.1:5060")[0].duid == "fs1"
    assert s1.w_table.count(s1.dests.index(d.find(1, "sip:10.0.0.2:5060")[0])) == 75


@pytest.mark.parametrize("change, message", [
    ({"state": 3}, "dispatcher table row id 1: state must be one of 0, 1, 2, got 3"),
    ({"weight": "fs_load"}, "dispatcher table row id 1: weight must be an integer, got 'fs_load'"),
    ({"socket": "10.0.0.1"}, "dispatcher table row id 1: socket must be proto:host:port"),
])
def test_bad_opensips_values_name_the_row(change, message):
    """A value sipdisp cannot use is a one-line error naming the row id and column."""
    with pytest.raises(ValueError, match=message):
        rows_from_opensips([dict(OPENSIPS_ROWS[0], **change)])


class Rows:
    """A storage stand-in answering select with fixed records."""

    def __init__(self, records):
        self.records = records

    def select(self, table, order_by=None):
        return defer.succeed([dict(r) for r in self.records])


def test_table_format_is_detected_from_the_columns_or_forced():
    """auto tells OpenSIPS rows (state, probe_mode, socket) from Kamailio's (flags)."""
    assert detect_format(OPENSIPS_ROWS) == "opensips"
    assert detect_format([{"id": 1, "setid": 0, "destination": "sip:a", "flags": 0}]) == "kamailio"
    source = TableSource(Rows(OPENSIPS_ROWS))
    got = []
    source.load().addCallback(got.extend)
    assert got[0]["socket"] == "udp:127.0.0.1:5060"
    assert source.describe() == "table dispatcher (OpenSIPS format)"
    forced = TableSource(Rows(OPENSIPS_ROWS), table_format="kamailio")
    forced.load().addCallback(got.extend)
    assert "socket" not in got[-1]
    with pytest.raises(ValueError, match="table_format"):
        TableSource(Rows([]), table_format="ser")


def test_the_opensips_table_is_version_9_with_its_columns():
    """The DDL sipdisp knows for OpenSIPS' table has its ten columns in order."""
    assert OPENSIPS_TABLE.version == 9
    assert OPENSIPS_TABLE.column_names == (
        "id", "setid", "destination", "socket", "state", "probe_mode", "weight", "priority",
        "attrs", "description")


def test_listing_shows_the_socket():
    """dispatcher.list shows the SOCKET of OpenSIPS rows."""
    d = Dispatcher()
    d.load(rows_from_opensips(OPENSIPS_ROWS[:1]))
    entry = d.listing()["RECORDS"][0]["SET"]["TARGETS"][0]["DEST"]
    assert entry["SOCKET"] == "udp:127.0.0.1:5060"
