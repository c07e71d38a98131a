"""Flood detection and bans, sans-IO: the sliding window, the ban table,
trust, the scanner filter, the route's functions and $sht, the commands."""

import pytest

from sipdisp.config import ConfigError
from sipdisp.flood.guard import FloodGuard
from sipdisp.flood.htable import HTable
from sipdisp.flood.pike import Pike
from sipdisp.flood.service import Trust, build_flood
from sipdisp.schema import config_from_dict


def options(ua="sipp"):
    return (b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK1\r\n"
            b"User-Agent: " + ua.encode() + b"\r\nContent-Length: 0\r\n\r\n")


def guard(density=5, unit=2.0, trusted=(), scanners=("friendly-scanner",), automatic=True,
          ban_time=10.0, max_sources=1000):
    return FloodGuard(HTable("ipban", ban_time, 100), Pike(unit, density, 4.0, max_sources),
                      trusted=lambda h: h in trusted, stats={}, automatic=automatic,
                      ban_time=ban_time, scanners=scanners)


# -- the window ---------------------------------------------------------------------

def test_pike_hot_only_past_the_density():
    """The density-th request in a unit is fine; the one after makes the source hot."""
    pike = Pike(2.0, 3, 4.0)
    assert [pike.hit("a", 0.1 * i) for i in range(4)] == [False, False, False, True]


def test_pike_window_slides_over_a_unit_boundary():
    """A burst split across two units is still seen as one burst."""
    pike = Pike(2.0, 4, 4.0)
    for t in (1.7, 1.8, 1.9):
        assert not pike.hit("a", t)
    assert not pike.hit("a", 2.05)
    assert pike.hit("a", 2.1)  # 5 within 0.4 s though the unit changed


def test_pike_steady_rate_under_the_density_never_trips():
    """Two requests a second for a minute with a density of 5 per 2 s: never hot."""
    pike = Pike(2.0, 5, 4.0)
    assert not any(pike.hit("a", i * 0.5) for i in range(120))


def test_pike_forgets_quiet_sources_and_caps_the_table():
    """Sources quiet for unit + remove_latency go; past max_sources the oldest goes."""
    pike = Pike(2.0, 5, 4.0, max_sources=3)
    for i, host in enumerate("abcd"):
        pike.hit(host, float(i) * 0.01)
    assert list(pike.sources) == ["b", "c", "d"] and pike.evicted == 1
    pike.hit("e", 100.0)
    assert pike.sweep(100.0) >= 0 and list(pike.sources) == ["e"]


def test_pike_top_lists_the_busiest_first():
    """pike.top orders sources by their rate."""
    pike = Pike(2.0, 50, 4.0)
    for _ in range(3):
        pike.hit("b", 0.5)
    pike.hit("a", 0.5)
    assert [h for h, _ in pike.top(0.6)] == ["b", "a"]


# -- the ban table ----------------------------------------------------------------------

def test_htable_items_expire_and_are_capped():
    """An item lives autoexpire seconds; a new key past max_items pushes out the oldest."""
    t = HTable("ipban", 5.0, 2)
    t.set("a", 1, 0.0)
    assert t.get("a", 4.9) == 1 and t.get("a", 5.0) is None
    t.set("b", 1, 0.0)
    t.set("c", 1, 0.0)
    assert not t.set("c", 2, 1.0) and t.set("d", 1, 1.0) and t.evicted == 1
    assert [k for k, _, _ in t.live(1.0)] == ["c", "d"]


def test_htable_match_and_remove_names():
    """sht_match_name and sht_rm_name with eq, sw and re."""
    t = HTable("x", 0)
    for k in ("10.0.0.1", "10.0.0.2", "192.0.2.1"):
        t.set(k, 1, 0.0)
    assert t.match_name("eq", "10.0.0.1", 0) and not t.match_name("eq", "10.0.0.3", 0)
    assert t.match_name("re", r"^192\.", 0)
    assert t.remove_names("sw", "10.", 0) == 2 and len(t) == 1


# -- the guard at the edge ---------------------------------------------------------------

def test_guard_bans_a_flooding_source_and_lets_others_through():
    """Past the density the source is banned and every later message dropped; others pass."""
    g = guard(density=5)
    passed = sum(g.check(options(), "192.0.2.9", 0.01 * i) for i in range(50))
    assert passed == 5
    assert g.bans.get("192.0.2.9", 1.0) == 1
    assert g.check(options(), "192.0.2.10", 1.0)
    assert g.stats["flood_bans"] == 1 and g.stats["flood_dropped_banned"] == 45


def test_guard_ban_expires_on_time():
    """The ban lasts ban_time: dropped just before, admitted just after."""
    g = guard(density=1, ban_time=10.0)
    g.check(options(), "192.0.2.9", 0.0)
    assert not g.check(options(), "192.0.2.9", 0.1)
    assert not g.check(options(), "192.0.2.9", 10.05)
    assert g.check(options(), "192.0.2.9", 20.0)


def test_guard_never_bans_a_trusted_source():
    """A trusted source is never banned, automatically or by command."""
    g = guard(density=2, trusted={"10.0.0.5"})
    assert all(g.check(options(), "10.0.0.5", 0.001 * i) for i in range(100))
    assert not g.ban("10.0.0.5", 1.0)
    assert len(g.bans) == 0


def test_guard_replies_are_not_counted():
    """Replies pass without counting (pike counts requests)."""
    g = guard(density=1)
    reply = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\n\r\n"
    assert all(g.check(reply, "192.0.2.9", 0.0) for _ in range(10))
    assert "192.0.2.9" not in g.pike.sources


def test_guard_refuses_connections_from_a_banned_source():
    """A banned source cannot open a stream connection; others can."""
    g = guard()
    g.ban("192.0.2.9", 0.0)
    assert not g.accept("192.0.2.9", 1.0) and g.accept("192.0.2.10", 1.0)
    assert g.stats["flood_refused_connections"] == 1


def test_scanner_filter_drops_silently():
    """A scanner's User-Agent is dropped (any case); others and bodies that mention it pass."""
    g = guard(density=1000)
    assert not g.check(options("Friendly-Scanner 1.0"), "192.0.2.9", 0.0)
    assert g.check(options("Linphone"), "192.0.2.9", 0.0)
    body = options("Linphone").replace(b"Content-Length: 0\r\n\r\n",
                                        b"Content-Length: 30\r\n\r\nUser-Agent: friendly-scanner\r\n")
    assert g.check(body, "192.0.2.9", 0.0)
    assert g.stats["flood_scanner_dropped"] == 1


def test_scanner_filter_off_with_an_empty_list():
    """flood.scanner_user_agents: [] lets every User-Agent through."""
    assert guard(scanners=()).check(options("friendly-scanner"), "192.0.2.9", 0.0)


def test_route_mode_counts_only_in_pike_check_req():
    """With flood.enabled false the edge counts nothing; pike_check_req does."""
    g = guard(density=2, automatic=False)
    assert all(g.check(options(), "192.0.2.9", 0.0) for _ in range(10))
    assert [g.check_request("192.0.2.9", 0.0) for _ in range(3)] == [True, True, False]


def test_trust_covers_networks_own_addresses_and_checks():
    """auth.trusted networks, the proxy's addresses and the dispatcher/gateway checks."""
    trust = Trust(["10.1.0.0/16", "192.0.2.1"], lambda: {"127.0.0.1"},
                  [lambda h: h == "198.51.100.7"])
    assert trust("10.1.2.3") and trust("192.0.2.1") and trust("127.0.0.1")
    assert trust("198.51.100.7") and not trust("203.0.113.1")


# -- configuration, route functions -----------------------------------------------------

def test_config_defaults_are_kamailios_pike_defaults():
    """Defaults: 2 s unit, 30 requests, 120 s remove latency, 300 s bans, automatic off."""
    f = config_from_dict({}).flood
    assert (f.sampling_time_unit, f.reqs_density_per_unit, f.remove_latency, f.ban_time,
            f.enabled) == (2.0, 30, 120.0, 300.0, False)


@pytest.mark.parametrize("raw, key", [
    ({"flood": {"reqs_density_per_unit": 0}}, "flood.reqs_density_per_unit"),
    ({"flood": {"htables": {"ipban": {"autoexpire": -1}}}}, "flood.htables.ipban.autoexpire"),
    ({"flood": {"htables": {"ipban": {"size": 8}}}}, "flood.htables.ipban.size"),
    ({"routing": {"request_route": [{"set": {"$sht(nope=>$si)": 1}}]}}, "routing.request_route"),
])
def test_bad_config_names_the_key(raw, key):
    """A bad flood value or an unknown $sht table is one error naming its key."""
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    assert str(info.value).startswith(key)


def test_build_flood_uses_the_configured_ban_table():
    """A ban table defined in flood.htables keeps its autoexpire; otherwise ban_time."""
    cfg = config_from_dict({"flood": {"htables": {"ipban": {"autoexpire": 60}}}})
    assert build_flood(cfg.flood).bans.autoexpire == 60.0
    assert build_flood(config_from_dict({}).flood).bans.autoexpire == 300.0
