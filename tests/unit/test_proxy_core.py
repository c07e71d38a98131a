"""The stateful proxy core (RFC 3261 section 16) between an in-memory UAC and UAS.

Unless a test says otherwise: the proxy listens on UDP 127.0.0.1:5060 with the shipped
route (etc/sipdisp.yaml, dispatching over set 0 = the UAS), the UAC is 10.0.0.1:5070 and
the next hop (UAS) 127.0.0.1:5080. Tests of the core's own API (failure routes, forking,
preloaded Route checks) give it a small route of their own.
"""

from types import SimpleNamespace

import pytest

from sipdisp.proxy import Listener, ProxyCore
from sipdisp.sip import parse_message
from tests.support import sipmsg
from tests.support.harness import Link
from tests.support.shipped import shipped_route

PROXY_RR = "sip:127.0.0.1:5060;lr"


def proxy_rr(link, call_id):
    """The proxy's Record-Route entry for the dialog of ``call_id``, signed."""
    return sipmsg.signed_rr(link.core, PROXY_RR, call_id)
UAS_CONTACT = "<sip:bob@127.0.0.1:5080>"


def invite(link, ruri="sip:bob@example.com", **kwargs):
    """The UAC sends an INVITE; returns its bytes."""
    kwargs.setdefault("via_host", link.uac.host)
    kwargs.setdefault("via_port", link.uac.port)
    return link.uac.send(sipmsg.request("INVITE", ruri, **kwargs))


def answer(peer, raw_request, status, reason="X", **kwargs):
    """``peer`` answers ``raw_request``; returns the response bytes."""
    extra = kwargs.pop("extra", ())
    if 200 <= status < 300 and raw_request.startswith(b"INVITE"):
        extra = [("contact", UAS_CONTACT), *extra]
    return peer.send(sipmsg.response_to(raw_request, status, reason, extra=extra, **kwargs))


def forced_rport(vias, host="10.0.0.1", port=5070):
    """``vias`` with the top one as the shipped route's force_rport leaves it (RFC 3581)."""
    return [vias[0] + f";received={host};rport={port}"] + list(vias[1:])


def statuses(peer):
    """The statuses of every response ``peer`` received since the last take."""
    return [parse_message(m).status for m in peer.take()]


def start_call(link, **kwargs):
    """INVITE through the proxy; returns (UAC's INVITE, what the UAS received)."""
    sent = invite(link, **kwargs)
    link.uac.expect(100)
    return sent, link.uas.expect("INVITE")


# -- a whole call -------------------------------------------------------------------

def test_full_call_with_record_route_and_loose_routing():
    """INVITE/100/180/200, then ACK and BYE follow the recorded route through the proxy."""
    link = Link.udp()
    sent, fwd_invite = start_call(link)
    fwd = parse_message(fwd_invite)
    up = parse_message(sent)
    # the forwarded INVITE: our Via on top, Record-Route, Max-Forwards - 1, R-URI kept
    assert fwd.via.host == "127.0.0.1" and fwd.via.port == 5060
    assert fwd.via.branch.startswith("z9hG4bK") and fwd.via.branch != up.via.branch
    assert fwd.values("via")[1] == forced_rport(up.values("via"))[0]
    assert fwd.values("record-route") == [proxy_rr(link, up.call_id)]
    assert fwd.get("max-forwards") == "69"
    assert str(fwd.uri) == "sip:bob@example.com"

    answer(link.uas, fwd_invite, 180, "Ringing")
    ringing = parse_message(link.uac.expect(180))
    assert ringing.values("via") == forced_rport(up.values("via"))  # our Via removed
    answer(link.uas, fwd_invite, 200, "OK")
    ok_raw = link.uac.expect(200)
    ok = parse_message(ok_raw)
    assert ok.values("record-route") == [proxy_rr(link, up.call_id)]
    assert ok.to_tag == "uastag"

    routes = sipmsg.route_set(ok_raw, reverse=True)
    ack = sipmsg.in_dialog("ACK", "sip:bob@127.0.0.1:5080", routes, call_id=up.call_id,
                           via_host="10.0.0.1", via_port=5070, cseq=1)
    link.uac.send(ack)
    fwd_ack = parse_message(link.uas.expect("ACK"))
    assert not fwd_ack.has("route")           # our own entry was popped
    assert str(fwd_ack.uri) == "sip:bob@127.0.0.1:5080"
    assert fwd_ack.via.host == "127.0.0.1" and len(fwd_ack.values("via")) == 2
    link.uac.expect_nothing()

    # BYE from the callee, along its route set (the RR in order) to the caller's Contact
    bye = sipmsg.in_dialog("BYE", "sip:alice@10.0.0.1:5070",
                           sipmsg.route_set(fwd_invite), call_id=up.call_id,
                           via_host="127.0.0.1", via_port=5080, cseq=1)
    link.uas.send(bye)
    fwd_bye = link.uac.expect("BYE")
    assert not parse_message(fwd_bye).has("route")
    answer(link.uac, fwd_bye, 200, "OK")
    bye_ok = parse_message(link.uas.expect(200))
    assert bye_ok.cseq_method == "BYE" and len(bye_ok.values("via")) == 1
    assert link.stray == []


def test_100_trying_goes_upstream_and_100_from_downstream_is_not_forwarded():
    """The proxy answers INVITE with its own 100 and swallows the next hop's 100."""
    link = Link.udp()
    _, fwd = start_call(link)
    answer(link.uas, fwd, 100, "Trying")
    link.uac.expect_nothing()


def test_retransmitted_invite_is_absorbed_with_the_last_provisional():
    """A retransmitted INVITE is not forwarded again; the last provisional is re-sent."""
    link = Link.udp()
    sent, fwd = start_call(link)
    link.uac.send(sent)
    link.uac.expect(100)
    link.uas.expect_nothing()
    answer(link.uas, fwd, 180, "Ringing")
    link.uac.expect(180)
    link.uac.send(sent)
    link.uac.expect(180)
    link.uas.expect_nothing()
    assert link.core.stats["absorbed_retransmissions"] == 2


def test_invite_retransmitted_downstream_when_lost_and_stops_after_provisional():
    """If the forwarded INVITE is lost, Timer A re-sends it until the next hop answers."""
    link = Link.udp()
    link.drop("from-core", "INVITE sip:")
    invite(link)
    link.uac.expect(100)
    link.uas.expect_nothing()
    link.advance(0.5)
    fwd = link.uas.expect("INVITE")
    answer(link.uas, fwd, 180, "Ringing")
    link.uac.expect(180)
    link.advance(1.5)
    link.uas.expect_nothing()


def test_lost_200_is_forwarded_when_the_uas_retransmits_it():
    """A 200 lost on its way to the caller is forwarded again when the UAS re-sends it."""
    link = Link.udp()
    _, fwd = start_call(link)
    link.drop("from-core", "SIP/2.0 200")
    ok = answer(link.uas, fwd, 200, "OK")
    link.uac.expect_nothing()
    link.advance(0.5)
    link.uas.send(ok)  # Timer G at the UAS
    forwarded = parse_message(link.uac.expect(200))
    assert forwarded.get("contact") == UAS_CONTACT
    assert len(forwarded.values("via")) == 1


def test_200_retransmission_after_the_transaction_ended_is_forwarded_statelessly():
    """Once Timer M/L removed the transaction, a 2xx with our Via is still relayed up."""
    link = Link.udp()
    _, fwd = start_call(link)
    ok = answer(link.uas, fwd, 200, "OK")
    link.uac.expect(200)
    link.advance(40.0)
    assert link.core.layer.clients == {} and link.core.layer.servers == {}
    link.uas.send(ok)
    assert len(parse_message(link.uac.expect(200)).values("via")) == 1
    assert link.core.stats["fwd_replies_stateless"] == 1


def test_response_for_an_unknown_branch_is_dropped():
    """A response whose top Via is not ours is dropped, not forwarded."""
    link = Link.udp()
    stray = sipmsg.response_to(sipmsg.request("INVITE", branch="z9hG4bKnotours"), 200)
    link.uas.send(stray)
    assert link.sent_by_core == [] and link.core.stats["dropped_replies"] == 1


# -- CANCEL -----------------------------------------------------------------------------

def test_cancel_is_answered_then_sent_downstream_after_a_provisional():
    """CANCEL gets its 200 at once; the proxy CANCELs downstream only after a provisional,
    forwards the 487, ACKs it hop by hop and absorbs the caller's ACK."""
    link = Link.udp()
    sent, fwd = start_call(link)
    up = parse_message(sent)
    cancel = sipmsg.request("CANCEL", "sip:bob@example.com", branch=up.via.branch,
                            call_id=up.call_id, via_host="10.0.0.1", via_port=5070)
    link.uac.send(cancel)
    assert parse_message(link.uac.expect(200)).cseq_method == "CANCEL"
    link.uas.expect_nothing()  # no provisional yet (RFC 3261 9.1)
    answer(link.uas, fwd, 180, "Ringing")
    link.uac.expect(180)
    down_cancel = link.uas.expect("CANCEL")
    dc = parse_message(down_cancel)
    assert dc.via.branch == parse_message(fwd).via.branch
    assert str(dc.uri) == str(parse_message(fwd).uri)
    answer(link.uas, down_cancel, 200, "OK")
    link.uac.expect_nothing()  # the CANCEL's 200 ends at the proxy
    answer(link.uas, fwd, 487, "Request Terminated")
    ack = parse_message(link.uas.expect("ACK"))
    assert ack.via.branch == dc.via.branch and ack.to_tag == "uastag"
    assert parse_message(link.uac.expect(487)).values("via") == forced_rport(up.values("via"))
    uac_ack = sipmsg.request("ACK", "sip:bob@example.com", branch=up.via.branch,
                             call_id=up.call_id, to_tag="uastag", via_host="10.0.0.1",
                             via_port=5070)
    link.uac.send(uac_ack)
    link.uas.expect_nothing()
    link.uac.expect_nothing()


def test_cancel_after_a_provisional_goes_downstream_at_once():
    """When the branch already had a provisional the CANCEL is relayed immediately."""
    link = Link.udp()
    sent, fwd = start_call(link)
    answer(link.uas, fwd, 180, "Ringing")
    link.uac.expect(180)
    up = parse_message(sent)
    link.uac.send(sipmsg.request("CANCEL", "sip:bob@example.com", branch=up.via.branch,
                                 call_id=up.call_id, via_host="10.0.0.1", via_port=5070))
    link.uac.expect(200)
    link.uas.expect("CANCEL")


def test_retransmitted_cancel_gets_the_same_200_and_is_not_relayed_twice():
    """A retransmitted CANCEL is absorbed by its own server transaction."""
    link = Link.udp()
    sent, fwd = start_call(link)
    answer(link.uas, fwd, 180, "Ringing")
    link.uac.expect(180)
    up = parse_message(sent)
    cancel = sipmsg.request("CANCEL", "sip:bob@example.com", branch=up.via.branch,
                            call_id=up.call_id, via_host="10.0.0.1", via_port=5070)
    link.uac.send(cancel)
    first = link.uac.expect(200)
    link.uas.expect("CANCEL")
    link.uac.send(cancel)
    assert link.uac.expect(200) == first
    link.uas.expect_nothing()


def test_cancel_without_a_matching_transaction_gets_481():
    """A CANCEL that matches no INVITE is answered 481 and not forwarded."""
    link = Link.udp()
    link.uac.send(sipmsg.request("CANCEL", "sip:bob@example.com", branch="z9hG4bKnothing",
                                 via_host="10.0.0.1", via_port=5070))
    resp = parse_message(link.uac.expect(481))
    assert resp.cseq_method == "CANCEL" and resp.to_tag
    link.uas.expect_nothing()


# -- failures, timeouts and failover ------------------------------------------------------

def test_branch_timeout_with_no_destination_left_gives_408_upstream():
    """No reply within proxy.branch_timeout and no other destination for RTF_DISPATCH: the
    caller gets a 408 and the ACK is absorbed."""
    link = Link.udp(branch_timeout=2.0)
    sent, fwd = start_call(link)
    link.advance(1.99)
    link.uac.expect_nothing()
    link.uas.take()  # Timer A retransmissions
    link.advance(0.01)
    timeout = parse_message(link.uac.expect(408))
    assert timeout.to_tag and timeout.values("via") == \
        forced_rport(parse_message(sent).values("via"))
    link.uas.expect_nothing()  # no CANCEL: the next hop never answered
    up = parse_message(sent)
    link.uac.send(sipmsg.request("ACK", "sip:bob@example.com", branch=up.via.branch,
                                 call_id=up.call_id, to_tag=timeout.to_tag,
                                 via_host="10.0.0.1", via_port=5070))
    link.uas.expect_nothing()
    link.advance(5.0)
    link.uac.expect_nothing()  # the ACK stopped Timer G


def test_200_crossing_the_timeout_cancel_is_still_forwarded():
    """A 200 that crosses the CANCEL sent on fr_inv timeout still reaches the caller, after
    its 408 (RFC 3261 16.7 step 5: every 2xx is forwarded)."""
    def route(ctx):
        ctx.record_route()
        ctx.set_dst("sip:127.0.0.1:5080")
        ctx.t_set_fr(3000, 2000)
        ctx.t_relay()

    link = Link.udp(route=route)
    _, fwd = start_call(link)
    answer(link.uas, fwd, 180, "Ringing")
    link.uac.expect(180)
    link.advance(3.0)  # fr_inv: CANCEL downstream, 408 upstream
    link.uas.expect("CANCEL")
    link.uac.expect(408)
    answer(link.uas, fwd, 200, "OK")
    assert parse_message(link.uac.expect(200)).get("contact") == UAS_CONTACT


def relay_to_uas(failure_route):
    """A route for tests of the core's failure-route API: Record-Route, then relay to the
    UAS with a 2 s branch timeout and ``failure_route`` armed."""
    def route(ctx):
        ctx.record_route()
        ctx.set_dst("sip:127.0.0.1:5080")
        ctx.t_set_fr(0, 2000)
        ctx.t_on_failure(failure_route)
        ctx.t_relay()
    return route


def failover_to(port):
    """A failure route that relays to 127.0.0.1:``port`` once, recording what it saw."""
    calls = []

    def failure_route(ctx):
        calls.append((ctx.failed_status, ctx.t_branch_timeout(), ctx.t_branch_replied()))
        if ctx.t_is_canceled():
            return
        if ctx.t_branch_timeout() or ctx.t_check_status("5"):
            ctx.set_dst(f"sip:127.0.0.1:{port}")
            ctx.t_relay()

    return failure_route, calls


def test_branch_timeout_fails_over_to_a_second_destination():
    """On branch timeout the failure route relays to a second node, whose 200 reaches the
    caller; the first node, which answered 100, gets a CANCEL."""
    failure_route, calls = failover_to(5090)
    link = Link.udp(route=relay_to_uas(failure_route))
    second = link.add_peer("uas2", "udp", "127.0.0.1", 5090, link.listener)
    _, fwd = start_call(link)
    answer(link.uas, fwd, 100, "Trying")
    link.advance(2.0)
    assert calls == [(408, True, True)]
    link.uas.expect("CANCEL")
    fwd2 = second.expect("INVITE")
    assert parse_message(fwd2).via.branch != parse_message(fwd).via.branch
    assert parse_message(fwd2).values("record-route") == [
        proxy_rr(link, parse_message(fwd2).call_id)]
    link.uac.expect_nothing()
    answer(second, fwd2, 200, "OK")
    assert parse_message(link.uac.expect(200)).get("contact") == UAS_CONTACT


def test_5xx_from_downstream_runs_the_failure_route():
    """A 503 is ACKed hop by hop and the failure route fails over; the 503 never goes up."""
    failure_route, calls = failover_to(5090)
    link = Link.udp(route=relay_to_uas(failure_route))
    second = link.add_peer("uas2", "udp", "127.0.0.1", 5090, link.listener)
    _, fwd = start_call(link)
    answer(link.uas, fwd, 503, "Service Unavailable")
    link.uas.expect("ACK")
    assert calls == [(503, False, True)]
    fwd2 = second.expect("INVITE")
    link.uac.expect_nothing()
    answer(second, fwd2, 486, "Busy Here")
    second.expect("ACK")
    assert parse_message(link.uac.expect(486)).reason == "Busy Here"
    assert len(calls) == 1  # the failure route is armed once (t_on_failure per relay)


def test_failure_route_reply_is_the_only_final_upstream():
    """A failure route that replies itself sends exactly one final upstream."""
    def failure_route(ctx):
        ctx.reply(503, "All Nodes Busy")

    link = Link.udp(route=relay_to_uas(failure_route))
    _, fwd = start_call(link)
    answer(link.uas, fwd, 500, "Oops")
    link.uas.expect("ACK")
    assert parse_message(link.uac.expect(503)).reason == "All Nodes Busy"
    link.advance(0.5)
    assert [parse_message(m).status for m in link.uac.take()] == [503]  # Timer G re-send


def test_silent_node_is_failed_over_by_rtf_dispatch():
    """The shipped RTF_DISPATCH: a node silent for proxy.branch_timeout is marked inactive
    and probing and the INVITE goes to the next node of set 0, whose 200 reaches the
    caller; the silent node gets no CANCEL (it never answered)."""
    link = Link.udp(next_hop_ports=(5080, 5090), branch_timeout=1.5)
    second = link.add_peer("uas2", "udp", "127.0.0.1", 5090, link.listener)
    _, fwd = start_call(link)
    link.advance(1.49)
    second.expect_nothing()
    link.uas.take()  # Timer A retransmissions
    link.advance(0.01)
    fwd2 = second.expect("INVITE")
    link.uas.expect_nothing()
    assert parse_message(fwd2).via.branch != parse_message(fwd).via.branch
    assert parse_message(fwd2).values("record-route") == [
        proxy_rr(link, parse_message(fwd2).call_id)]
    assert [d.letters for d in link.dispatcher.destinations()] == ["IP", "AX"]
    link.uac.expect_nothing()
    answer(second, fwd2, 200, "OK")
    assert parse_message(link.uac.expect(200)).get("contact") == UAS_CONTACT


def test_failover_code_from_a_node_is_failed_over_by_rtf_dispatch():
    """The shipped RTF_DISPATCH: a reply in proxy.failover_codes is ACKed hop by hop and
    the INVITE goes to the next node; a final not in the codes goes up to the caller."""
    link = Link.udp(next_hop_ports=(5080, 5090), failover_codes=[503])
    second = link.add_peer("uas2", "udp", "127.0.0.1", 5090, link.listener)
    _, fwd = start_call(link)
    answer(link.uas, fwd, 503, "Service Unavailable")
    link.uas.expect("ACK")
    fwd2 = second.expect("INVITE")
    link.uac.expect_nothing()
    answer(second, fwd2, 486, "Busy Here")
    second.expect("ACK")
    assert parse_message(link.uac.expect(486)).reason == "Busy Here"
    link.uas.expect_nothing()


def fork_route(ports):
    """A route that forks the request in parallel to every port in ``ports``."""
    def route(ctx):
        ctx.record_route()
        for port in ports:
            ctx.set_dst(f"sip:127.0.0.1:{port}")
            ctx.t_relay()
    return route


@pytest.mark.parametrize("finals,best", [
    ((486, 603), 603),
    ((603, 486), 603),
    ((503, 404), 404),
    ((404, 503), 404),
    ((302, 486), 302),
    ((500, 408), 408),
])
def test_best_response_selection(finals, best):
    """With every branch failed the caller gets the best final: a 6xx wins, else the lowest
    class (RFC 3261 16.7 step 6)."""
    link = Link.udp(route=fork_route([5080, 5090]))
    second = link.add_peer("uas2", "udp", "127.0.0.1", 5090, link.listener)
    invite(link)
    link.uac.expect(100)
    fwds = [link.uas.expect("INVITE"), second.expect("INVITE")]
    answer(link.uas, fwds[0], finals[0])
    link.uac.expect_nothing()
    answer(second, fwds[1], finals[1])
    assert parse_message(link.uac.expect(best)).status == best


def test_6xx_cancels_the_other_pending_branches():
    """A 6xx on one branch CANCELs the branches still ringing (RFC 3261 16.7 step 5)."""
    link = Link.udp(route=fork_route([5080, 5090]))
    second = link.add_peer("uas2", "udp", "127.0.0.1", 5090, link.listener)
    invite(link)
    link.uac.expect(100)
    fwd1, fwd2 = link.uas.expect("INVITE"), second.expect("INVITE")
    answer(link.uas, fwd1, 180, "Ringing")
    link.uac.expect(180)
    answer(second, fwd2, 603, "Decline")
    second.expect("ACK")
    cancel = link.uas.expect("CANCEL")
    answer(link.uas, fwd1, 487, "Request Terminated")
    link.uas.expect("ACK")
    assert parse_message(link.uac.expect(603)).reason == "Decline"
    assert parse_message(cancel).via.branch == parse_message(fwd1).via.branch


def test_2xx_on_one_branch_cancels_the_others_and_goes_up_at_once():
    """The first 2xx is forwarded immediately and the other ringing branches are CANCELled."""
    link = Link.udp(route=fork_route([5080, 5090]))
    second = link.add_peer("uas2", "udp", "127.0.0.1", 5090, link.listener)
    invite(link)
    link.uac.expect(100)
    fwd1, fwd2 = link.uas.expect("INVITE"), second.expect("INVITE")
    answer(second, fwd2, 180, "Ringing")
    link.uac.expect(180)
    answer(link.uas, fwd1, 200, "OK")
    link.uac.expect(200)
    second.expect("CANCEL")


# -- request sanity and local answers --------------------------------------------------------

def test_missing_max_forwards_is_set_to_the_configured_value():
    """Without Max-Forwards the forwarded request carries the configured value."""
    link = Link.udp(max_forwards=16)
    invite(link, max_forwards=None)
    link.uac.expect(100)
    fwd = parse_message(link.uas.expect("INVITE"))
    assert fwd.get_all("max-forwards") == ["16"]


def test_max_forwards_zero_is_483():
    """Max-Forwards: 0 is answered 483 Too Many Hops and not forwarded."""
    link = Link.udp()
    invite(link, max_forwards=0)
    link.uac.expect(483)
    link.uas.expect_nothing()


def test_max_forwards_one_is_forwarded_with_zero():
    """Max-Forwards: 1 still goes out, decremented to 0."""
    link = Link.udp()
    invite(link, max_forwards=1)
    link.uac.expect(100)
    assert parse_message(link.uas.expect("INVITE")).get("max-forwards") == "0"


def test_preloaded_route_not_ours_is_403():
    """remove_preloaded_route refuses an initial request whose first Route names another
    host, so a route can answer it 403."""
    def route(ctx):
        if not ctx.remove_preloaded_route():
            ctx.reply(403, "Preloaded Route Not Allowed")
            return
        ctx.set_dst("sip:127.0.0.1:5080")
        ctx.t_relay()

    link = Link.udp(route=route)
    invite(link, extra=["Route: <sip:evil.example.com;lr>"])
    assert statuses(link.uac) == [403]  # answered, never relayed: no 100 Trying
    link.uas.expect_nothing()


def test_shipped_route_removes_a_preloaded_route_and_dispatches():
    """The shipped route drops any preloaded Route of an initial request (the Kamailio
    seed's remove_hf("Route")) and dispatches it to set 0, never to that Route."""
    link = Link.udp()
    invite(link, extra=["Route: <sip:evil.example.com;lr>"])
    link.uac.expect(100)
    assert not parse_message(link.uas.expect("INVITE")).has("route")
    assert link.stray == []


def test_preloaded_route_to_us_is_removed_and_the_request_forwarded():
    """An initial request preloaded with our own URI is forwarded without that Route."""
    link = Link.udp()
    invite(link, extra=["Route: <sip:127.0.0.1:5060;lr>"])
    link.uac.expect(100)
    assert not parse_message(link.uas.expect("INVITE")).has("route")


def test_request_uri_without_user_is_484():
    """The shipped route answers an R-URI with no user part with 484 Address Incomplete."""
    link = Link.udp()
    invite(link, ruri="sip:example.com")
    assert statuses(link.uac) == [484]
    link.uas.expect_nothing()


def test_options_to_sipdisp_itself_is_answered_200_keepalive():
    """OPTIONS addressed to the proxy (no user part) is answered 200 Keepalive by the
    shipped REQINIT, with the Server header, and not relayed."""
    link = Link.udp()
    link.uac.send(sipmsg.request("OPTIONS", "sip:127.0.0.1:5060", via_host="10.0.0.1",
                                 via_port=5070))
    ok = parse_message(link.uac.expect(200))
    assert ok.reason == "Keepalive" and ok.get("server") == "sipdisp"
    link.uas.expect_nothing()


def test_unsupported_uri_scheme_is_416():
    """A Request-URI with a scheme the proxy cannot route is 416, never routed on To."""
    link = Link.udp()
    invite(link, ruri="xmpp:bob@example.com")
    link.uac.expect(416)
    link.uas.expect_nothing()


def test_proxy_require_is_420_with_unsupported():
    """Proxy-Require option tags the proxy lacks are refused with 420 and listed."""
    link = Link.udp()
    invite(link, extra=["Proxy-Require: foo", "Proxy-Require: bar, baz"])
    resp = parse_message(link.uac.expect(420))
    assert resp.get("unsupported") == "foo, bar, baz"
    link.uas.expect_nothing()


def test_parse_error_in_a_request_is_answered_400_statelessly():
    """A request that fails to parse is answered with the parser's status to its Via."""
    link = Link.udp()
    bad = sipmsg.request("INVITE", via_host="10.0.0.1", via_port=5070).replace(
        b"CSeq: 1 INVITE", b"CSeq: 99999999999 INVITE")
    link.uac.send(bad)
    resp = link.uac.take()
    assert len(resp) == 1 and resp[0].startswith(b"SIP/2.0 400 CSeq number out of range")


def test_oversized_request_is_answered_513():
    """A datagram beyond max_message_size is answered 513 Message Too Large."""
    link = Link.udp(max_message_size=1000)
    invite(link, body=b"v=0\r\n" * 300)
    assert link.uac.take()[0].startswith(b"SIP/2.0 513 Message Too Large")
    link.uas.expect_nothing()


# -- routing across transports, flows and NAT ------------------------------------------------

def test_strict_router_upstream_request_uri_is_ours():
    """A request from a strict router (R-URI is our RR entry) is sent to the last Route,
    which becomes the Request-URI (RFC 3261 16.4)."""
    link = Link.udp()
    sig = link.core.rr_signature("strict@test", "ftag")
    bye = sipmsg.in_dialog("BYE", f"sip:127.0.0.1:5060;lr;sdsig={sig}",
                           ["<sip:bob@127.0.0.1:5080>"], call_id="strict@test",
                           via_host="10.0.0.1", via_port=5070)
    link.uac.send(bye)
    fwd = parse_message(link.uas.expect("BYE"))
    assert str(fwd.uri) == "sip:bob@127.0.0.1:5080"
    assert not fwd.has("route")


def test_strict_router_downstream_gets_the_route_in_the_request_uri():
    """When the next Route has no ;lr the proxy puts it in the R-URI and appends the old
    R-URI as the last Route (RFC 3261 16.6 step 6)."""
    link = Link.udp()
    bye = sipmsg.in_dialog("BYE", "sip:carol@192.0.2.99",
                           [proxy_rr(link, "strict@test"), "<sip:127.0.0.1:5080>"],
                           call_id="strict@test", via_host="10.0.0.1", via_port=5070)
    link.uac.send(bye)
    fwd = parse_message(link.uas.expect("BYE"))
    assert str(fwd.uri) == "sip:127.0.0.1:5080"
    assert fwd.values("route") == ["<sip:carol@192.0.2.99>"]


def test_in_dialog_request_with_a_foreign_route_set_is_not_relayed():
    """An in-dialog request whose first Route is another proxy never went through a
    Record-Route of ours: it is answered 404, not relayed there (no open relay)."""
    link = Link.udp()
    other = link.add_peer("p2", "udp", "192.0.2.50", 5060, link.listener)
    bye = sipmsg.in_dialog("BYE", "sip:bob@127.0.0.1:5080", ["<sip:192.0.2.50;lr>"],
                           via_host="10.0.0.1", via_port=5070)
    link.uac.send(bye)
    link.uac.expect(404)
    other.expect_nothing()
    assert link.core.stats["route_unsigned"] == 1


def test_in_dialog_request_without_route_set_is_404():
    """The seed's WITHINDLG answers an in-dialog request that has no route through us."""
    link = Link.udp()
    link.uac.send(sipmsg.in_dialog("BYE", "sip:bob@127.0.0.1:5080", via_host="10.0.0.1",
                                   via_port=5070))
    assert parse_message(link.uac.expect(404)).reason == "Not here"


def tcp_to_udp_link(next_hop="sip:127.0.0.1:5080"):
    """A UAC on a TCP connection (id 7) to the TCP listener, the UAS over UDP."""
    udp = Listener("udp0", "udp", "127.0.0.1", 5060)
    tcp = Listener("tcp0", "tcp", "127.0.0.1", 5060)
    link = Link(ProxyCore([udp, tcp], None))
    shipped_route(link.core, [next_hop])
    link.uac = link.add_peer("uac", "tcp", "10.0.0.1", 40000, tcp, conn=7)
    proto = "tcp" if "transport=tcp" in next_hop else "udp"
    link.uas = link.add_peer("uas", proto, "127.0.0.1", 5080, tcp if proto == "tcp" else udp,
                             conn=8 if proto == "tcp" else None)
    for peer in (link.uac, link.uas):
        source = peer.source
        if source.conn is None:
            continue
        link.core.flows.connections[source.conn] = SimpleNamespace(
            proto=source.proto, peer_host=source.host, peer_port=source.port,
            listener=source.listener)
    return link


def test_double_record_route_across_transports_and_loose_routing_back():
    """From a TCP listener to a UDP next hop the proxy records two routes (RFC 5658), the
    TCP one carrying the flow token; in-dialog requests cross both ways."""
    link = tcp_to_udp_link()
    sent = link.uac.send(sipmsg.request("INVITE", "sip:bob@example.com", proto="TCP",
                                        via_host="10.0.0.1", via_port=40000))
    link.uac.expect(100)
    fwd = link.uas.expect("INVITE")
    rr = parse_message(fwd).values("record-route")
    call_id = parse_message(sent).call_id
    assert rr == [sipmsg.signed_rr(link.core, "sip:127.0.0.1:5060;lr;r2=on", call_id),
                  sipmsg.signed_rr(link.core, "sip:sdf-7@127.0.0.1:5060;transport=tcp;lr;r2=on",
                                   call_id)]
    ok_raw = answer(link.uas, fwd, 200, "OK")
    assert parse_message(link.uac.expect(200)).values("record-route") == rr
    call_id = parse_message(sent).call_id
    # caller -> callee: the route set reversed, both entries are ours
    ack = sipmsg.in_dialog("ACK", "sip:bob@127.0.0.1:5080", sipmsg.route_set(ok_raw, True),
                           call_id=call_id, proto="TCP", via_host="10.0.0.1", via_port=40000)
    link.uac.send(ack)
    fwd_ack = parse_message(link.uas.expect("ACK"))
    assert not fwd_ack.has("route") and fwd_ack.via.transport == "UDP"
    # callee -> caller: back on TCP connection 7 (the flow token)
    bye = sipmsg.in_dialog("BYE", "sip:alice@10.0.0.1:40000;transport=tcp", rr,
                           call_id=call_id, via_host="127.0.0.1", via_port=5080)
    link.uas.send(bye)
    fwd_bye = link.uac.expect("BYE")
    assert parse_message(fwd_bye).via.transport == "TCP"
    assert link.sent_by_core[-1][1].conn == 7
    answer(link.uac, fwd_bye, 200, "OK")
    link.uas.expect(200)


def test_flow_token_returns_in_dialog_requests_on_the_same_connection():
    """With one TCP listener both ways, the single Record-Route carries the caller's flow
    token and the callee's BYE goes back on that connection, not a new one."""
    link = tcp_to_udp_link("sip:127.0.0.1:5080;transport=tcp")
    sent = link.uac.send(sipmsg.request("INVITE", "sip:bob@example.com", proto="TCP",
                                        via_host="10.0.0.1", via_port=40000))
    link.uac.expect(100)
    fwd = link.uas.expect("INVITE")
    flow_rr = sipmsg.signed_rr(link.core, "sip:sdf-7@127.0.0.1:5060;transport=tcp;lr",
                               parse_message(sent).call_id)
    assert parse_message(fwd).values("record-route") == [flow_rr]
    assert link.sent_by_core[-1][1].proto == "tcp"
    # the UA advertised a Contact it cannot be reached at (NAT): only the flow works
    bye = sipmsg.in_dialog("BYE", "sip:alice@192.168.1.10:5060;transport=tcp",
                           [flow_rr],
                           call_id=parse_message(sent).call_id, proto="TCP",
                           via_host="127.0.0.1", via_port=5080)
    link.uas.send(bye)
    link.uac.expect("BYE")
    assert link.sent_by_core[-1][1] == link.uac.source


def test_rport_and_received_are_added_to_the_top_via():
    """RFC 3581: with ;rport the top Via gets received and rport from the packet's source,
    and responses go back there, not to the sent-by port."""
    link = Link.udp()
    nat = link.add_peer("nat", "udp", "203.0.113.5", 40001, link.listener)
    sent = nat.send(sipmsg.request("INVITE", "sip:bob@example.com", via_host="192.168.1.10",
                                   via_port=5070, extra=["X-Case: rport"]).replace(
        b";branch=", b";rport;branch="))
    trying = parse_message(nat.expect(100))
    assert trying.via.param("received") == "203.0.113.5"
    assert trying.via.param("rport") == "40001"
    fwd = parse_message(link.uas.expect("INVITE"))
    assert fwd.vias()[1].response_address() == ("203.0.113.5", 40001)
    assert parse_message(sent).via.param("rport") == ""


def test_received_is_added_when_sent_by_differs_without_rport():
    """Without rport, a sent-by host that differs from the source gets ;received, and the
    response goes to the source host at the sent-by port (RFC 3261 18.2.2)."""
    def route(ctx):  # the shipped route's force_rport would add rport
        ctx.set_dst("sip:127.0.0.1:5080")
        ctx.t_relay()
    link = Link.udp(route=route)
    peer = link.add_peer("p", "udp", "203.0.113.5", 5070, link.listener)
    peer.send(sipmsg.request("INVITE", "sip:bob@example.com", via_host="uac.example.com",
                             via_port=5070))
    trying = parse_message(peer.expect(100))
    assert trying.via.param("received") == "203.0.113.5"
    assert trying.via.param("rport") is None
    link.uas.expect("INVITE")


# -- robustness --------------------------------------------------------------------------------

def test_route_that_raises_gives_500_and_the_core_keeps_working():
    """An exception in the route is answered 500 and the next request is routed normally."""
    def route(ctx):
        if ctx.request.get("subject") == "boom":
            raise RuntimeError("route bug")
        ctx.set_dst("sip:127.0.0.1:5080")
        ctx.t_relay()

    link = Link.udp(route=route)
    invite(link, extra=["Subject: boom"])
    got = [parse_message(m) for m in link.uac.take()]
    assert [(r.status, r.reason) for r in got] == [(500, "Server Internal Error")]
    assert link.core.stats["route_errors"] == 1
    invite(link)
    link.uac.expect(100)
    link.uas.expect("INVITE")


def test_route_that_handles_nothing_drops_the_request_and_forgets_it():
    """A route that neither replies nor relays leaves no transaction behind."""
    link = Link.udp(route=lambda ctx: None)
    link.uac.send(sipmsg.request("OPTIONS", via_host="10.0.0.1", via_port=5070))
    link.uac.expect_nothing()
    assert link.core.layer.servers == {}


def test_junk_and_responses_with_broken_headers_never_raise():
    """Garbage datagrams are dropped without an exception escaping receive."""
    link = Link.udp()
    for junk in (b"", b"\r\n\r\n", b"\x00\xff" * 50, b"SIP/2.0 200 OK\r\n\r\n",
                 b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n",
                 sipmsg.response_to(sipmsg.request(), 180).replace(b"CSeq: 1", b"CSeq: x")):
        link.uac.send(junk)
    assert link.core.stats["internal_errors"] == 0
    invite(link)
    link.uac.expect(100)


def test_a_taken_over_nodes_signed_route_is_followed_and_only_its_address_is_adopted():
    """Another cluster node's Record-Route entry (signed with the shared secret)
    is followed only once that node's address is adopted (its dialogs taken
    over here, issue 16) and for a dialog this node holds; an entry of a node
    not adopted stays a stranger's."""
    link = Link.udp()
    held = {"takeover-1@test"}
    link.core.routeset.holds_dialog = lambda request: request.call_id in held
    call_id = "takeover-1@test"
    dead = sipmsg.signed_rr(link.core, "sip:127.0.0.2:5077;lr", call_id)
    other = sipmsg.signed_rr(link.core, "sip:127.0.0.3:5077;lr", call_id)

    def bye(route, cseq):
        return sipmsg.in_dialog("BYE", "sip:bob@127.0.0.1:5080", [route], call_id=call_id,
                                via_host="10.0.0.1", via_port=5070, cseq=cseq)

    link.uac.send(bye(dead, 1))
    link.uac.expect(404)
    assert link.core.stats["route_unsigned"] == 1
    link.core.identity.adopt("127.0.0.2", 5077)
    assert link.core.identity.adopted == [("127.0.0.2", 5077)]
    link.uac.send(bye(dead, 2))
    fwd = parse_message(link.uas.expect("BYE"))
    assert not fwd.has("route") and str(fwd.uri) == "sip:bob@127.0.0.1:5080"
    link.uac.send(bye(other, 3))
    link.uac.expect(404)
    assert link.core.stats["route_unsigned"] == 2
    held.clear()  # a dialog not held here: the dead node's entry is not ours
    link.uac.send(bye(dead, 5))
    link.uac.expect(404)
    assert link.core.stats["route_unsigned"] == 3
    assert not link.core.is_myself(parse_message(bye(dead, 4)).addresses("route")[0].uri)
