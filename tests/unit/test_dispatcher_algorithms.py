"""Selection algorithms with Kamailio's numbers: pure functions, and their
distributions through the dispatcher's ds_select_dst."""

import random
from collections import Counter

import pytest

from sipdisp.dispatcher import algorithms as A
from sipdisp.dispatcher import Dispatcher
from sipdisp.probing import INACTIVE
from tests.support.dispatch import Ctx
from tests.support.sipmsg import request

ALL2 = (True, True)


def make(rows, seed=7):
    ds = Dispatcher(rng=random.Random(seed))
    ds.load([{"setid": 1, "destination": uri, "flags": 0, "priority": prio, "attrs": attrs}
             for uri, prio, attrs in rows])
    return ds


def pick(ds, alg, raw=None, setid=1):
    ctx = Ctx(raw or request("OPTIONS", "sip:1000@127.0.0.1"))
    assert ds.select_dst(ctx, setid, alg)
    return str(ctx.dst_uri)


NODES = [("sip:10.0.0.1:5060", 0, ""), ("sip:10.0.0.2:5060", 0, "")]


def test_round_robin_splits_2000_calls_1000_1000():
    """Algorithm 4 sends 2,000 requests over two nodes exactly 1,000/1,000, alternating."""
    ds = make(NODES)
    got = [pick(ds, 4) for _ in range(2000)]
    assert Counter(got) == {"sip:10.0.0.1:5060": 1000, "sip:10.0.0.2:5060": 1000}
    assert got[0] != got[1]


def test_round_robin_skips_an_inactive_node_without_doubling_its_neighbour():
    """With one of three down, round robin alternates evenly over the other two."""
    ds = make(NODES + [("sip:10.0.0.3:5060", 0, "")])
    ds.sets[1].dests[1].state |= INACTIVE
    got = Counter(pick(ds, 4) for _ in range(600))
    assert got == {"sip:10.0.0.1:5060": 300, "sip:10.0.0.3:5060": 300}


@pytest.mark.parametrize("alg, field", [(0, "call_id"), (1, "from_tag"), (2, "to"), (3, "ruri")])
def test_hash_algorithms_spread_and_stick(alg, field):
    """Algorithms 0-3 spread 2,000 distinct keys roughly evenly and map one key always to one node."""
    ds = make(NODES)
    rng = random.Random(alg)

    def raw(key):
        if field == "call_id":
            return request("INVITE", "sip:1000@h", call_id=f"{key}@x")
        if field == "from_tag":
            return request("INVITE", "sip:1000@h", extra=()).replace(
                b"sip:alice@example.com", f"sip:{key}@example.com".encode())
        if field == "to":
            return request("INVITE", "sip:1000@h").replace(
                b"sip:bob@example.com", f"sip:{key}@example.com".encode())
        return request("INVITE", f"sip:{key}@h")

    keys = [f"k{rng.getrandbits(40):x}" for _ in range(2000)]
    counts = Counter(pick(ds, alg, raw(k)) for k in keys)
    assert set(counts) == {"sip:10.0.0.1:5060", "sip:10.0.0.2:5060"}
    assert all(800 <= n <= 1200 for n in counts.values()), counts
    assert len({pick(ds, alg, raw("same")) for _ in range(20)}) == 1


def test_hash_moves_to_the_next_node_when_the_hashed_one_is_down():
    """A Call-ID hashing to an inactive node goes to the next usable one."""
    ds = make(NODES)
    raw = request("INVITE", "sip:1000@h", call_id="fixed@x")
    first = pick(ds, 0, raw)
    ds.sets[1].find(first).state |= INACTIVE
    assert pick(ds, 0, raw) != first


def test_random_is_roughly_uniform():
    """Algorithm 6 spreads 3,000 requests over three nodes within 10 % of a third each."""
    ds = make(NODES + [("sip:10.0.0.3:5060", 0, "")])
    counts = Counter(pick(ds, 6) for _ in range(3000))
    assert len(counts) == 3 and all(900 <= n <= 1100 for n in counts.values()), counts


def test_priority_order_takes_the_highest_priority_first():
    """Algorithm 8 always picks the highest priority, then the next ones in order."""
    ds = make([("sip:10.0.0.1:5060", 1, ""), ("sip:10.0.0.2:5060", 10, ""),
               ("sip:10.0.0.3:5060", 5, "")])
    ctx = Ctx(request("INVITE", "sip:1000@h"))
    ds.select_dst(ctx, 1, 8)
    assert [d.uri for d in ctx.vars["_dsdst_"]] == [
        "sip:10.0.0.2:5060", "sip:10.0.0.3:5060", "sip:10.0.0.1:5060"]
    assert Counter(pick(ds, 8) for _ in range(50)) == {"sip:10.0.0.2:5060": 50}


def test_weight_gives_exact_percentages_per_hundred():
    """Algorithm 9 with weights 20/80 sends exactly 200/800 of 1,000 requests."""
    ds = make([("sip:10.0.0.1:5060", 0, "weight=20"), ("sip:10.0.0.2:5060", 0, "weight=80")])
    assert Counter(pick(ds, 9) for _ in range(1000)) == {
        "sip:10.0.0.1:5060": 200, "sip:10.0.0.2:5060": 800}


def test_weight_table_follows_kamailio_rules():
    """Weights over 100 in total are dropped, under 100 the last fills, none means equal."""
    assert Counter(A.weight_table([60, 60, 30])) == {0: 60, 2: 40}
    assert Counter(A.weight_table([10, 20])) == {0: 10, 1: 90}
    assert Counter(A.weight_table([0, 0])) == {0: 50, 1: 50}
    assert A.spread([2, 1]) == (0, 1, 0)


def test_relative_weight_renormalises_when_a_node_is_down():
    """Algorithm 11 with rweights 1/2/1 gives 25/50/25, and 33/67 once the third is down."""
    rows = [("sip:10.0.0.1:5060", 0, "rweight=1"), ("sip:10.0.0.2:5060", 0, "rweight=2"),
            ("sip:10.0.0.3:5060", 0, "rweight=1")]
    ds = make(rows)
    assert Counter(pick(ds, 11) for _ in range(400)) == {
        "sip:10.0.0.1:5060": 100, "sip:10.0.0.2:5060": 200, "sip:10.0.0.3:5060": 100}
    ds.sets[1].dests[2].state |= INACTIVE
    assert Counter(pick(ds, 11) for _ in range(300)) == {
        "sip:10.0.0.1:5060": 99, "sip:10.0.0.2:5060": 201}


def test_call_load_prefers_fewest_active_calls_and_honours_maxload():
    """Algorithm 10 balances concurrent INVITEs by load and skips a node at its maxload."""
    ds = make([("sip:10.0.0.1:5060", 0, "maxload=3"), ("sip:10.0.0.2:5060", 0, "")])
    got = [pick(ds, 10, request("INVITE", "sip:1000@h")) for _ in range(10)]
    counts = Counter(got)
    assert counts == {"sip:10.0.0.1:5060": 3, "sip:10.0.0.2:5060": 7}
    assert got[:6] == ["sip:10.0.0.1:5060", "sip:10.0.0.2:5060"] * 3


def test_call_load_distribution_over_equal_nodes_stays_within_one():
    """Algorithm 10 over three equal nodes with 300 open calls gives each 100."""
    ds = make(NODES + [("sip:10.0.0.3:5060", 0, "")])
    counts = Counter(pick(ds, 10, request("INVITE", "sip:1000@h")) for _ in range(300))
    assert set(counts.values()) == {100}


def test_pure_functions_skip_unusable_destinations():
    """Every ordering leaves out unusable destinations and keeps the usable ones."""
    usable = (True, False, True)
    assert A.round_robin(3, usable, 1) == ([2, 0], 0)
    assert A.by_hash(3, usable, "x") in ([0, 2], [2, 0])
    assert A.at_random(3, usable, 0.99) == [2, 0]
    assert A.by_priority(3, usable) == [0, 2]
    assert A.by_load([5, 0, 1], [0, 0, 0], usable) == [2, 0]
    assert A.by_table(3, usable, (1, 1), 0) == ([2, 0], 1)
    assert A.round_robin(2, (False, False), 0) == ([], 0)


@pytest.mark.parametrize("alg", [14, 64, -1, "x"])
def test_unimplemented_algorithms_are_refused(alg):
    """Algorithms sipdisp does not implement raise ValueError naming the known ones."""
    with pytest.raises(ValueError, match="known: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13"):
        A.check_algorithm(alg)


def test_limit_cuts_the_failover_list_and_unknown_set_fails():
    """ds_select_dst's limit bounds the failover list; an unknown set selects nothing."""
    ds = make(NODES + [("sip:10.0.0.3:5060", 0, "")])
    ctx = Ctx(request("INVITE", "sip:1000@h"))
    assert ds.select_dst(ctx, 1, 4, limit=2)
    assert len(ctx.vars["_dsdst_"]) == 2
    assert not ds.select_dst(Ctx(request("INVITE", "sip:1000@h")), 9, 4)


def test_select_domain_rewrites_the_request_uri_host():
    """ds_select_domain puts the destination's host:port into the Request-URI, keeping the user."""
    ds = make(NODES)
    ctx = Ctx(request("INVITE", "sip:1000@proxy.example.com"))
    assert ds.select_domain(ctx, 1, 8)
    assert str(ctx.request.uri) == "sip:1000@10.0.0.1:5060"
    assert ctx.dst_uri is None
