"""Topology hiding (sipdisp.topoh) through an in-memory proxy with the dialog
table: a caller at 10.0.0.1 behind an upstream proxy 10.0.0.9, a callee
node at 127.0.0.1:5081; neither sees the other's Via, Record-Route, Route
or Contact, in-dialog requests go both ways, and a restart with the dialog
table's rows still routes the BYE."""

import pytest

from sipdisp.routing import RouteError, compile_routing
from sipdisp.routing.plugin import Modules
from sipdisp.shipped import shipped_functions
from sipdisp.sip import parse_message
from sipdisp.topoh.hiding import FLAGS_VAR, Hiding, dialog_id, dialog_of
from tests.support import sipmsg
from tests.support.calls import FakeStorage, Switch

ROUTE = {
    "request_route": [
        {"if": "has_totag", "then": [
            {"if": "topology_hiding_match", "then": ["t_relay", "exit"]},
            {"if": "loose_route", "then": ["t_relay", "exit"]},
            {"if": {"is_method": "ACK"}, "then": ["exit"]},
            {"sl_send_reply": [404, "Not here"]}, "exit"]},
        {"if": {"not": {"is_method": "INVITE"}},
         "then": [{"sl_send_reply": [405, "Method Not Allowed"]}, "exit"]},
        "record_route",
        {"if": {"eq": ["$rU", "hidden"]}, "then": [{"topology_hiding": "U"}]},
        {"if": {"eq": ["$rU", "plain"]}, "then": ["create_dialog"]},
        {"if": {"not": {"lb_start_or_next": [1, "pstn"]}},
         "then": [{"send_reply": [503, "No Capacity"]}, "exit"]},
        "t_relay",
    ],
}

CALLER = "10.0.0."          # the caller (10.0.0.1) and its proxy (10.0.0.9)
CALL_ID = "th-call-1"       # no address in it: the proxy does not rewrite Call-ID
UPSTREAM_RR = "<sip:10.0.0.9;lr;ftag=x>"


def headers_text(raw):
    """Every header line of a raw message (the body left out)."""
    return raw.split(b"\r\n\r\n", 1)[0].decode()


def assert_hidden_from_callee(raw):
    text = headers_text(raw)
    assert CALLER not in text, text


def assert_hidden_from_caller(raw, node_port):
    text = headers_text(raw)
    assert f":{node_port}" not in text, text


class HiddenCall:
    """One call from 10.0.0.1 through the proxy to the node the LB picks."""

    def __init__(self, sw, user="hidden", n=1):
        self.sw = sw
        self.call_id = f"{CALL_ID}-{n}"
        self.invite = sipmsg.request(
            "INVITE", f"sip:{user}@127.0.0.1:5060", via_host="10.0.0.1", via_port=5070,
            call_id=self.call_id, from_tag="caller1",
            extra=[f"Via: SIP/2.0/UDP 10.0.0.7:5066;branch=z9hG4bKlower{n}",
                   f"Record-Route: {UPSTREAM_RR}"])
        # the caller's own Contact names its user
        self.invite = self.invite.replace(b"Contact: <sip:alice@10.0.0.1:5070>",
                                          b"Contact: <sip:alice@10.0.0.1:5070;ob>")
        sw.uac.send(self.invite)
        self.node, self.fwd = sw.node_with("INVITE")
        self.peer = sw.nodes[self.node]
        self.port = self.peer.port

    def answer(self):
        contact = [("contact", f"<sip:fs@127.0.0.1:{self.port}>"),
                   ("record-route", f"<sip:127.0.0.1:{self.port};lr>")]
        self.peer.send(sipmsg.response_to(self.fwd, 180, "Ringing", to_tag="callee1",
                                          extra=contact))
        self.peer.send(sipmsg.response_to(self.fwd, 200, "OK", to_tag="callee1", extra=contact))
        got = self.sw.uac.take()
        self.ok = parse_message(got[-1])
        return got

    def from_caller(self, method, cseq):
        """An in-dialog request of the caller, sent to the Contact it got."""
        raw = sipmsg.in_dialog(method, str(self.ok.addresses("contact")[0].uri),
                               to_tag="callee1", via_host="10.0.0.1", via_port=5070,
                               call_id=self.call_id, from_tag="caller1", cseq=cseq)
        self.sw.uac.send(raw)
        return raw

    def from_callee(self, method, cseq):
        """An in-dialog request of the callee, sent to the Contact it got."""
        fwd = parse_message(self.fwd)
        raw = sipmsg.request(method, str(fwd.addresses("contact")[0].uri), via_host="127.0.0.1",
                             via_port=self.port, call_id=self.call_id, from_tag="callee1",
                             to_tag="caller1", cseq=cseq)
        raw = raw.replace(b"From: <sip:alice@example.com>", b"From: <sip:bob@example.com>")
        raw = raw.replace(b"To: <sip:bob@example.com>", b"To: <sip:alice@example.com>")
        raw = raw.replace(f"Contact: <sip:alice@127.0.0.1:{self.port}>".encode(),
                          f"Contact: <sip:fs@127.0.0.1:{self.port}>".encode())
        self.peer.send(raw)
        return raw


def switch(**kw):
    return Switch(route=ROUTE, **kw)


def test_initial_invite_reaches_the_callee_with_nothing_of_the_caller():
    """The forwarded INVITE has only the proxy's Via, no Record-Route, no
    Route, and a Contact naming the proxy with a signed dialog id and the
    caller's username (flag U)."""
    sw = switch()
    call = HiddenCall(sw)
    fwd = parse_message(call.fwd)
    assert_hidden_from_callee(call.fwd)
    assert len(fwd.values("via")) == 1 and "127.0.0.1:5060" in fwd.values("via")[0]
    assert not fwd.has("record-route") and not fwd.has("route")
    contact = fwd.addresses("contact")[0].uri
    assert (contact.user, contact.host, contact.port) == ("alice", "127.0.0.1", 5060)
    dlg = sw.dialogs.find(call.call_id)[0]
    assert contact.param("did") == dialog_id(sw.core, dlg)
    assert dlg.vars[FLAGS_VAR] == "U"
    assert sw.core.stats["topoh_hidden"] == 1


def test_replies_get_the_callers_vias_back_and_nothing_of_the_callee():
    """180 and 200 reach the caller with both of its Vias, without the
    callee's Record-Route, and with the proxy's Contact carrying the did."""
    sw = switch()
    call = HiddenCall(sw)
    got = call.answer()
    statuses = [parse_message(r).status for r in got]
    assert statuses == [100, 180, 200], statuses
    for raw in got[1:]:
        assert_hidden_from_caller(raw, call.port)
        msg = parse_message(raw)
        assert len(msg.values("via")) == 2 and "10.0.0.7:5066" in msg.values("via")[1]
        assert not msg.has("record-route")
        uri = msg.addresses("contact")[0].uri
        assert (uri.user, uri.host, uri.port) == ("fs", "127.0.0.1", 5060)
        assert uri.param("did")
    # the dialog keeps the real parties: the callee's Contact and route set
    dlg = sw.dialogs.find(call.call_id)[0]
    assert dlg.callee_contact == f"sip:fs@127.0.0.1:{call.port}"
    assert dlg.callee_routes == [f"<sip:127.0.0.1:{call.port};lr>"]
    assert dlg.caller_contact == "sip:alice@10.0.0.1:5070;ob"
    assert dlg.caller_routes == [UPSTREAM_RR]  # the INVITE's, which the 2xx did not echo


def test_ack_reinvite_and_bye_from_the_caller_reach_the_callee_hidden():
    """ACK, re-INVITE and BYE sent by the caller to the proxy's Contact go to
    the callee's Contact along its route set, with the proxy's Via only."""
    sw = switch()
    call = HiddenCall(sw)
    call.answer()
    call.from_caller("ACK", 1)
    ack = call.peer.expect("ACK")
    assert_hidden_from_callee(ack)
    msg = parse_message(ack)
    assert str(msg.uri) == f"sip:fs@127.0.0.1:{call.port}"
    assert msg.values("route") == [f"<sip:127.0.0.1:{call.port};lr>"]
    assert len(msg.values("via")) == 1
    call.from_caller("INVITE", 2)
    reinvite = call.peer.expect("INVITE")
    assert_hidden_from_callee(reinvite)
    call.peer.send(sipmsg.response_to(reinvite, 200, "OK", to_tag="callee1",
                                      extra=[("contact", f"<sip:fs@127.0.0.1:{call.port}>")]))
    answers = [r for r in sw.uac.take() if parse_message(r).status == 200]
    assert len(answers) == 1
    assert_hidden_from_caller(answers[0], call.port)
    assert parse_message(answers[0]).values("via")[0].startswith("SIP/2.0/UDP 10.0.0.1:5070")
    call.from_caller("BYE", 3)
    bye = call.peer.expect("BYE")
    assert_hidden_from_callee(bye)
    call.peer.send(sipmsg.response_to(bye, 200, "OK", to_tag=None))
    done = sw.uac.expect(200)
    assert_hidden_from_caller(done, call.port)
    assert sw.dialogs.find(call.call_id) == []


def test_reinvite_and_bye_from_the_callee_reach_the_caller_hidden():
    """The callee's re-INVITE and BYE go to the caller's real Contact through
    the caller's upstream proxy (its Record-Route), with the proxy's Via only
    and the proxy's Contact."""
    sw = switch()
    call = HiddenCall(sw)
    call.answer()
    call.from_callee("INVITE", 1)
    seen = sw.stray[-1][0]  # to the upstream proxy 10.0.0.9, no peer of the link
    msg = parse_message(seen)
    assert (sw.stray[-1][1].host, sw.stray[-1][1].port) == ("10.0.0.9", 5060)
    assert str(msg.uri) == "sip:alice@10.0.0.1:5070;ob"
    assert msg.values("route") == [UPSTREAM_RR]
    assert len(msg.values("via")) == 1
    assert_hidden_from_caller(seen, call.port)
    assert msg.addresses("contact")[0].uri.param("did")
    # the caller's answer comes back (via its proxy) with the proxy's Via on top
    answer = sipmsg.response_to(seen, 200, "OK", to_tag="caller1",
                                extra=[("contact", "<sip:alice@10.0.0.1:5070>")])
    sw.uac.send(answer)
    got = call.peer.take()
    assert [parse_message(r).status for r in got] == [100, 200]
    back = got[-1]
    for raw in got:
        assert_hidden_from_callee(raw)
    assert parse_message(back).values("via")[0].startswith(f"SIP/2.0/UDP 127.0.0.1:{call.port}")
    call.from_callee("BYE", 2)
    bye = parse_message(sw.stray[-1][0])
    assert bye.method == "BYE" and len(bye.values("via")) == 1
    assert_hidden_from_caller(sw.stray[-1][0], call.port)


def test_forged_or_foreign_dialog_ids_match_nothing():
    """A did with a wrong signature, another call's Call-ID or an unknown
    dialog is refused by topology_hiding_match (the route's 404 answers)."""
    sw = switch()
    call = HiddenCall(sw)
    call.answer()
    good = str(call.ok.addresses("contact")[0].uri)
    did = call.ok.addresses("contact")[0].uri.param("did")
    h_entry, h_id, sig = did.split(".")
    for bad in (f"{h_entry}.{h_id}.{'0' * len(sig)}", f"{h_entry}.{int(h_id) + 1}.{sig}", "x"):
        raw = sipmsg.in_dialog("BYE", good.replace(did, bad), to_tag="callee1",
                               via_host="10.0.0.1", via_port=5070, call_id=call.call_id,
                               from_tag="caller1", cseq=5)
        sw.uac.send(raw)
        assert sw.uac.expect(404)
    other = sipmsg.in_dialog("BYE", good, to_tag="callee1", via_host="10.0.0.1",
                             via_port=5070, call_id="another-call", from_tag="caller1", cseq=5)
    sw.uac.send(other)
    assert sw.uac.expect(404)
    call.peer.expect_nothing()
    assert sw.core.stats["topoh_unmatched"] == 4
    assert dialog_of(sw.core, sw.dialogs.dialogs, did, call.call_id) is not None


def test_a_call_without_topology_hiding_is_untouched():
    """A plain call keeps every Via, Record-Route and Contact as before."""
    sw = switch()
    call = HiddenCall(sw, user="plain")
    fwd = parse_message(call.fwd)
    assert len(fwd.values("via")) == 3
    assert len(fwd.values("record-route")) == 2  # ours and the upstream proxy's
    assert "10.0.0.1:5070" in fwd.get("contact")
    got = call.answer()
    ok = parse_message(got[-1])
    assert f"127.0.0.1:{call.port}" in ok.get("contact")
    assert len(ok.values("record-route")) == 3
    assert sw.core.stats["topoh_hidden"] == 0


def test_the_bye_still_routes_after_a_restart_from_the_dialog_rows():
    """With db_mode 1 the hidden call's dialog and its variables are in the
    table; a new proxy (same node secret) restored from them routes the
    caller's BYE to the callee, hidden."""
    storage = FakeStorage()
    sw = switch(dialog={"db_mode": 1}, storage=storage)
    call = HiddenCall(sw)
    call.answer()
    call.from_caller("ACK", 1)
    names = {row["dialog_key"] for row in storage.tables["dialog_vars"]}
    assert FLAGS_VAR in names
    assert [row["caller_route_set"] for row in storage.tables["dialog"]] == [UPSTREAM_RR]
    again = switch(dialog={"db_mode": 1}, storage=storage)
    assert again.dialogs.restore(storage.tables["dialog"], storage.tables["dialog_vars"],
                                 again.now) == 1
    call.sw = again
    call.peer = again.nodes[call.node]
    call.from_caller("BYE", 2)
    bye = call.peer.expect("BYE")
    assert_hidden_from_callee(bye)
    assert str(parse_message(bye).uri) == f"sip:fs@127.0.0.1:{call.port}"
    call.peer.send(sipmsg.response_to(bye, 200, "OK", to_tag=None))
    assert again.uac.expect(200)
    assert again.dialogs.find(call.call_id) == []


def test_after_a_restart_the_callees_bye_takes_the_callers_route_set():
    """Restored from the rows, a hidden call routes the callee's BYE to the
    caller's Contact through the caller's upstream proxy."""
    storage = FakeStorage()
    sw = switch(dialog={"db_mode": 1}, storage=storage)
    call = HiddenCall(sw)
    call.answer()
    again = switch(dialog={"db_mode": 1}, storage=storage)
    again.dialogs.restore(storage.tables["dialog"], storage.tables["dialog_vars"], again.now)
    call.sw, call.peer = again, again.nodes[call.node]
    call.from_callee("BYE", 1)
    data, target = again.stray[-1]
    bye = parse_message(data)
    assert (bye.method, target.host, target.port) == ("BYE", "10.0.0.9", 5060)
    assert bye.values("route") == [UPSTREAM_RR] and len(bye.values("via")) == 1
    assert_hidden_from_caller(data, call.port)


def test_the_byes_the_dialog_module_sends_follow_the_hidden_route_sets():
    """dlg.end on a hidden call: the caller's BYE goes through its upstream
    proxy along the INVITE's Record-Route, the callee's straight to it, and
    neither carries the other side's addresses."""
    sw = switch()
    call = HiddenCall(sw)
    call.answer()
    dlg = sw.dialogs.find(call.call_id)[0]
    sw.dialogs.end(dlg, sw.now)
    sw._dispatch(sw.core.layer.drain())
    to_callee = call.peer.expect("BYE")
    assert_hidden_from_callee(to_callee)
    data, target = sw.stray[-1]
    assert (target.host, target.port) == ("10.0.0.9", 5060)
    assert parse_message(data).values("route") == [UPSTREAM_RR]
    assert_hidden_from_caller(data, call.port)


def test_unknown_flags_are_refused_when_the_route_compiles():
    """topology_hiding: X is a configuration error naming the flag."""
    with pytest.raises(RouteError, match="unknown topology_hiding flag"):
        compile_routing({"request_route": [{"topology_hiding": "X"}]},
                        _env())


def _env():
    from sipdisp.routing import Env
    return Env(shipped_functions(), Modules(), None, None)


def test_hiding_reply_builds_a_copy_and_leaves_the_received_reply_alone():
    """Hiding.reply returns a new message; the received one (which the
    dialog module and accounting read) keeps its Vias, Record-Route, Contact."""
    from sipdisp.proxy import Listener
    listener = Listener("udp0", "udp", "192.0.2.1", 5060)
    hiding = Hiding(["SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa"], listener, "1.2.abc",
                    "did", False)
    raw = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKsd\r\n"
           b"Record-Route: <sip:172.16.0.5;lr>\r\nFrom: <sip:a@x>;tag=1\r\n"
           b"To: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
           b"Contact: <sip:fs@172.16.0.6:5080>\r\nContent-Length: 0\r\n\r\n")
    received = parse_message(raw)
    out = hiding.reply(received)
    assert out.values("via") == ["SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa"]
    assert not out.has("record-route")
    assert out.get("contact") == "<sip:192.0.2.1:5060;did=1.2.abc>"
    assert "172.16.0.5" in received.get("record-route")
    assert received.get("contact") == "<sip:fs@172.16.0.6:5080>"


def test_a_cancelled_hidden_call_shows_the_callee_nothing_of_the_caller():
    """The CANCEL the proxy sends downstream is built from the hidden copy
    (the proxy's Via only); the 487 reaches the caller with its own Vias."""
    sw = switch()
    call = HiddenCall(sw)
    call.peer.send(sipmsg.response_to(call.fwd, 180, "Ringing", to_tag="callee1"))
    sw.uac.take()
    cancel = call.invite.replace(b"INVITE sip:", b"CANCEL sip:", 1).replace(
        b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL")
    sw.uac.send(cancel)
    fwd_cancel = call.peer.expect("CANCEL")
    assert_hidden_from_callee(fwd_cancel)
    call.peer.send(sipmsg.response_to(fwd_cancel, 200, "OK", to_tag=None))
    call.peer.send(sipmsg.response_to(call.fwd, 487, "Request Terminated", to_tag="callee1"))
    got = [parse_message(r) for r in sw.uac.take()]
    final = [m for m in got if m.status == 487]
    assert len(final) == 1 and len(final[0].values("via")) == 2
    assert sw.dialogs.find(call.call_id) == []


def test_a_2xx_retransmitted_after_the_transaction_let_go_is_still_hidden():
    """The callee repeats its 200 (its ACK was late): the copy relayed to the
    caller has the caller's Vias and the proxy's Contact, like the first."""
    sw = switch()
    call = HiddenCall(sw)
    call.answer()
    call.peer.send(sipmsg.response_to(call.fwd, 200, "OK", to_tag="callee1",
                                      extra=[("contact", f"<sip:fs@127.0.0.1:{call.port}>")]))
    again = sw.uac.expect(200)
    assert_hidden_from_caller(again, call.port)
    assert len(parse_message(again).values("via")) == 2


def test_record_route_before_topology_hiding_adds_nothing():
    """record_route called in the route before topology_hiding leaves no
    Record-Route in the forwarded INVITE (the route above calls it first)."""
    sw = switch()
    call = HiddenCall(sw)
    assert b"Record-Route" not in call.fwd and b"sdsig" not in call.fwd


def test_requests_to_a_stream_caller_go_over_its_connection_while_it_lasts():
    """A caller on TCP (connection 7): the callee's BYE goes back over that
    connection; once it is gone, to the caller's Contact."""
    from sipdisp.proxy import Listener
    from sipdisp.topoh.hiding import match
    sw = switch()
    tcp = Listener("tcp0", "tcp", "127.0.0.1", 5060)
    sw.core.set_listeners([sw.listener, tcp])
    caller = sw.add_peer("tcpuac", "tcp", "10.0.0.1", 40001, tcp, conn=7)

    class Conn:
        proto, peer_host, peer_port, listener = "tcp", "10.0.0.1", 40001, tcp
    sw.core.flows.connections[7] = Conn()
    invite = sipmsg.request("INVITE", "sip:hidden@127.0.0.1:5060;transport=tcp",
                            via_host="10.0.0.1", via_port=40001, proto="TCP",
                            call_id="th-tcp", from_tag="caller1")
    invite = invite.replace(b"Contact: <sip:alice@10.0.0.1:40001>",
                            b"Contact: <sip:alice@10.0.0.1:5099;transport=tcp>")
    caller.send(invite)
    node, fwd = sw.node_with("INVITE")
    peer = sw.nodes[node]
    assert_hidden_from_callee(fwd)
    peer.send(sipmsg.response_to(fwd, 200, "OK", to_tag="callee1",
                                 extra=[("contact", f"<sip:fs@127.0.0.1:{peer.port}>")]))
    ok = parse_message(caller.take()[-1])
    contact = ok.addresses("contact")[0].uri
    assert contact.param("transport") == "tcp"  # the listener the INVITE came in on
    bye = sipmsg.request("BYE", str(parse_message(fwd).addresses("contact")[0].uri),
                         via_host="127.0.0.1", via_port=peer.port, call_id="th-tcp",
                         from_tag="callee1", to_tag="caller1", cseq=1)
    peer.send(bye)
    got = caller.take()
    assert len(got) == 1 and parse_message(got[0]).method == "BYE"
    assert sw.sent_by_core[-1][1].conn == 7
    # the connection is gone: the same request is aimed at the caller's Contact
    del sw.core.flows.connections[7]
    from sipdisp.proxy.context import RequestContext
    ctx = RequestContext(sw.core, parse_message(bye), peer.source, None, sw.now)
    assert match(ctx, sw.dialogs)
    assert ctx.flow is None and ctx.dst_uri is None
    assert str(ctx.request.uri) == "sip:alice@10.0.0.1:5099;transport=tcp"


def test_a_route_set_too_long_to_keep_is_not_hidden():
    """A caller's route set over the 512 characters a dialog variable keeps:
    topology_hiding is false, counted, and the call goes on unhidden."""
    sw = switch()
    long_rr = [f"Record-Route: <sip:10.0.0.{i};lr;pad={'x' * 60}>" for i in range(10)]
    invite = sipmsg.request("INVITE", "sip:hidden@127.0.0.1:5060", via_host="10.0.0.1",
                            via_port=5070, call_id="th-long", from_tag="caller1",
                            extra=long_rr)
    sw.uac.send(invite)
    _, fwd = sw.node_with("INVITE")
    assert b"10.0.0.1:5070" in fwd
    assert sw.core.stats["topoh_route_set_too_long"] == 1
    assert sw.core.stats["topoh_hidden"] == 0


def test_did_param_names_the_contact_parameter_and_is_checked():
    """topology_hiding.did_param renames the Contact's parameter; a name the
    URI grammar or sipdisp itself uses is a configuration error."""
    from sipdisp.config.model import ConfigError
    from sipdisp.schema import config_from_dict
    with pytest.raises(ConfigError, match="topology_hiding.did_param"):
        config_from_dict({"topology_hiding": {"did_param": "transport"}})
    with pytest.raises(ConfigError, match="topology_hiding.did_param"):
        config_from_dict({"topology_hiding": {"did_param": "a b"}})
    sw = switch(config={"topology_hiding": {"did_param": "thinfo"}})
    call = HiddenCall(sw)
    contact = parse_message(call.fwd).addresses("contact")[0].uri
    assert contact.param("thinfo") and contact.param("did") is None
    call.answer()
    call.from_caller("BYE", 2)
    assert_hidden_from_callee(call.peer.expect("BYE"))


def test_prack_and_update_of_the_early_dialog_are_hidden_both_ways():
    """Before the 2xx: the caller's PRACK to the Contact of a reliable 183
    reaches the callee's Contact, the callee's UPDATE reaches the caller's,
    both hidden; the 2xx then confirms the call and the early state goes."""
    from sipdisp.topoh.hiding import EARLY_VAR
    sw = switch()
    call = HiddenCall(sw)
    contact = [("contact", f"<sip:fs-early@127.0.0.1:{call.port}>"),
               ("require", "100rel"), ("rseq", "1")]
    call.peer.send(sipmsg.response_to(call.fwd, 183, "Session Progress", to_tag="callee1",
                                      extra=contact))
    early = parse_message(sw.uac.take()[-1])
    assert early.status == 183
    assert_hidden_from_caller(early.to_bytes(), call.port)
    prack = sipmsg.in_dialog("PRACK", str(early.addresses("contact")[0].uri), to_tag="callee1",
                             via_host="10.0.0.1", via_port=5070, call_id=call.call_id,
                             from_tag="caller1", cseq=2, extra=["RAck: 1 1 INVITE"])
    sw.uac.send(prack)
    fwd_prack = call.peer.expect("PRACK")
    assert_hidden_from_callee(fwd_prack)
    assert str(parse_message(fwd_prack).uri) == f"sip:fs-early@127.0.0.1:{call.port}"
    call.peer.send(sipmsg.response_to(fwd_prack, 200, "OK", to_tag=None))
    assert parse_message(sw.uac.expect(200)).cseq_method == "PRACK"
    call.from_callee("UPDATE", 1)
    data, target = sw.stray[-1]
    update = parse_message(data)
    assert update.method == "UPDATE" and (target.host, target.port) == ("10.0.0.9", 5060)
    assert str(update.uri) == "sip:alice@10.0.0.1:5070;ob"
    assert_hidden_from_caller(data, call.port)
    call.answer()
    dlg = sw.dialogs.find(call.call_id)[0]
    assert EARLY_VAR not in dlg.vars and dlg.to_tag == "callee1"
    call.from_caller("BYE", 3)
    assert_hidden_from_callee(call.peer.expect("BYE"))
