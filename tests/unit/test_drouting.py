"""drouting (OpenSIPS dynamic routing), sans-IO: time recurrences, rule
selection, gateway lists with weights and carriers, strip and prefix,
failover, is_from_gw, probing states, the route functions through the
proxy core, and the refusal of rows that cannot be loaded."""

import random
from collections import Counter
from datetime import datetime, timezone

import pytest

from sipdisp.drouting import DRouting, LoadError, TimerecError, parse_duration, parse_timerec
from sipdisp.drouting.router import DR
from sipdisp.probing import DISABLED, INACTIVE
from sipdisp.proxy import Listener, ProxyCore, Target
from sipdisp.proxy.context import RequestContext
from sipdisp.routing import Env, Modules, RouteError, compile_routing
from sipdisp.schema import config_from_dict
from sipdisp.shipped import shipped_functions
from sipdisp.sip import parse_message
from tests.support import sipmsg
from tests.support.harness import Link

# Monday 4 March 2024, 10:00 UTC
MONDAY_10 = datetime(2024, 3, 4, 10, 0, tzinfo=timezone.utc).timestamp()


def gw(gwid, address, **extra):
    row = {"id": len(gwid), "gwid": gwid, "type": 0, "address": address, "strip": 0,
           "pri_prefix": None, "attrs": None, "probe_mode": 0, "state": 0, "socket": None,
           "description": gwid}
    row.update(extra)
    return row


def rule(ruleid, prefix, gwlist, groupid="0", priority=0, timerec=None, sort_alg="N"):
    return {"ruleid": ruleid, "groupid": groupid, "prefix": prefix, "timerec": timerec,
            "priority": priority, "routeid": None, "gwlist": gwlist, "sort_alg": sort_alg,
            "sort_profile": None, "attrs": None, "description": f"rule {ruleid}"}


def router(gateways, rules, carriers=(), groups=(), **kwargs):
    kwargs.setdefault("tz", timezone.utc)
    dr = DRouting(rng=random.Random(7), **kwargs)
    dr.load(gateways, rules, carriers, groups)
    return dr


def context(ruri="sip:+4930123@127.0.0.1:5060", now=MONDAY_10, from_uri=None):
    raw = sipmsg.request("INVITE", ruri)
    if from_uri:
        raw = raw.replace(b"<sip:alice@example.com>", f"<{from_uri}>".encode())
    listener = Listener("udp0", "udp", "127.0.0.1", 5060)
    core = ProxyCore([listener], None)
    return RequestContext(core, parse_message(raw),
                          Target("udp", "10.0.0.1", 5070, None, listener), None, now)


# -- time recurrences ----------------------------------------------------------------

def test_weekday_office_hours_hold_monday_morning_not_evening_or_saturday():
    """OpenSIPS' example recurrence: weekdays 09:00 for 8 hours."""
    rec = parse_timerec("20240101T090000|PT8H|weekly|||MO,TU,WE,TH,FR")
    assert rec.matches(datetime(2024, 3, 4, 9, 0))
    assert rec.matches(datetime(2024, 3, 8, 16, 59, 59))
    assert not rec.matches(datetime(2024, 3, 4, 17, 0))
    assert not rec.matches(datetime(2024, 3, 4, 8, 59))
    assert not rec.matches(datetime(2024, 3, 9, 10, 0))


def test_an_interval_crossing_midnight_holds_after_midnight():
    """A daily 22:00 + 4 h interval covers 01:00 of the next day but not 02:00."""
    rec = parse_timerec("20240101T220000|PT4H|daily")
    assert rec.matches(datetime(2024, 5, 2, 1, 0))
    assert not rec.matches(datetime(2024, 5, 2, 2, 0))
    assert not rec.matches(datetime(2023, 12, 31, 23, 0))  # before dtstart


def test_interval_until_and_monthly_last_friday():
    """interval=2 skips odd weeks, until ends the recurrence, -1FR is the month's last Friday."""
    every_other = parse_timerec("20240101T000000|P1D|weekly||2|MO")
    assert every_other.matches(datetime(2024, 1, 15, 12))
    assert not every_other.matches(datetime(2024, 1, 8, 12))
    bounded = parse_timerec("20240101T000000|P1D|daily|20240110")
    assert bounded.matches(datetime(2024, 1, 10, 23))
    assert not bounded.matches(datetime(2024, 1, 11, 0, 1))
    last_friday = parse_timerec("20240101T000000|P1D|monthly|||-1FR")
    assert last_friday.matches(datetime(2024, 3, 29, 12))
    assert not last_friday.matches(datetime(2024, 3, 22, 12))


def test_yearly_bymonth_bymonthday_and_a_single_interval():
    """Christmas every year by bymonth/bymonthday; no freq is one interval, zero duration for ever."""
    xmas = parse_timerec("20200101T000000|P1D|yearly||||25|||12")
    assert xmas.matches(datetime(2031, 12, 25, 8))
    assert not xmas.matches(datetime(2031, 11, 25, 8))
    once = parse_timerec("20240301T000000|P2D")
    assert once.matches(datetime(2024, 3, 2, 23)) and not once.matches(datetime(2024, 3, 3, 0))
    forever = parse_timerec("20240301T000000")
    assert forever.matches(datetime(2099, 1, 1))


def test_utc_recurrences_and_time_zones():
    """A Z recurrence is read in UTC; a local one in the zone given."""
    from zoneinfo import ZoneInfo
    utc = parse_timerec("20240101T090000Z|PT1H|daily")
    assert utc.matches_at(datetime(2024, 3, 4, 9, 30, tzinfo=timezone.utc).timestamp())
    local = parse_timerec("20240101T090000|PT1H|daily")
    at = datetime(2024, 3, 4, 8, 30, tzinfo=timezone.utc).timestamp()  # 09:30 in Berlin
    assert local.matches_at(at, ZoneInfo("Europe/Berlin"))
    assert not local.matches_at(at, timezone.utc)


def test_durations_in_both_notations():
    """RFC 5545 durations and OpenSIPS' older form without P give seconds."""
    assert parse_duration("PT8H") == 8 * 3600
    assert parse_duration("P1DT2H30M") == 86400 + 2 * 3600 + 1800
    assert parse_duration("P2W") == 14 * 86400
    assert parse_duration("10M") == 600
    assert parse_duration("10H") == 36000
    for bad in ("", "P", "8X", "T8H", "P8H"):
        with pytest.raises(TimerecError):
            parse_duration(bad)


@pytest.mark.parametrize("text, part", [
    ("2024-01-01|PT1H", "dtstart"),
    ("20240101T090000|PT1H|hourly", "freq"),
    ("20240101T090000|PT1H|weekly|||XX", "byday"),
    ("20240101T090000|PT1H|monthly||||32", "bymonthday"),
    ("20240101T090000|PT1H|daily||0", "interval"),
    ("20240101T090000||daily", "duration"),
    ("20240101T090000|PT1H|daily&20240101T100000|PT1H", "combined"),
    ("20240101T090000|PT1H||||MO", "need a freq"),
])
def test_recurrences_that_cannot_be_evaluated_are_refused(text, part):
    """Each malformed or unsupported recurrence raises TimerecError naming the part."""
    with pytest.raises(TimerecError, match=part):
        parse_timerec(text)


# -- loading -------------------------------------------------------------------------

def test_a_bad_timerec_refuses_the_load_naming_the_rule_and_keeps_the_tables():
    """A rule whose recurrence cannot be evaluated refuses the whole load with its rule id."""
    dr = router([gw("gw1", "10.0.0.1")], [rule(1, "+49", "gw1")])
    with pytest.raises(LoadError, match=r"dr_rules ruleid 7: timerec cannot be evaluated"):
        dr.load([gw("gw1", "10.0.0.1")], [rule(2, "+1", "gw1"),
                                          rule(7, "+4", "gw1", timerec="20240101T0900|x")])
    assert [r.id for r in dr.rules] == [1]


@pytest.mark.parametrize("rows, message", [
    (([gw("gw1", "10.0.0.1")], [rule(3, "", "gw9")]), "ruleid 3: gwlist names the unknown gateway 'gw9'"),
    (([gw("gw1", "10.0.0.1")], [rule(3, "", "#cr9")]), "unknown carrier #'cr9'"),
    (([gw("gw1", "10.0.0.1")], [rule(3, "", "gw1", sort_alg="Q")]), "quality-based"),
    (([gw("gw1", "10.0.0.1", probe_mode=5)], []), "probe_mode must be 0, 1 or 2"),
    (([gw("gw1", "10.0.0.1"), gw("gw1", "10.0.0.2")], []), "given twice"),
    (([gw("gw1", "10.0.0.1")], [dict(rule(4, "", "gw1"), routeid="5")]), "routeid"),
])
def test_rows_that_cannot_be_used_are_refused_with_one_line(rows, message):
    """Unknown gateways or carriers, unknown sort algorithms, bad gateway columns fail the load."""
    with pytest.raises(LoadError, match=message):
        router(*rows)


# -- rule selection -------------------------------------------------------------------

def test_longest_prefix_wins_then_priority():
    """+4930 beats +49 and the default rule; among +4930 rules the highest priority wins."""
    dr = router([gw("a", "10.0.0.1"), gw("b", "10.0.0.2"), gw("c", "10.0.0.3"),
                 gw("d", "10.0.0.4")],
                [rule(1, "", "a"), rule(2, "+49", "b"), rule(3, "+4930", "c", priority=1),
                 rule(4, "+4930", "d", priority=5)])
    assert [r.id for r in dr.candidate_rules(0, "+4930123", MONDAY_10)] == [4, 3, 2, 1]
    assert dr.candidate_rules(0, "+331234", MONDAY_10)[0].id == 1
    assert dr.candidate_rules(1, "+4930123", MONDAY_10) == []


def test_a_rule_outside_its_time_falls_back_to_a_shorter_prefix():
    """An office-hours +4930 rule applies Monday 10:00; on Saturday the +49 rule routes."""
    office = "20240101T090000|PT8H|weekly|||MO,TU,WE,TH,FR"
    dr = router([gw("a", "10.0.0.1"), gw("b", "10.0.0.2")],
                [rule(1, "+49", "a"), rule(2, "+4930", "b", timerec=office)])
    saturday = datetime(2024, 3, 9, 10, tzinfo=timezone.utc).timestamp()
    assert dr.candidate_rules(0, "+4930123", MONDAY_10)[0].id == 2
    assert dr.candidate_rules(0, "+4930123", saturday)[0].id == 1


def test_the_group_comes_from_the_argument_else_dr_groups_else_the_default():
    """do_routing(group) uses the group; without one the caller's dr_groups row, then default_group."""
    dr = router([gw("a", "10.0.0.1"), gw("b", "10.0.0.2")],
                [rule(1, "+49", "a", groupid="0"), rule(2, "+49", "b", groupid="5")],
                groups=[{"id": 1, "username": "alice", "domain": "example.com", "groupid": 5}])
    ctx = context()
    assert dr.do_routing(ctx, 0) and dr.current(ctx).gwid == "a"
    ctx = context()
    assert dr.do_routing(ctx) and dr.current(ctx).gwid == "b"
    ctx = context(from_uri="sip:bob@example.com")
    assert not dr.do_routing(ctx)
    dr.default_group = 0
    assert dr.do_routing(ctx) and dr.current(ctx).gwid == "a"


# -- gateways, failover, strip and prefix --------------------------------------------------

def test_strip_and_pri_prefix_rewrite_the_user_and_du_names_the_gateway():
    """gw strip 3 prefix 00 turns +4930123 into 00930123; failover re-applies from the original."""
    dr = router([gw("a", "10.0.0.1:5080", strip=3, pri_prefix="00"),
                 gw("b", "sip:10.0.0.2;transport=tcp", strip=1)],
                [rule(1, "+49", "a,b")])
    ctx = context()
    assert dr.do_routing(ctx, 0)
    assert ctx.request.uri.user == "0030123"
    assert str(ctx.dst_uri) == "sip:10.0.0.1:5080"
    assert dr.next_gw(ctx)
    assert ctx.request.uri.user == "4930123"
    assert str(ctx.dst_uri) == "sip:10.0.0.2;transport=tcp"
    assert not dr.next_gw(ctx)


def test_disabled_gateways_and_carriers_are_skipped_and_carriers_expand():
    """A carrier in a gwlist expands to its gateways; state 1 gateways and off carriers are left out."""
    dr = router([gw("a", "10.0.0.1"), gw("b", "10.0.0.2", state=1), gw("c", "10.0.0.3"),
                 gw("d", "10.0.0.4")],
                [rule(1, "+49", "a,#cr1,#cr2")],
                carriers=[{"id": 1, "carrierid": "cr1", "gwlist": "b,c", "flags": 0,
                           "sort_alg": "N", "state": 0},
                          {"id": 2, "carrierid": "cr2", "gwlist": "d", "flags": 0,
                           "sort_alg": "N", "state": 1}])
    assert [g.gwid for g, _ in dr.order(dr.rules[0])] == ["a", "c"]
    dr.set_carrier_status("cr2", 1)
    assert [g.gwid for g, _ in dr.order(dr.rules[0])] == ["a", "c", "d"]


def test_carrier_flag_1_uses_only_its_first_usable_gateway():
    """Carrier flags 0x1: only the first gateway that is up, no failover inside the carrier."""
    dr = router([gw("a", "10.0.0.1", state=1), gw("b", "10.0.0.2"), gw("c", "10.0.0.3")],
                [rule(1, "", "#cr")],
                carriers=[{"id": 1, "carrierid": "cr", "gwlist": "a,b,c", "flags": 1,
                           "sort_alg": "0", "state": 0}])
    assert [g.gwid for g, _ in dr.order(dr.rules[0])] == ["b"]


def test_weights_share_first_places_as_the_weights_say():
    """gwlist 1=70,2=30 with sort_alg W puts gateway 1 first in about 70 % of calls."""
    dr = router([gw("1", "10.0.0.1"), gw("2", "10.0.0.2")], [rule(1, "", "1=70,2=30", sort_alg="W")])
    firsts = Counter(dr.order(dr.rules[0])[0][0].gwid for _ in range(4000))
    assert 0.66 < firsts["1"] / 4000 < 0.74
    orders = {tuple(g.gwid for g, _ in dr.order(dr.rules[0])) for _ in range(50)}
    assert orders == {("1", "2"), ("2", "1")}  # every order still holds both


def test_sort_alg_n_keeps_the_given_order_whatever_the_weights():
    """sort_alg N (0) tries the gateways as listed."""
    dr = router([gw("1", "10.0.0.1"), gw("2", "10.0.0.2")], [rule(1, "", "2=1,1=99", sort_alg="0")])
    assert {tuple(g.gwid for g, _ in dr.order(dr.rules[0])) for _ in range(20)} == {("2", "1")}


def test_flag_f_falls_back_to_the_next_rule_when_the_gateways_run_out():
    """With F, use_next_gw moves on to the next rule's gateways; without it, it fails."""
    rows = ([gw("a", "10.0.0.1"), gw("b", "10.0.0.2")],
            [rule(1, "+49", "a"), rule(2, "", "b")])
    dr = router(*rows)
    ctx = context()
    assert dr.do_routing(ctx, 0, "F") and dr.current(ctx).gwid == "a"
    assert dr.next_gw(ctx) and dr.current(ctx).gwid == "b"
    ctx = context()
    assert dr.do_routing(ctx, 0) and not dr.next_gw(ctx)
    assert dr.do_routing(context(), 0, "C") and DR not in context().vars


def test_is_from_gw_matches_address_port_and_type():
    """is_from_gw: the gateway's IP, its port when it has one, and its type when asked."""
    dr = router([gw("a", "10.0.0.1:5080", type=3), gw("b", "10.0.0.2")], [])
    assert dr.is_from_gw("10.0.0.1", 5080)
    assert not dr.is_from_gw("10.0.0.1", 5060)
    assert dr.is_from_gw("10.0.0.1", 5060, ignore_port=True)
    assert dr.is_from_gw("10.0.0.2", 40000)
    assert dr.is_from_gw("10.0.0.1", 5080, gw_type=3)
    assert not dr.is_from_gw("10.0.0.2", 5060, gw_type=3)
    assert not dr.is_from_gw("10.0.0.9", 5060)


def test_number_routing_shows_the_rule_and_each_gateways_user():
    """dr.number_routing: the rule chosen and the user each gateway would receive."""
    dr = router([gw("a", "10.0.0.1", strip=1, pri_prefix="9")], [rule(8, "+49", "a=5")])
    out = dr.number_routing(0, "+4930", MONDAY_10)
    assert out["rule"]["ruleid"] == 8
    assert out["gateways"] == [{"id": "a", "carrier": None, "weight": 5, "uri": "sip:10.0.0.1",
                                "user": "94930", "state": "active"}]
    assert dr.number_routing(0, "123", MONDAY_10)["rule"] is None


# -- through the proxy core -------------------------------------------------------------

ROUTE = {
    "request_route": [
        {"if": {"is_method": "INVITE"}, "then": [
            {"if": {"match": ["$rU", "^\\+[1-9][0-9]+$"]}, "then": [
                {"if": {"not": {"do_routing": "0"}},
                 "then": [{"send_reply": [500, "No PSTN Route found"]}, "exit"]},
                {"t_on_failure": "missed_call"}, "t_relay", "exit"]},
            {"send_reply": [404, "Not here"]}, "exit"]},
        {"sl_send_reply": [405, "Method Not Allowed"]},
    ],
    "failure_routes": {
        "missed_call": [
            {"if": "t_was_cancelled", "then": ["exit"]},
            {"if": {"t_check_status": "5[0-9][0-9]|408"},
             "then": [{"if": "use_next_gw",
                       "then": [{"t_on_failure": "missed_call"}, "t_relay", "exit"]}]},
        ],
    },
}


def proxy_with(gateways, rules, route=ROUTE, **kwargs):
    """A Link whose core runs ``route`` with a DRouting over the rows; peers gw1 :5081, gw2 :5082."""
    listener = Listener("udp0", "udp", "127.0.0.1", 5060)
    core = ProxyCore([listener], None, fr_timer=4.0, fr_inv_timer=30.0)
    link = Link(core, now=MONDAY_10)
    dr = DRouting(core, rng=random.Random(1), tz=timezone.utc, **kwargs)
    dr.load(gateways, rules)
    core.modules = Modules(drouting=dr)
    cfg = config_from_dict({"drouting": {"enabled": True}})
    core.route = compile_routing(route, Env(shipped_functions(), core.modules, cfg, core)).request_route
    link.uac = link.add_peer("uac", "udp", "10.0.0.1", 5070, listener)
    link.gw1 = link.add_peer("gw1", "udp", "127.0.0.1", 5081, listener)
    link.gw2 = link.add_peer("gw2", "udp", "127.0.0.1", 5082, listener)
    return link, dr


def test_a_plus_number_goes_to_gateway_1_and_fails_over_to_gateway_2_on_503():
    """The seed's PSTN route: gw1 (strip 1) answers 503, the call reaches gw2 with its prefix."""
    link, dr = proxy_with([gw("1", "127.0.0.1:5081", strip=1),
                           gw("2", "127.0.0.1:5082", pri_prefix="00", strip=1)],
                          [rule(1, "+49", "1,2")])
    link.uac.send(sipmsg.request("INVITE", "sip:+4930123@127.0.0.1:5060", via_host="10.0.0.1"))
    first = link.gw1.expect("INVITE")
    assert parse_message(first).uri.user == "4930123"
    link.gw1.send(sipmsg.response_to(first, 503, "Service Unavailable"))
    second = link.gw2.expect("INVITE")
    assert parse_message(second).uri.user == "004930123"
    link.gw2.send(sipmsg.response_to(second, 200, "OK"))
    replies = [parse_message(m) for m in link.uac.take()]
    assert [r.status for r in replies] == [100, 200]  # the 503 never reached the caller
    assert dr.stats["routed"] == 2


def test_no_rule_answers_the_routes_500_and_a_down_gateway_is_skipped():
    """A number without a rule gets the route's 500; an inactive gateway is never tried."""
    link, dr = proxy_with([gw("1", "127.0.0.1:5081", state=2), gw("2", "127.0.0.1:5082")],
                          [rule(1, "+49", "1,2")])
    link.uac.send(sipmsg.request("INVITE", "sip:+3312@127.0.0.1:5060", via_host="10.0.0.1"))
    assert parse_message(link.uac.expect(500)).reason == "No PSTN Route found"
    link.uac.send(sipmsg.request("INVITE", "sip:+4912@127.0.0.1:5060", via_host="10.0.0.1"))
    assert link.gw2.expect("INVITE")
    assert link.gw1.take() == []


def test_probing_brings_a_probing_gateway_back_and_mode_2_takes_a_dead_one_out():
    """probe_mode 1 pings only while inactive; mode 2 always: a timeout disables, a reply enables."""
    changes = []
    link, dr = proxy_with([gw("1", "127.0.0.1:5081", state=2, probe_mode=1),
                           gw("2", "127.0.0.1:5082", probe_mode=2),
                           gw("3", "127.0.0.1:5083", probe_mode=1)],
                          [rule(1, "+49", "1,2,3")], probing_interval=5.0)
    dr.listeners.append(lambda change: changes.append((change.target.gwid, change.new[0])))
    dr.start_probing(link.now)
    link.advance(5.0)
    ping1 = link.gw1.expect("OPTIONS")
    link.gw2.expect("OPTIONS")
    assert not [p for p in link.stray if b"5083" in p[0]]  # gw3 is active: mode 1 leaves it
    link.gw1.send(sipmsg.response_to(ping1, 200, "OK"))
    assert dr.gateways["1"].enabled and ("1", "A") in changes
    link.advance(1.5)  # gw2 never answers: its probe times out
    assert not dr.gateways["2"].enabled and dr.gateways["2"].probe.state & INACTIVE
    assert dr.stats["gw_state_changes"] >= 2


def test_an_operator_disabled_gateway_is_neither_used_nor_probed():
    """dr.gw_status 0 disables (never probed), 1 enables, 2 leaves it to probing."""
    dr = router([gw("a", "10.0.0.1", probe_mode=2)], [rule(1, "", "a")])
    dr.set_gw_status("a", 0)
    assert dr.gateways["a"].probe.state & DISABLED and dr._probe_targets() == []
    assert not dr.do_routing(context(), 0)
    dr.set_gw_status("a", 2)
    assert dr._probe_targets() == [dr.gateways["a"].probe] and not dr.gateways["a"].enabled
    dr.set_gw_status("a", 1)
    assert dr.gateways["a"].enabled
    with pytest.raises(ValueError):
        dr.set_gw_status("a", 7)


def test_a_reload_keeps_a_gateways_health_when_its_row_is_unchanged():
    """A gateway disabled by failover stays out across dr.reload if its address and state column are the same."""
    rows = ([gw("a", "10.0.0.1"), gw("b", "10.0.0.2")], [rule(1, "", "a,b")])
    dr = router(*rows)
    ctx = context()
    dr.do_routing(ctx, 0)
    assert dr.disable_current(ctx)
    dr.load(*rows)
    assert not dr.gateways["a"].enabled and dr.gateways["b"].enabled


# -- route compile checks --------------------------------------------------------------

def test_route_functions_check_their_arguments_and_that_drouting_is_on():
    """do_routing with a partition, an unknown flag, or drouting off is refused when the route compiles."""
    functions = shipped_functions()
    on = config_from_dict({"drouting": {"enabled": True}})
    off = config_from_dict({})
    for route, cfg, message in (
            ({"request_route": [{"do_routing": "p1:0"}]}, on, "partitions"),
            ({"request_route": [{"do_routing": ["0", "X"]}]}, on, "unknown flag"),
            ({"request_route": [{"if": {"is_from_gw": "x"}, "then": ["exit"]}]}, on, "type"),
            ({"request_route": [{"do_routing": "0"}]}, off, "drouting.enabled")):
        with pytest.raises(RouteError, match=message):
            compile_routing(route, Env(functions, config=cfg))
    compile_routing({"request_route": [{"do_routing": ["0", "F"]}, "dr_next_gw",
                                       {"if": {"is_from_gw": [1, "n"]}, "then": ["exit"]}]},
                    Env(functions, config=on))


def test_a_bad_timezone_is_a_config_error_naming_the_key():
    """drouting.timezone must be a known IANA zone."""
    from sipdisp.config.model import ConfigError
    with pytest.raises(ConfigError, match="drouting.timezone"):
        config_from_dict({"drouting": {"timezone": "Mars/Olympus"}})


def test_metrics_show_gateway_health_and_event_counters():
    """/metrics gets one up gauge per gateway and the routed/no_rule counters."""
    dr = router([gw("a", "10.0.0.1"), gw("b", "10.0.0.2", state=1)], [rule(1, "+49", "a")])
    dr.do_routing(context(), 0)
    dr.do_routing(context("sip:123@127.0.0.1"), 0)
    families = {name: samples for name, _, _, samples in dr.metrics()}
    assert sorted(v for _, v in families["sipdisp_dr_gateway_up"]) == [0, 1]
    assert dict((labels["event"], n) for labels, n in families["sipdisp_dr_events_total"]) \
        == {"routed": 1, "no_rule": 1}
