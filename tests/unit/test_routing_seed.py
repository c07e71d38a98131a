"""The default configuration's route reproduces the Kamailio seed's
request_route end to end: REQINIT, CANCEL, retransmissions, WITHINDLG,
Record-Route, REGISTRAR, 484, DISPATCH (set 0, round robin) and RTF_DISPATCH."""

import os

from sipdisp.schema import load_config
from tests.support.dispatch import Proxy, requests, responses
from tests.support.sipmsg import request, response_to, signed_rr

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODE1 = ("127.0.0.1", 5081)
NODE2 = ("127.0.0.1", 5082)
NODES = ["sip:127.0.0.1:5081", "sip:127.0.0.1:5082"]
RR = "sip:127.0.0.1:5060;lr"


def seed_proxy(rows=NODES, **dispatcher):
    """The shipped etc/sipdisp.yaml's route and dispatcher settings over ``rows``."""
    shipped = load_config(os.path.join(ROOT, "etc", "sipdisp.yaml")).as_dict()
    config = {"routing": shipped["routing"],
              "dispatcher": dict(shipped["dispatcher"], list_file="/nonexistent", **dispatcher)}
    return Proxy(config, rows=rows)


def only(out, status):
    """The one final response in ``out`` (besides 100 Trying and retransmissions)."""
    got = [m for m, _ in responses(out) if m.status != 100]
    assert {m.status for m in got} == {status}, [(m.status, m.reason) for m in got]
    return got[0]


def test_reqinit_answers_483_to_max_forwards_zero():
    """REQINIT: Max-Forwards 0 is answered 483 Too Many Hops and not relayed."""
    p = seed_proxy()
    out = p.send(request("INVITE", "sip:1000@127.0.0.1:5060", max_forwards=0))
    assert only(out, 483).reason == "Too Many Hops" and not requests(out)


def test_retransmissions_are_absorbed():
    """A retransmitted INVITE is not dispatched a second time."""
    p = seed_proxy()
    raw = request("INVITE", "sip:1000@127.0.0.1:5060")
    assert len(requests(p.send(raw), "INVITE")) == 1
    assert requests(p.send(raw), "INVITE") == []


def test_cancel_is_relayed_and_a_cancelled_call_does_not_fail_over():
    """CANCEL reaches the node, the caller gets 487, and RTF_DISPATCH does not try another node."""
    p = seed_proxy()
    raw = request("INVITE", "sip:1000@127.0.0.1:5060", branch="z9hG4bKcx", call_id="cx@t")
    fwd, node = requests(p.send(raw), "INVITE")[0]
    p.send(response_to(fwd.to_bytes(), 180, "Ringing"), source=node)
    out = p.send(request("CANCEL", "sip:1000@127.0.0.1:5060", branch="z9hG4bKcx",
                         call_id="cx@t"))
    assert only(out, 200) and requests(out, "CANCEL")[0][1] == node
    out = p.send(response_to(fwd.to_bytes(), 487, "Request Terminated"), source=node)
    assert only(out, 487) and not requests(out, "INVITE")
    assert [d.letters for d in p.dispatcher.destinations()] == ["AX", "AX"]


def test_withindlg_follows_the_route_set_or_answers_not_here():
    """In-dialog: with our Route it is relayed to the R-URI; without, 404 Not here; a stray ACK is dropped."""
    p = seed_proxy()
    bye = request("BYE", "sip:fs@127.0.0.1:5081", to_tag="t1", call_id="dlg@t",
                  extra=[f"Route: {signed_rr(p.core, RR, 'dlg@t')}"])
    out = p.send(bye)
    assert requests(out, "BYE")[0][1] == NODE1
    assert only(p.send(request("BYE", "sip:fs@127.0.0.1:5081", to_tag="t1")), 404).reason == "Not here"
    assert p.send(request("ACK", "sip:fs@127.0.0.1:5081", to_tag="t1")) == []


def test_initial_invite_is_record_routed_and_preloaded_route_removed():
    """INVITE gets Record-Route, loses a preloaded Route, and has Max-Forwards decremented."""
    p = seed_proxy()
    out = p.send(request("INVITE", "sip:1000@127.0.0.1:5060",
                         extra=["Route: <sip:10.9.9.9;lr>"]))
    fwd, node = requests(out, "INVITE")[0]
    assert fwd.get("record-route") == signed_rr(p.core, RR, fwd.call_id)
    assert fwd.get("route") is None and fwd.get("max-forwards") == "69"
    assert node == NODE1


def test_message_is_dispatched_without_record_route():
    """Only INVITE and SUBSCRIBE are record-routed; a MESSAGE is dispatched without it."""
    p = seed_proxy()
    fwd, _ = requests(p.send(request("MESSAGE", "sip:1000@127.0.0.1:5060")), "MESSAGE")[0]
    assert fwd.get("record-route") is None


def test_register_presence_and_no_user():
    """REGISTER 404 No registrar, PUBLISH/SUBSCRIBE 404 Not here, no R-URI user 484."""
    p = seed_proxy()
    assert only(p.send(request("REGISTER", "sip:127.0.0.1:5060")), 404).reason == "No registrar"
    assert only(p.send(request("PUBLISH", "sip:a@127.0.0.1:5060")), 404).reason == "Not here"
    assert only(p.send(request("SUBSCRIBE", "sip:a@127.0.0.1:5060")), 404).reason == "Not here"
    assert only(p.send(request("INVITE", "sip:127.0.0.1:5060")), 484).reason == "Address Incomplete"


def test_dispatch_round_robins_over_set_zero():
    """DISPATCH: ds_select_dst(0, 4) alternates the two nodes of set 0."""
    p = seed_proxy()
    got = [requests(p.send(request("INVITE", "sip:1000@127.0.0.1:5060")), "INVITE")[0][1]
           for _ in range(6)]
    assert got == [NODE1, NODE2] * 3


def test_dispatch_without_a_usable_node_answers_no_destination():
    """With every node inactive the caller gets 404 No destination at once."""
    p = seed_proxy()
    p.dispatcher.set_state("ip", 0, "all")
    assert only(p.send(request("INVITE", "sip:1000@127.0.0.1:5060")), 404).reason == "No destination"


def test_rtf_dispatch_fails_over_on_500_and_marks_the_node():
    """A node answering 500: the call goes to the next node and the failed one becomes IP."""
    p = seed_proxy()
    fwd, node = requests(p.send(request("INVITE", "sip:1000@127.0.0.1:5060")), "INVITE")[0]
    out = p.send(response_to(fwd.to_bytes(), 500, "Server Error"), source=node)
    retry, node2 = requests(out, "INVITE")[0]
    assert node2 == NODE2 and not responses(out, 500)
    out = p.send(response_to(retry.to_bytes(), 200), source=node2)
    assert only(out, 200)
    assert [d.letters for d in p.dispatcher.destinations()] == ["IP", "AX"]
    assert "AX -> IP: ds_mark_dst(ip) after 500 Server Error" in p.log.lines[0]


def test_rtf_dispatch_fails_over_after_a_two_second_silent_timeout():
    """A silent node: after t_set_fr's 2 s the next node gets the call (not after 32 s)."""
    p = seed_proxy()
    requests(p.send(request("INVITE", "sip:1000@127.0.0.1:5060")), "INVITE")
    assert [to for _, to in requests(p.advance(1.99), "INVITE")] == [NODE1, NODE1]
    out = p.advance(0.02)
    assert [to for _, to in requests(out, "INVITE")] == [NODE2]


def test_proxy_branch_timeout_sets_the_failover_timer_of_the_builtin_route():
    """proxy.branch_timeout (seconds) is what the built-in route's t_set_fr uses."""
    shipped = load_config(os.path.join(ROOT, "etc", "sipdisp.yaml")).as_dict()
    p = Proxy({"routing": shipped["routing"], "proxy": {"branch_timeout": 0.8},
               "dispatcher": dict(shipped["dispatcher"], list_file="/nonexistent")}, rows=NODES)
    requests(p.send(request("INVITE", "sip:1000@127.0.0.1:5060")), "INVITE")
    assert NODE2 not in [to for _, to in requests(p.advance(0.79), "INVITE")]
    out = p.advance(0.02)
    assert [to for _, to in requests(out, "INVITE")] == [NODE2]


def test_a_ringing_node_that_times_out_is_not_failed_over():
    """After a 180 the branch is 'replied': a later timeout is not a node failure (t_branch_replied)."""
    p = seed_proxy()
    fwd, node = requests(p.send(request("INVITE", "sip:1000@127.0.0.1:5060")), "INVITE")[0]
    p.send(response_to(fwd.to_bytes(), 180, "Ringing"), source=node)
    out = p.advance(121.0)
    assert not [r for r in requests(out, "INVITE") if r[1] == NODE2]
    assert only([r for r in out if not r[0].is_request], 408)
    assert p.dispatcher.destinations()[0].letters == "AX"


def test_a_busy_reply_is_passed_back_without_failover():
    """486 is the callee's answer, not a node failure: relayed to the caller, no next node."""
    p = seed_proxy()
    fwd, node = requests(p.send(request("INVITE", "sip:1000@127.0.0.1:5060")), "INVITE")[0]
    out = p.send(response_to(fwd.to_bytes(), 486, "Busy Here"), source=node)
    assert only(out, 486) and not requests(out, "INVITE")


def test_last_node_failing_returns_its_error():
    """When the last node also fails the caller gets the failure, not a hang."""
    p = seed_proxy()
    fwd, node = requests(p.send(request("INVITE", "sip:1000@127.0.0.1:5060")), "INVITE")[0]
    retry, node2 = requests(p.send(response_to(fwd.to_bytes(), 503, "Unavailable"),
                                   source=node), "INVITE")[0]
    out = p.send(response_to(retry.to_bytes(), 500, "Server Error"), source=node2)
    finals = [m.status for m, _ in responses(out)]
    assert len(finals) == 1 and finals[0] in (500, 503)


def test_calls_from_a_node_are_not_dispatched_back():
    """FROMNODES: a FreeSWITCH node calling out goes to the R-URI; to a user here it gets 404."""
    p = seed_proxy()
    out = p.send(request("INVITE", "sip:+4930@10.20.30.40:5060", via_port=5081), source=NODE1)
    assert [to for _, to in requests(out, "INVITE")] == [("10.20.30.40", 5060)]
    out = p.send(request("INVITE", "sip:1000@127.0.0.1:5060", via_port=5081), source=NODE1)
    assert only(out, 404).reason == "Not found"


def test_a_call_ringing_after_100_trying_outlives_the_two_second_timer():
    """100 Trying then 180 Ringing switches the branch to fr_inv: the call is not cut at 2 s."""
    p = seed_proxy()
    fwd, node = requests(p.send(request("INVITE", "sip:1000@127.0.0.1:5060")), "INVITE")[0]
    p.send(response_to(fwd.to_bytes(), 100, "Trying"), source=node)
    p.send(response_to(fwd.to_bytes(), 180, "Ringing"), source=node)
    assert p.advance(30.0) == []
    out = p.send(response_to(fwd.to_bytes(), 200), source=node)
    assert only(out, 200)
