"""The load balancer: resources and selection (pure), then calls through a
proxy core in memory: counting until the dialog ends, refusal when full,
failover, lb_is_destination and the lb.* commands."""

import random

import pytest
from twisted.internet.task import Clock

from sipdisp.commands import CommandRegistry
from sipdisp.config import ConfigError
from sipdisp.loadbalancer import (choose, parse_lb_flags, parse_requested, parse_resources,
                                  reply_codes)
from sipdisp.loadbalancer.service import register_commands
from sipdisp.schema import config_from_dict
from tests.support import sipmsg
from tests.support.calls import Switch

SEED = "vm=100;conf=100;transc=100;pstn=500"


# -- pure parts ----------------------------------------------------------------------

def test_resources_parse_the_seed_column_and_refuse_malformed_ones():
    """The seed's resources column parses in order; bad entries are refused with a reason."""
    assert parse_resources(SEED) == {"vm": 100, "conf": 100, "transc": 100, "pstn": 500}
    for bad, why in (("pstn", "name=capacity"), ("pstn=x", "name=capacity"),
                     ("pstn=5;pstn=6", "twice"), ("", "no resource"), ("pstn=-1", "negative")):
        with pytest.raises(ValueError, match=why):
            parse_resources(bad)


def test_requested_resources_and_flags_parse():
    """``"vm;transc"`` asks for two resources; flags r, n, s are known, others are not."""
    assert parse_requested("vm;transc") == ("vm", "transc")
    assert parse_lb_flags("ns") == frozenset("ns")
    with pytest.raises(ValueError):
        parse_requested(" ; ")
    with pytest.raises(ValueError, match="unknown load balancer flag"):
        parse_lb_flags("x")


def test_absolute_selection_takes_the_most_free_calls_and_skips_full_ones():
    """Absolute: capacity - load, the first of equals; a full destination is never picked."""
    assert choose([[(10, 5)], [(5, 1)], [(20, 17)]]) == 0   # 5 free beats 4 and 3
    assert choose([[(5, 1)], [(10, 6)]]) == 0               # 4 and 4: the first
    assert choose([[(5, 5)], [(3, 4)]]) is None              # nobody has room


def test_relative_selection_compares_percentages():
    """With r, 50 % free of 10 beats 40 % free of 100."""
    assert choose([[(100, 60)], [(10, 5)]], frozenset("r")) == 1
    assert choose([[(100, 60)], [(10, 5)]]) == 0  # absolute: 40 calls beat 5


def test_several_resources_count_by_the_most_loaded_one():
    """A call asking for vm and pstn goes where the scarcer of the two is most free."""
    assert choose([[(100, 0), (10, 9)], [(100, 90), (10, 0)]]) == 1


def test_negative_availability_lets_the_least_overloaded_take_the_call():
    """Flag n: when all are full, the one with the least overload is picked."""
    assert choose([[(5, 7)], [(5, 5)]], frozenset("n")) == 1


def test_random_among_equals_spreads_ties():
    """Flag s picks among the tied destinations at random; without it always the first."""
    rng = random.Random(7)
    picks = {choose([[(5, 0)], [(5, 0)], [(1, 0)]], frozenset("s"), rng.random)
             for _ in range(50)}
    assert picks == {0, 1}


def test_reply_codes_accept_opensips_and_kamailio_syntax():
    """``"501, 403"`` (the seed) and ``class=2;code=403`` both become accepted codes besides 200."""
    codes = reply_codes("501, 403")
    assert codes.accepts(200) and codes.accepts(501) and codes.accepts(403)
    assert not codes.accepts(404)
    assert reply_codes("class=2").accepts(202)
    with pytest.raises(ValueError):
        reply_codes("501, abc")


def test_config_checks_destinations_and_names_the_entry():
    """A destination without resources, or with a bad URI or probe mode, fails the config load."""
    ok = config_from_dict({"load_balancer": {"destinations": [
        {"group": 1, "uri": "sip:10.0.0.1:5060", "resources": SEED, "probe_mode": 1}]}})
    assert ok.load_balancer.destinations[0]["id"] == 1
    for entry, key in (({"group": 1, "uri": "sip:x"}, "missing"),
                       ({"group": 1, "uri": "mailto:x", "resources": SEED}, "SIP URI"),
                       ({"group": 1, "uri": "sip:x", "resources": SEED, "probe_mode": 3},
                        "probe_mode")):
        with pytest.raises(ConfigError, match=key) as info:
            config_from_dict({"load_balancer": {"destinations": [entry]}})
        assert "load_balancer.destinations[0]" in str(info.value)


# -- calls ------------------------------------------------------------------------------

def test_ten_calls_fill_two_nodes_of_five_and_the_eleventh_is_refused():
    """pstn=5 on two nodes: 10 calls split 5/5, the 11th gets the route's 503, a hangup frees one slot."""
    sw = Switch(capacity=5)
    calls = []
    for _ in range(10):
        call = sw.call()
        assert call.start() is not None
        call.answer()
        calls.append(call)
    assert sw.loads() == {"fs1": 5, "fs2": 5}
    refused = sw.call()
    assert refused.start() is None
    assert [(m.status, m.reason) for m in sw.uac.messages()] == [(503, "No Capacity")]
    freed = calls[3]
    freed.hangup()
    assert sw.loads()[freed.node] == 4
    again = sw.call()
    assert again.start() == freed.node
    assert sw.call().start() is None


def test_calls_go_to_the_node_with_most_free_capacity():
    """With fs1 at 100 and fs2 at 50, the first 50 calls go to fs1 (more free calls), then
    they alternate, ties going to the first node."""
    sw = Switch(destinations=[
        {"group": 1, "uri": "sip:127.0.0.1:5081", "resources": "pstn=100"},
        {"group": 1, "uri": "sip:127.0.0.1:5082", "resources": "pstn=50"}])
    for n in range(60):
        sw.call().start()
        if n == 49:
            assert sw.loads() == {"fs1": 50, "fs2": 0}
    assert sw.loads() == {"fs1": 55, "fs2": 5}


def test_503_fails_over_to_the_other_node_and_moves_the_count():
    """A 503 from the first node: lb_next sends the call to the other, counted there only."""
    sw = Switch()
    call = sw.call()
    first = call.start()
    sw.nodes[first].send(sipmsg.response_to(call.fwd, 503, "Unavailable", to_tag="x"))
    sw.nodes[first].take()
    second, call.fwd = sw.node_with("INVITE")
    call.node = second
    assert second != first and sw.loads() == {first: 0, second: 1}
    call.answer()
    call.hangup()
    assert sw.loads() == {"fs1": 0, "fs2": 0}


def test_lb_next_is_false_when_no_node_is_left():
    """Both nodes answering 503: the caller gets the 503 and nothing stays counted."""
    sw = Switch()
    call = sw.call()
    call.start()
    for _ in range(2):
        name, raw = call.node, call.fwd
        sw.nodes[name].send(sipmsg.response_to(raw, 503, "Unavailable", to_tag="x"))
        sw.nodes[name].take()
        if any(p.inbox for p in sw.nodes.values()):
            call.node, call.fwd = sw.node_with("INVITE")
    assert [m.status for m in sw.uac.messages()][-1] == 503
    assert sw.loads() == {"fs1": 0, "fs2": 0} and sw.dialogs.dialogs == {}


def test_cancelled_and_timed_out_calls_release_their_load():
    """A CANCELled call and a call nobody answers (408 after both nodes) leave no load."""
    sw = Switch()
    cancelled = sw.call()
    cancelled.start()
    assert [m.status for m in cancelled.cancel()][-1] == 487
    silent = sw.call()
    silent.start()
    sw.advance(2.5)  # 1 s per node (t_set_fr), then 408
    assert 408 in [m.status for m in sw.uac.messages()]
    assert sw.loads() == {"fs1": 0, "fs2": 0} and sw.dialogs.dialogs == {}


def test_many_mixed_calls_leave_every_load_at_zero():
    """400 calls, randomly answered and hung up, cancelled, rejected, failed over or left to
    time out, in any interleaving: loads and dialogs are back to 0 at the end."""
    rng = random.Random(11)
    sw = Switch(capacity=1000)
    live = []
    for n in range(400):
        call = sw.call()
        node = call.start()
        kind = rng.choice(["answer", "cancel", "busy", "failover", "silent"])
        if kind == "answer":
            call.answer()
            live.append(call)
        elif kind == "cancel":
            call.cancel()
        elif kind == "busy":
            call.answer(486, "Busy Here")
        elif kind == "failover":
            sw.nodes[node].send(sipmsg.response_to(call.fwd, 500, "Error", to_tag="x"))
            sw.nodes[node].take()
            call.node, call.fwd = sw.node_with("INVITE")
            call.answer()
            live.append(call)
        else:
            sw.advance(2.5)
        for peer in sw.nodes.values():
            peer.take()
        sw.uac.take()
        if live and rng.random() < 0.5:
            live.pop(rng.randrange(len(live))).hangup(cseq=2)
    for call in live:
        call.hangup(cseq=2)
    assert sw.loads() == {"fs1": 0, "fs2": 0}
    assert sw.dialogs.dialogs == {} and sw.dialogs.profiles.snapshot()["lb-pstn"] == {}


def test_lb_is_destination_matches_address_port_and_group():
    """lb_is_destination: the node's address and port (0: any), in the group asked (-1: any)."""
    sw = Switch(destinations=[
        {"group": 1, "uri": "sip:127.0.0.1:5081", "resources": "pstn=5"},
        {"group": 3, "uri": "sip:127.0.0.1:5091", "resources": "pstn=5"}])
    lb = sw.lb
    assert lb.is_destination("127.0.0.1", 5081) and lb.is_destination("127.0.0.1", 5091, 3)
    assert not lb.is_destination("127.0.0.1", 5081, 3)
    assert lb.is_destination("127.0.0.1", 0, 1) and not lb.is_destination("10.0.0.1", 5081)
    lb.set_status(2, False)
    assert lb.is_destination("127.0.0.1", 5091, 3)
    assert not lb.is_destination("127.0.0.1", 5091, 3, active=True)


def test_calls_from_a_group_3_node_are_told_apart_in_the_route():
    """The route's lb_is_destination($si, $sp, 3) catches an INVITE sent by a group 3 node."""
    sw = Switch(destinations=[
        {"group": 1, "uri": "sip:127.0.0.1:5081", "resources": "pstn=5"},
        {"group": 3, "uri": "sip:127.0.0.1:5082", "resources": "pstn=5"}])
    sw.nodes["fs2"].send(sipmsg.request("INVITE", "sip:1000@127.0.0.1", via_host="127.0.0.1",
                                        via_port=5082))
    assert [(m.status, m.reason) for m in sw.nodes["fs2"].messages()][-1] == (404, "Not Found")


def test_disabled_nodes_get_no_calls_until_enabled_again():
    """lb.status 0 takes a node out of selection; 1 brings it back."""
    sw = Switch()
    sw.lb.set_status(1, False)
    assert {sw.call().start() for _ in range(3)} == {"fs2"}
    sw.lb.set_status(1, True)
    assert sw.call().start() == "fs1"


def test_failover_can_disable_the_failed_node():
    """lb_disable_dst in the failure route takes the failed node out for later calls."""
    from tests.support.calls import ROUTE
    import copy
    route = copy.deepcopy(ROUTE)
    route["failure_routes"]["FAILOVER"].insert(1, "lb_disable_dst")
    sw = Switch(route=route)
    call = sw.call()
    first = call.start()
    sw.nodes[first].send(sipmsg.response_to(call.fwd, 503, "Unavailable", to_tag="x"))
    assert not sw.lb.destinations[0 if first == "fs1" else 1].enabled
    for peer in sw.nodes.values():
        peer.take()
    assert sw.call().start() != first


class _Service:
    def __init__(self, sw):
        self.balancer = sw.lb
        self.reloads = 0

    def reload(self):
        self.reloads += 1
        return {"reloaded": True}


def test_lb_commands_list_status_resize_and_reload():
    """lb.list shows capacity and load per resource; lb.status reads and sets; lb.resize changes a capacity."""
    sw = Switch(capacity=5)
    registry = CommandRegistry()
    service = _Service(sw)
    register_commands(registry, service)
    sw.call().start()
    listing = registry.call("lb.list").result["destinations"]
    pstn = {d["uri"]: [r for r in d["resources"] if r["name"] == "pstn"][0] for d in listing}
    assert pstn["sip:127.0.0.1:5081"] == {"name": "pstn", "max": 5, "load": 1}
    assert registry.call("lb.status", 2).result["enabled"] == 1
    assert registry.call("lb.status", 2, 0).result["enabled"] == 0
    assert listing[1]["enabled"] == "yes"
    assert registry.call("lb.resize", 1, "pstn", 1).result == {"id": 1, "resource": "pstn",
                                                                 "max": 1, "load": 1}
    assert sw.call().start() is None  # fs1 is full at 1, fs2 is disabled
    assert registry.call("lb.reload").result == {"reloaded": True} and service.reloads == 1
    errors = []
    registry.call("lb.resize", 1, "nope", 3).addErrback(errors.append)
    registry.call("lb.status", 99).addErrback(errors.append)
    assert len(errors) == 2


def test_reload_keeps_the_calls_counted_and_the_health_of_kept_ids():
    """Reloading the rows keeps a kept id's load (counted by id) and its disabled state."""
    sw = Switch(capacity=5)
    sw.call().start()
    sw.lb.set_status(2, False)
    rows = [sw.lb.row_of(d) for d in sw.lb.destinations]
    rows[0]["resources"] = "pstn=7"
    summary = sw.lb.load(rows, "test")
    assert summary["kept"] == 2 and summary["added"] == 0
    assert sw.loads()["fs1"] == 1 and sw.lb.by_id[1].resources["pstn"] == 7
    assert not sw.lb.by_id[2].enabled


def test_metrics_report_load_capacity_and_health():
    """The metrics hook reports load and capacity per resource and whether each node is up."""
    sw = Switch(capacity=5)
    sw.call().start()
    families = {name: samples for name, _, _, samples in sw.lb.metrics()}
    loads = {(s[0]["uri"], s[0]["resource"]): s[1] for s in families["sipdisp_lb_load"]}
    assert loads[("sip:127.0.0.1:5081", "pstn")] == 1
    assert ({"id": "1", "group": "1", "uri": "sip:127.0.0.1:5081"}, 1) in \
        families["sipdisp_lb_destination_up"]


def test_service_commands_reach_a_running_balancer():
    """The registry of a whole service tree has the lb.* commands on the configured nodes."""
    from sipdisp.service import make_service
    cfg = config_from_dict({"console": {"enabled": False}, "http": {"enabled": False},
                            "storage": {"url": "memory://lbtest"},
                            "load_balancer": {"destinations": [
                                {"group": 1, "uri": "sip:127.0.0.1:5080", "resources": SEED}]}})
    root = make_service(cfg, reactor=Clock())
    listed = root.registry.call("lb.list").result
    assert [d["uri"] for d in listed["destinations"]] == ["sip:127.0.0.1:5080"]
    assert root.registry.call("lb.reload").result["destinations"] == 1


def test_sighup_applies_new_destinations_and_probing_parameters():
    """The load_balancer reload hook (SIGHUP) loads the new destinations and probing method."""
    from sipdisp.service import make_service
    base = {"console": {"enabled": False}, "http": {"enabled": False},
            "storage": {"url": "memory://lbsighup"}}
    dests = [{"group": 1, "uri": "sip:127.0.0.1:5080", "resources": SEED}]
    root = make_service(config_from_dict(dict(base, load_balancer={"destinations": dests})),
                        reactor=Clock())
    new = config_from_dict(dict(base, load_balancer={
        "probing_method": "INFO",
        "destinations": dests + [{"group": 1, "uri": "sip:127.0.0.1:5090", "resources": SEED}]}))
    root.reload_hooks["load_balancer"](new)
    lb = root.modules.load_balancer
    assert [d.uri for d in lb.destinations] == ["sip:127.0.0.1:5080", "sip:127.0.0.1:5090"]
    assert lb.prober.method == "INFO"
