"""The dialog table through a real proxy core in memory: states, matching,
timeouts with the proxy's own BYEs, keepalives, profiles and commands."""

import copy

from twisted.internet.task import Clock

from sipdisp.commands import CommandRegistry
from sipdisp.dialog.service import register_commands
from sipdisp.sip import parse_message
from tests.support import sipmsg
from tests.support.calls import ROUTE, Switch


def route_with(invite_steps=None, indialog_steps=None):
    """ROUTE with steps replaced at the top of the INVITE block / the in-dialog block."""
    route = copy.deepcopy(ROUTE)
    if invite_steps is not None:
        block = route["request_route"][1]["then"]
        block[1] = invite_steps
    if indialog_steps is not None:
        route["request_route"][0]["then"][:0] = indialog_steps
    return route


def only_dialog(sw):
    dialogs = list(sw.dialogs.dialogs.values())
    assert len(dialogs) == 1, dialogs
    return dialogs[0]


def test_dialog_goes_unconfirmed_early_confirmed_with_both_parties_recorded():
    """create_dialog tracks the INVITE; a 180 with a To tag makes it early, the 200 confirms
    it with the callee's tag, contact, address and our socket on each side."""
    sw = Switch()
    call = sw.call()
    node = call.start()
    dlg = only_dialog(sw)
    assert dlg.state_name == "unconfirmed" and dlg.from_tag == call.from_tag
    call.ring()
    assert dlg.state_name == "early"
    call.sw.nodes[node].send(sipmsg.response_to(call.fwd, 200, "OK", to_tag=call.to_tag,
                                                extra=[("contact", "<sip:fs@127.0.0.1:5081>")]))
    assert dlg.state_name == "confirmed" and dlg.to_tag == call.to_tag
    assert dlg.callee_contact == "sip:fs@127.0.0.1:5081"
    assert dlg.caller_contact == "sip:alice@10.0.0.1:5070"
    assert dlg.caller_addr == ("udp", "10.0.0.1", 5070, None)
    assert dlg.callee_addr == ("udp", "127.0.0.1", 5081, None)
    assert dlg.caller_sock == dlg.callee_sock == "udp:127.0.0.1:5060"
    assert dlg.answered == sw.now and dlg.describe(sw.now + 3)["duration"] == 3


def test_caller_bye_ends_the_dialog_and_its_profiles():
    """A BYE from the caller through the proxy deletes the dialog and its load balancer count."""
    sw = Switch()
    call = sw.call()
    call.start()
    call.answer()
    assert sw.loads() == {"fs1": 1, "fs2": 0}
    sw.advance(5)
    assert [m.status for m in call.hangup()] == [200]
    assert sw.dialogs.dialogs == {} and sw.dialogs.by_callid == {}
    assert sw.loads() == {"fs1": 0, "fs2": 0}
    assert sw.dialogs.stats["ended_bye"] == 1


def test_callee_bye_is_matched_upstream_and_ends_the_dialog():
    """A BYE from the callee (tags swapped) matches the dialog upstream and ends it."""
    sw = Switch()
    call = sw.call()
    call.start()
    call.answer()
    dlg = only_dialog(sw)
    bye = sipmsg.in_dialog("BYE", "sip:alice@10.0.0.1:5070", call.ok.values("record-route"),
                           to_tag=call.from_tag, from_tag=call.to_tag, call_id=call.call_id,
                           via_host="127.0.0.1", via_port=5081, cseq=1)
    assert sw.dialogs.match(parse_message(bye)) == (dlg, "upstream")
    sw.nodes["fs1"].send(bye)
    relayed = sw.uac.expect("BYE")
    sw.uac.send(sipmsg.response_to(relayed, 200, "OK", to_tag=None))
    assert dlg.state_name == "deleted" and dlg.end_reason == "bye"
    assert sw.loads()["fs1"] == 0


def test_failed_invite_deletes_the_dialog():
    """A 486 from the node (no failover for 4xx) deletes the dialog and releases the load."""
    sw = Switch()
    call = sw.call()
    call.start()
    got = call.answer(486, "Busy Here")
    assert [m.status for m in got][-1] == 486
    assert sw.dialogs.dialogs == {} and sw.dialogs.stats["ended_failure"] == 1
    assert sw.loads() == {"fs1": 0, "fs2": 0}


def test_route_reply_after_create_dialog_leaves_no_dialog():
    """When the route answers the INVITE itself (no capacity), its dialog goes at once."""
    sw = Switch(capacity=0)
    call = sw.call()
    assert call.start() is None
    assert [m.status for m in sw.uac.messages()] == [503]  # no 100: it was never relayed
    assert sw.dialogs.dialogs == {} and sw.dialogs.stats["ended_failure"] == 1


def test_create_dialog_ignores_requests_other_than_an_initial_invite():
    """create_dialog is false (and tracks nothing) for a MESSAGE."""
    route = {"request_route": [
        {"if": {"not": "create_dialog"}, "then": [{"sl_send_reply": [488, "No Dialog"]}, "exit"]},
        {"sl_send_reply": [200, "OK"]}]}
    sw = Switch(route=route)
    sw.uac.send(sipmsg.request("MESSAGE", "sip:bob@127.0.0.1", via_host="10.0.0.1"))
    assert [m.status for m in sw.uac.messages()] == [488]
    assert sw.dialogs.stats["created"] == 0


def _bye_pair(sw, node="fs1"):
    to_caller = [m for m in sw.uac.messages() if m.is_request]
    to_callee = [m for m in (parse_message(r) for r in sw.nodes[node].take()) if m.is_request]
    return to_caller, to_callee


def test_timeout_sends_bye_to_both_parties_built_from_the_dialog():
    """At default_timeout after the answer, each party gets an in-dialog BYE: its Contact as
    Request-URI, the dialog's tags in that direction, the next CSeq; then the dialog is gone."""
    sw = Switch(dialog={"default_timeout": 60.0})
    call = sw.call()
    call.start()
    call.answer()
    sw.advance(59.9)
    assert _bye_pair(sw) == ([], [])
    sw.advance(0.2)
    to_caller, to_callee = _bye_pair(sw)
    assert [m.method for m in to_caller] == ["BYE"] and [m.method for m in to_callee] == ["BYE"]
    a, b = to_caller[0], to_callee[0]
    assert str(a.uri) == "sip:alice@10.0.0.1:5070" and str(b.uri) == "sip:fs@127.0.0.1:5081"
    assert (a.from_tag, a.to_tag) == (call.to_tag, call.from_tag)
    assert (b.from_tag, b.to_tag) == (call.from_tag, call.to_tag)
    assert a.call_id == b.call_id == call.call_id
    assert (a.cseq, b.cseq) == (1, 2)  # nothing from the callee yet; the caller's INVITE was 1
    assert not a.has("route") and not b.has("route")
    assert sw.dialogs.dialogs == {} and sw.loads()["fs1"] == 0
    sw.uac.send(sipmsg.response_to(a.to_bytes(), 200, "OK", to_tag=None))
    sw.nodes["fs1"].send(sipmsg.response_to(b.to_bytes(), 200, "OK", to_tag=None))
    assert sw.dialogs.requests.in_flight == 0 and sw.dialogs.stats["byes_sent"] == 2


def test_timeout_bye_follows_the_route_set_towards_the_callee():
    """A Record-Route of a proxy beyond us becomes the callee's route set: the BYE goes there
    with that Route header."""
    sw = Switch(dialog={"default_timeout": 10.0})
    edge = sw.add_peer("edge", "udp", "127.0.0.1", 5099, sw.listener)
    call = sw.call()
    node = call.start()
    fwd = parse_message(call.fwd)
    fwd.prepend("record-route", "<sip:127.0.0.1:5099;lr>")
    sw.nodes[node].send(sipmsg.response_to(fwd.to_bytes(), 200, "OK", to_tag=call.to_tag,
                                           extra=[("contact", "<sip:fs@10.9.9.9:5080>")]))
    assert only_dialog(sw).callee_routes == ["<sip:127.0.0.1:5099;lr>"]
    sw.advance(10.1)
    (bye,) = [parse_message(r) for r in edge.take()]
    assert bye.method == "BYE" and bye.values("route") == ["<sip:127.0.0.1:5099;lr>"]
    assert str(bye.uri) == "sip:fs@10.9.9.9:5080"


def test_without_flag_b_and_bye_on_timeout_off_a_timeout_only_forgets_the_call():
    """bye_on_timeout false and create_dialog without B: the dialog ends silently at its timeout."""
    sw = Switch(route=route_with(invite_steps={"create_dialog": None}),
                dialog={"default_timeout": 10.0, "bye_on_timeout": False})
    call = sw.call()
    call.start()
    call.answer()
    sw.advance(11)
    assert _bye_pair(sw) == ([], []) and sw.dialogs.dialogs == {}
    assert sw.dialogs.stats["ended_timeout"] == 1 and sw.loads()["fs1"] == 0


def test_reinvite_from_the_callee_moves_the_cseq_of_the_timeout_bye():
    """A re-INVITE from the callee with CSeq 7 makes the proxy's BYE to the caller use CSeq 8."""
    sw = Switch(dialog={"default_timeout": 30.0})
    call = sw.call()
    call.start()
    call.answer()
    reinvite = sipmsg.in_dialog("INVITE", "sip:alice@10.0.0.1:5070",
                                call.ok.values("record-route"), to_tag=call.from_tag,
                                from_tag=call.to_tag, call_id=call.call_id,
                                via_host="127.0.0.1", via_port=5081, cseq=7)
    sw.nodes["fs1"].send(reinvite)
    relayed = sw.uac.expect("INVITE")
    sw.uac.send(sipmsg.response_to(relayed, 200, "OK", to_tag=None,
                                   extra=[("contact", "<sip:alice@10.0.0.1:5070;moved>")]))
    dlg = only_dialog(sw)
    assert dlg.callee_cseq == 7 and dlg.callee_contact == "sip:alice@127.0.0.1:5081"  # its new Contact
    assert dlg.caller_contact == "sip:alice@10.0.0.1:5070;moved"
    sw.nodes["fs1"].take()
    sw.advance(31)
    to_caller, to_callee = _bye_pair(sw)
    assert to_caller[0].cseq == 8 and str(to_caller[0].uri) == "sip:alice@10.0.0.1:5070;moved"
    assert to_callee[0].cseq == 2


def test_unanswered_dialog_expires_after_early_timeout():
    """A call ringing past early_timeout stops being tracked and counted."""
    sw = Switch(dialog={"early_timeout": 5.0})
    call = sw.call()
    call.start()
    call.ring()
    assert sw.loads()["fs1"] == 1
    sw.advance(5.1)
    assert sw.dialogs.dialogs == {} and sw.dialogs.stats["ended_expire"] == 1
    assert sw.loads()["fs1"] == 0


def test_validate_dialog_answers_unmatched_requests_and_refuses_old_cseq():
    """validate_dialog: a BYE of no dialog gets dialog.unmatched_reply (481) and the route stops;
    a BYE with an older CSeq is invalid; a fitting one is relayed."""
    route = route_with(indialog_steps=[{"if": {"not": "validate_dialog"},
                                        "then": [{"sl_send_reply": [400, "Invalid"]}, "exit"]}])
    sw = Switch(route=route, dialog={"unmatched_reply": (481, "Call/Transaction Does Not Exist")})
    call = sw.call()
    call.start()
    call.answer()
    stray = sipmsg.in_dialog("BYE", "sip:bob@127.0.0.1:5060", to_tag="nobody", via_host="10.0.0.1")
    sw.uac.send(stray)
    assert [(m.status, m.reason) for m in sw.uac.messages()] == \
        [(481, "Call/Transaction Does Not Exist")]
    call.caller_request("INFO", 0)
    assert [m.status for m in sw.uac.messages()] == [400]
    call.caller_request("INFO", 2)
    assert sw.nodes["fs1"].expect("INFO")
    assert sw.dialogs.stats["invalid_cseq"] == 1 and sw.dialogs.stats["unmatched"] == 1


def test_dlg_status_pseudo_variable_shows_the_state_of_the_matched_dialog():
    """$DLG_status is the state number of the dialog an in-dialog request belongs to."""
    route = route_with(indialog_steps=[{"append_hf": "X-Dlg: $DLG_status $DLG_dir"}])
    sw = Switch(route=route)
    call = sw.call()
    call.start()
    call.answer()
    call.caller_request("INFO", 2)
    info = parse_message(sw.nodes["fs1"].expect("INFO"))
    assert info.get("x-dlg") == "4 DOWNSTREAM"


def test_profiles_count_calls_per_user_from_the_route():
    """set_dlg_profile [caller, $fU] counts alice's calls; get_profile_size reads the count."""
    steps = [{"create_dialog": "B"}, {"set_dlg_profile": ["caller", "$fU"]},
             {"get_profile_size": ["caller", "$fU", "$var(n)"]},
             {"append_hf": "X-Calls: $var(n)"}]
    route = copy.deepcopy(ROUTE)
    route["request_route"][1]["then"][1:2] = steps
    sw = Switch(route=route, config={"dialog": {"profiles_with_value": ["caller"]}})
    first, second = sw.call(), sw.call()
    first.start()
    first.answer()
    second.start()
    assert parse_message(second.fwd).get("x-calls") == "2"
    second.answer()
    first.hangup()
    assert sw.dialogs.profiles.size("caller", "alice") == 1
    second.hangup()
    assert sw.dialogs.profiles.size("caller") == 0


def test_keepalive_481_from_the_callee_ends_the_call_with_byes():
    """With flags P and p, OPTIONS go to both parties every keepalive_interval; a 481 from the
    callee ends the dialog with a BYE to both."""
    route = route_with(invite_steps={"create_dialog": "BPp"})
    sw = Switch(route=route, dialog={"keepalive_interval": 5.0, "keepalive_timeout": 1.0})
    sw.dialogs.start(sw.now)
    call = sw.call()
    call.start()
    call.answer()
    sw.advance(5.0)
    to_caller, to_callee = _bye_pair(sw)
    assert [m.method for m in to_caller] == ["OPTIONS"] == [m.method for m in to_callee]
    assert to_callee[0].cseq == 1 and to_callee[0].to_tag == call.to_tag
    sw.uac.send(sipmsg.response_to(to_caller[0].to_bytes(), 200, "OK", to_tag=None))
    assert only_dialog(sw).state_name == "confirmed"
    sw.nodes["fs1"].send(sipmsg.response_to(to_callee[0].to_bytes(), 481, "Gone", to_tag=None))
    to_caller, to_callee = _bye_pair(sw)
    assert [m.method for m in to_caller] == ["BYE"] == [m.method for m in to_callee]
    assert sw.dialogs.dialogs == {} and sw.dialogs.stats["keepalives_failed"] == 1


def test_unanswered_keepalive_counts_as_a_failure():
    """A keepalive with no reply within keepalive_timeout fails; at the limit the call ends."""
    route = route_with(invite_steps={"create_dialog": "P"})
    sw = Switch(route=route, dialog={"keepalive_interval": 5.0, "keepalive_timeout": 1.0,
                                     "keepalive_failed_limit": 2})
    sw.dialogs.start(sw.now)
    call = sw.call()
    call.start()
    call.answer()
    sw.advance(6.5)
    assert only_dialog(sw).ka_failures["caller"] == 1
    sw.uac.take()
    sw.advance(5.0)
    assert sw.dialogs.dialogs == {} and sw.dialogs.stats["keepalives_failed"] == 2


class _Service:
    """What register_commands needs of DialogService."""

    def __init__(self, sw):
        self.sw = sw
        self.table = sw.dialogs
        self._reactor = Clock()
        self._reactor.advance(sw.now)
        self.woken = 0

    def wake(self):
        self.woken += 1
        self.sw._dispatch(self.sw.core.layer.drain())  # as the switchboard sends the queue


def test_dlg_commands_list_end_and_count_calls():
    """dlg.list shows the call, dlg.end hangs it up with BYEs to both, dlg.stats counts."""
    sw = Switch()
    registry = CommandRegistry()
    service = _Service(sw)
    register_commands(registry, service)
    call = sw.call()
    call.start()
    call.answer()
    listed = registry.call("dlg.list").result
    assert [d["call-id"] for d in listed] == [call.call_id]
    assert listed[0]["state_name"] == "confirmed" and listed[0]["profiles"] == ["lb-pstn=1"]
    assert registry.call("dlg.stats").result["active"] == 1
    ended = registry.call("dlg.end", listed[0]["id"]).result
    assert ended == {"ended": [listed[0]["id"]]} and service.woken == 1
    to_caller, to_callee = _bye_pair(sw)
    assert [m.method for m in to_caller + to_callee] == ["BYE", "BYE"]
    stats = registry.call("dlg.stats").result
    assert stats["total"] == 0 and stats["counters"]["ended_end"] == 1
    failure = []
    registry.call("dlg.end", "no-such-call").addErrback(failure.append)
    assert failure and "no dialog" in failure[0].getErrorMessage()


def test_metrics_report_dialogs_by_state_and_ended_by_reason():
    """The metrics hook gives the dialogs gauge by state and the ended counter by reason."""
    sw = Switch()
    call = sw.call()
    call.start()
    call.answer()
    call.hangup()
    families = {name: samples for name, kind, help, samples in sw.dialogs.metrics()}
    assert ({"state": "confirmed"}, 0) in families["sipdisp_dialogs"]
    assert ({"reason": "bye"}, 1) in families["sipdisp_dialogs_ended_total"]
