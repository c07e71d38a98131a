"""Next hops given as names (RFC 3263), sans-IO: the cache, SRV ordering, the
NAPTR/SRV/A procedure over records given as data, and the proxy core holding
a branch for DNS and failing over between the targets of one name."""

import random
from collections import Counter

from sipdisp.dns import DnsCache, Naptr, Srv, order_srv
from sipdisp.dns.rfc3263 import A, AAAA, NAPTR, SRV
from sipdisp.sip import parse_message
from tests.support import sipmsg
from tests.support.dnszone import HeldZone, Zone
from tests.support.harness import Link

PBX = "pbx.example.test"


def srv(priority, weight, port, target):
    """An SRV record."""
    return Srv(priority, weight, port, target)


# -- the cache -----------------------------------------------------------------------

def test_cache_keeps_an_answer_for_its_ttl_and_no_longer():
    """An answer is returned until its TTL runs out, then it is a miss."""
    cache = DnsCache()
    cache.put(A, "Host.Example.", ["192.0.2.1"], 30, now=100.0)
    assert cache.get(A, "host.example", 129.9) == ("192.0.2.1",)
    assert cache.get(A, "host.example", 130.0) is None


def test_cache_keeps_negative_answers_for_negative_ttl():
    """A name without records is remembered as such for negative_ttl seconds."""
    cache = DnsCache(negative_ttl=5.0)
    cache.put_negative(SRV, "_sip._udp.nowhere.test", now=0.0)
    assert cache.get(SRV, "_sip._udp.nowhere.test", 4.9) == ()
    assert cache.get(SRV, "_sip._udp.nowhere.test", 5.0) is None


def test_cache_clamps_ttls_to_min_and_max():
    """A TTL of 0 is kept min_ttl seconds, a huge one max_ttl seconds."""
    cache = DnsCache(min_ttl=1.0, max_ttl=60.0)
    cache.put(A, "zero.test", ["192.0.2.1"], 0, now=0.0)
    cache.put(A, "long.test", ["192.0.2.2"], 86400, now=0.0)
    assert cache.get(A, "zero.test", 0.5) == ("192.0.2.1",)
    assert cache.get(A, "long.test", 59.0) and cache.get(A, "long.test", 60.0) is None


def test_a_full_cache_drops_the_oldest_answer_and_counts_it():
    """Past cache_size entries the oldest goes and dns_cache_evictions counts it."""
    stats = Counter()
    cache = DnsCache(max_entries=2, stats=stats)
    for i in range(3):
        cache.put(A, f"h{i}.test", [f"192.0.2.{i}"], 60, now=0.0)
    assert len(cache) == 2 and cache.get(A, "h0.test", 1.0) is None
    assert stats["dns_cache_evictions"] == 1


# -- SRV order (RFC 2782) ---------------------------------------------------------------

def test_srv_lower_priority_always_comes_first():
    """Every record of priority 10 precedes every record of priority 20, whatever the weights."""
    records = [srv(20, 100, 5060, "b"), srv(10, 1, 5060, "a1"), srv(10, 1, 5060, "a2")]
    for seed in range(20):
        order = order_srv(records, random.Random(seed))
        assert [r.priority for r in order] == [10, 10, 20]


def test_srv_weights_share_the_first_place_in_proportion():
    """Within one priority, weights 90 and 10 put the first record first about 90 % of the time."""
    rng = random.Random(7)
    records = [srv(10, 90, 5060, "heavy"), srv(10, 10, 5060, "light")]
    firsts = Counter(order_srv(records, rng)[0].target for _ in range(2000))
    assert 1700 < firsts["heavy"] < 1900


def test_srv_zero_weight_is_rarely_first():
    """A weight-0 record beside a weighted one comes first only rarely (RFC 2782)."""
    rng = random.Random(3)
    records = [srv(10, 0, 5060, "zero"), srv(10, 50, 5060, "fifty")]
    firsts = Counter(order_srv(records, rng)[0].target for _ in range(1000))
    assert firsts["zero"] < 50 and firsts["fifty"] > 950


# -- the procedure (RFC 3263 4.1, 4.2) --------------------------------------------------

def resolve(zone, uri_parts, protos=("udp", "tcp"), now=0.0):
    """Resolve ``(scheme, transport, host, port)`` over ``zone``."""
    res = zone.resolver(random.Random(1)).resolve(*uri_parts, now, protos)
    assert res.done
    return res.targets


def test_naptr_picks_the_lowest_order_transport_this_proxy_has():
    """NAPTR prefers TCP by order, but without a TCP listener the UDP record is taken."""
    zone = Zone({
        (NAPTR, PBX): [Naptr(10, 10, "S", "SIP+D2T", "", "_sip._tcp." + PBX),
                       Naptr(20, 10, "S", "SIP+D2U", "", "_sip._udp." + PBX)],
        (SRV, "_sip._tcp." + PBX): [srv(10, 1, 5070, "tcp.pbx.test")],
        (SRV, "_sip._udp." + PBX): [srv(10, 1, 5080, "udp.pbx.test")],
        (A, "tcp.pbx.test"): ["192.0.2.7"], (A, "udp.pbx.test"): ["192.0.2.8"],
    })
    assert resolve(zone, ("sip", None, PBX, None)) == [("tcp", "192.0.2.7", 5070)]
    assert resolve(zone, ("sip", None, PBX, None), protos=("udp",)) == [("udp", "192.0.2.8", 5080)]


def test_sips_takes_only_sips_naptr_records():
    """A sips: URI ignores SIP+D2U and SIP+D2T and takes SIPS+D2T (TLS)."""
    zone = Zone({
        (NAPTR, PBX): [Naptr(5, 10, "S", "SIP+D2U", "", "_sip._udp." + PBX),
                       Naptr(10, 10, "S", "SIPS+D2T", "", "_sips._tcp." + PBX)],
        (SRV, "_sips._tcp." + PBX): [srv(0, 0, 5061, "tls.pbx.test")],
        (A, "tls.pbx.test"): ["192.0.2.9"],
    })
    assert resolve(zone, ("sips", None, PBX, None), protos=("udp", "tls")) == [
        ("tls", "192.0.2.9", 5061)]


def test_without_naptr_srv_is_tried_per_transport_then_a_records():
    """No NAPTR: _sip._udp then _sip._tcp are asked; with no SRV either, the A records on 5060."""
    zone = Zone({(SRV, "_sip._tcp." + PBX): [srv(1, 1, 5090, "t.pbx.test")],
                 (A, "t.pbx.test"): ["192.0.2.10"]})
    assert resolve(zone, ("sip", None, PBX, None)) == [("tcp", "192.0.2.10", 5090)]
    bare = Zone({(A, PBX): ["192.0.2.11"], (AAAA, PBX): ["2001:db8::11"]})
    assert resolve(bare, ("sip", None, PBX, None)) == [
        ("udp", "192.0.2.11", 5060), ("udp", "2001:db8::11", 5060)]
    assert (SRV, "_sip._udp." + PBX) in bare.asked and (SRV, "_sip._tcp." + PBX) in bare.asked


def test_an_explicit_port_skips_naptr_and_srv():
    """sip:host:5099 asks only A/AAAA and keeps the port (RFC 3263 4.2)."""
    zone = Zone({(A, PBX): ["192.0.2.12"],
                 (SRV, "_sip._udp." + PBX): [srv(1, 1, 6000, "other.test")]})
    assert resolve(zone, ("sip", None, PBX, 5099)) == [("udp", "192.0.2.12", 5099)]
    assert {q[0] for q in zone.asked} == {A, AAAA}


def test_an_explicit_transport_skips_naptr_and_asks_its_srv():
    """;transport=tcp asks _sip._tcp directly, never NAPTR."""
    zone = Zone({(SRV, "_sip._tcp." + PBX): [srv(1, 1, 5071, "t2.pbx.test")],
                 (A, "t2.pbx.test"): ["192.0.2.13"]})
    assert resolve(zone, ("sip", "tcp", PBX, None)) == [("tcp", "192.0.2.13", 5071)]
    assert (NAPTR, PBX) not in zone.asked


def test_a_numeric_host_asks_nothing():
    """An IP address is its own target: no query at all."""
    zone = Zone()
    assert resolve(zone, ("sip", None, "192.0.2.14", None)) == [("udp", "192.0.2.14", 5060)]
    assert zone.asked == []


def test_srv_dot_target_means_no_service():
    """An SRV set of one '.' target means the service is not offered: no targets."""
    zone = Zone({(SRV, "_sip._udp." + PBX): [srv(0, 0, 0, ".")]})
    assert resolve(zone, ("sip", "udp", PBX, None)) == []


def test_srv_targets_come_in_priority_order_with_all_their_addresses():
    """The target list follows SRV priority, each target's addresses in turn (for failover)."""
    zone = Zone({(SRV, "_sip._udp." + PBX): [srv(20, 1, 5082, "b.test"), srv(10, 1, 5081, "a.test")],
                 (A, "a.test"): ["192.0.2.1", "192.0.2.2"], (A, "b.test"): ["192.0.2.3"]})
    assert resolve(zone, ("sip", "udp", PBX, None)) == [
        ("udp", "192.0.2.1", 5081), ("udp", "192.0.2.2", 5081), ("udp", "192.0.2.3", 5082)]


def test_cached_answers_are_not_asked_again_until_they_expire():
    """A second resolution within the TTL asks nothing; after it, the queries go out again."""
    zone = Zone({(A, PBX): ["192.0.2.20"], (AAAA, PBX): ["2001:db8::20"]}, ttl=30.0)
    hops = zone.resolver()
    hops.resolve("sip", None, PBX, 5060, 0.0)
    asked = len(zone.asked)
    hops.resolve("sip", None, PBX, 5060, 29.0)
    assert len(zone.asked) == asked
    hops.resolve("sip", None, PBX, 5060, 31.0)
    assert len(zone.asked) == 2 * asked


# -- the proxy core ---------------------------------------------------------------------

def relay_to(dst, failure_calls=None, fr_ms=2000):
    """A route relaying to ``dst`` with a ``fr_ms`` branch timeout; a failure
    route (recording the status it saw) when ``failure_calls`` is a list."""
    def failure(ctx):
        failure_calls.append(ctx.failed_status)

    def route(ctx):
        ctx.set_dst(dst)
        ctx.t_set_fr(0, fr_ms)
        if failure_calls is not None:
            ctx.t_on_failure(failure)
        ctx.t_relay()
    return route


def two_targets():
    """SRV for pbx.example.test: 127.0.0.1:5080 (priority 10) then 127.0.0.1:5090 (20)."""
    return {(SRV, "_sip._udp." + PBX): [srv(10, 1, 5080, "first.test"), srv(20, 1, 5090, "second.test")],
            (A, "first.test"): ["127.0.0.1"], (A, "second.test"): ["127.0.0.1"]}


def link_with(zone, route):
    """A UDP link whose core resolves names through ``zone``; a second UAS on :5090."""
    link = Link.udp(route=route, resolver=zone.resolver(random.Random(1)))
    link.uas2 = link.add_peer("uas2", "udp", "127.0.0.1", 5090, link.listener)
    return link


def send_invite(link):
    """The UAC sends an INVITE through the proxy."""
    return link.uac.send(sipmsg.request("INVITE", "sip:bob@example.com",
                                        via_host=link.uac.host, via_port=link.uac.port))


def test_an_invite_to_a_name_goes_to_its_first_srv_target():
    """$du sip:pbx.example.test;transport=udp reaches the priority-10 target, not the other."""
    link = link_with(Zone(two_targets()), relay_to(f"sip:{PBX};transport=udp"))
    send_invite(link)
    link.uac.expect(100)
    link.uas.expect("INVITE")
    link.uas2.expect_nothing()


def test_a_503_from_the_first_target_fails_over_to_the_second_before_the_failure_route():
    """The first target's 503 sends the INVITE to the second; the failure route never runs."""
    calls = []
    link = link_with(Zone(two_targets()), relay_to(f"sip:{PBX};transport=udp", calls))
    send_invite(link)
    link.uac.expect(100)
    fwd = link.uas.expect("INVITE")
    link.uas.send(sipmsg.response_to(fwd, 503, "Service Unavailable"))
    assert parse_message(link.uas.expect("ACK")).method == "ACK"
    fwd2 = link.uas2.expect("INVITE")
    assert parse_message(fwd2).via.branch != parse_message(fwd).via.branch
    link.uas2.send(sipmsg.response_to(fwd2, 200, "OK", extra=[("contact", "<sip:bob@127.0.0.1:5090>")]))
    link.uac.expect(200)
    assert calls == [] and link.core.stats["dns_failovers"] == 1


def test_a_branch_timeout_fails_over_and_the_last_failure_reaches_the_failure_route():
    """No answer from the first target: after fr the second is tried; its 503 goes to the failure route."""
    calls = []
    link = link_with(Zone(two_targets()), relay_to(f"sip:{PBX};transport=udp", calls))
    send_invite(link)
    link.uac.expect(100)
    link.uas.expect("INVITE")
    link.advance(2.0)
    link.uas.take()  # retransmissions of the INVITE
    fwd2 = link.uas2.take()[0]
    assert parse_message(fwd2).method == "INVITE" and calls == []
    link.uas2.send(sipmsg.response_to(fwd2, 503, "Service Unavailable"))
    assert calls == [503]
    link.uac.expect(503)


def test_a_branch_waits_for_dns_then_goes_out():
    """On a cache miss nothing is sent until the answer comes; then the INVITE goes out."""
    zone = HeldZone(two_targets())
    link = link_with(zone, relay_to(f"sip:{PBX};transport=udp"))
    send_invite(link)
    link.uac.expect(100)
    link.uas.expect_nothing()
    assert zone.pending == [(SRV, "_sip._udp." + PBX)]
    link.now = 0.1
    zone.answer(0.1)  # the SRV answer: now the A records are missing
    zone.answer(0.2)
    link._dispatch(link.core.layer.drain())
    link.uas.expect("INVITE")


def test_a_name_that_does_not_resolve_is_answered_503():
    """A held branch whose name has no records ends with 503 Unresolvable Destination."""
    calls = []
    zone = HeldZone({})
    link = link_with(zone, relay_to("sip:nowhere.test;transport=udp", calls))
    send_invite(link)
    link.uac.expect(100)
    zone.answer(0.1)
    zone.answer(0.2)
    link._dispatch(link.core.layer.drain())
    reply = parse_message(link.uac.take()[0])
    assert (reply.status, reply.reason) == (503, "Unresolvable Destination") and calls == [503]


def test_a_dns_answer_that_never_comes_ends_the_branch_at_fr():
    """A branch held past its fr timeout ends with a local 408."""
    zone = HeldZone(two_targets())
    link = link_with(zone, relay_to(f"sip:{PBX};transport=udp"))
    send_invite(link)
    link.uac.expect(100)
    link.advance(2.0)
    link.uac.expect(408)
    zone.answer(2.5)  # too late: nothing goes out
    link._dispatch(link.core.layer.drain())
    link.uas.expect_nothing()


def test_cancel_while_held_answers_487_and_sends_nothing():
    """A CANCEL during the DNS wait gets 200 and the INVITE 487; the answer then sends nothing."""
    zone = HeldZone(two_targets())
    link = link_with(zone, relay_to(f"sip:{PBX};transport=udp"))
    invite = send_invite(link)
    link.uac.expect(100)
    link.uac.send(_cancel(invite))
    assert sorted(parse_message(m).status for m in link.uac.take()) == [200, 487]
    zone.answer(0.1)
    zone.answer(0.2)
    link._dispatch(link.core.layer.drain())
    link.uas.expect_nothing()


def _cancel(invite):
    """A CANCEL for ``invite`` (RFC 3261 9.1)."""
    msg = parse_message(invite)
    lines = [f"CANCEL {msg.uri} SIP/2.0", f"Via: {msg.values('via')[0]}", "Max-Forwards: 70",
             f"From: {msg.get('from')}", f"To: {msg.get('to')}", f"Call-ID: {msg.call_id}",
             f"CSeq: {msg.cseq} CANCEL", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_transport_error_fails_over_at_once():
    """A connection to the first target that cannot be opened moves the branch to the second."""
    link = link_with(Zone(two_targets()), relay_to(f"sip:{PBX};transport=udp"))
    send_invite(link)
    link.uac.expect(100)
    link.uas.expect("INVITE")
    first = link.sent_by_core[-1][1]
    link._dispatch(link.core.transport_failed(first, 0.1))
    link.uas2.expect("INVITE")
    assert not [c for c in link.core.layer.clients.values() if c.target == first]
