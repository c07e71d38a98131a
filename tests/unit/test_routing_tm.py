"""Transaction routes and what they carry: reply routes (t_on_reply), branch
routes (t_on_branch), branch flags stored with registrations, $avp across
routes, Record-Route parameters (add_rr_param, check_route_param) and the
seed's pseudo-variables, through the in-memory UAC <-> proxy <-> UAS link."""

import pytest
import yaml

from sipdisp.config import ConfigError
from sipdisp.proxy.context import RequestContext
from sipdisp.proxy import ProxyCore
from sipdisp.proxy.target import Target
from sipdisp.routing import build_routing, compile_routing, routing_spec
from sipdisp.routing.compiler import Env
from sipdisp.routing.pv import compile_pv
from sipdisp.schema import config_from_dict
from sipdisp.shipped import shipped_functions
from sipdisp.sip import parse_message
from tests.support import sipmsg
from tests.support.harness import Link
from tests.support.registrar import Stack, invite, requests, responses
from tests.support.shipped import modules_of

BASE = {"console": {"enabled": False}, "http": {"enabled": False}}

#: a route in the OpenSIPS seed's shape: relay with a reply route, a
#: failure route and a Record-Route parameter, to the UAS at 127.0.0.1:5080
SEEDLIKE = yaml.safe_load("""
request_route:
  - if: has_totag
    then:
      - if: loose_route
        then:
          - if: {check_route_param: "nat=yes"}
            then: [{append_hf: "X-Nat: yes"}]
          - t_relay
          - exit
      - sl_send_reply: [404, "Not here"]
      - exit
  - record_route
  - if: {nat_uac_test: 1}
    then: [{add_rr_param: ";nat=yes"}]
  - set: {"$avp(who)": "first", "$du": "sip:127.0.0.1:5080"}
  - set: {"$avp(who)": "second"}
  - t_on_reply: handle_nat
  - t_on_failure: missed_call
  - t_relay
onreply_routes:
  handle_nat:
    - if: {nat_uac_test: 1}
      then:
        - fix_nated_contact
    - append_hf: "X-Seen: $rs $rr $rm $avp(who) $ct.fields(uri)"
    - if: {eq: ["$rs", 183]}
      then: [drop]
    - if: {eq: ["$rs", 500]}
      then: [drop]
failure_routes:
  missed_call:
    - set: {"$avp(who)": null}
    - t_reply: [486, "Busy for $avp(who)"]
""")


def routing_config(spec):
    """A configuration whose routing is ``spec``."""
    return config_from_dict(dict(BASE, routing=spec))


def tm_link(spec=SEEDLIKE):
    """A Link (UAC 10.0.0.1:5070, UAS 127.0.0.1:5080) running ``spec``."""
    link = Link.udp(route=lambda ctx: None)
    cfg = routing_config(spec)
    link.core.route = build_routing(cfg, shipped_functions(), modules_of(link.core),
                                    link.core).entry
    return link


def private_invite(**kwargs):
    """An INVITE from a UAC at 10.0.0.1, its Contact a private address."""
    return sipmsg.request("INVITE", "sip:bob@127.0.0.1:5060", via_host="10.0.0.1", **kwargs)


def answer(link, fwd, status, reason, contact="<sip:bob@192.168.1.20:5080;ob>"):
    """The UAS answers the forwarded request with a private Contact."""
    link.uas.send(sipmsg.response_to(fwd, status, reason, extra=[("Contact", contact)]))


def test_reply_route_sees_180_and_200_and_fixes_their_contact():
    """The reply route runs for the 180 and the 200, reads $rs/$rr/$rm/$avp/$ct and fixes Contact."""
    link = tm_link()
    link.uac.send(private_invite())
    link.uac.expect(100)
    fwd = link.uas.expect("INVITE")
    answer(link, fwd, 180, "Ringing")
    ringing = parse_message(link.uac.expect(180))
    answer(link, fwd, 200, "OK")
    ok = parse_message(link.uac.expect(200))
    # the UAS's private Contact is replaced by where the reply came from
    assert ringing.get("contact") == "<sip:bob@127.0.0.1:5080;ob>"
    assert ok.get("contact") == "<sip:bob@127.0.0.1:5080;ob>"
    # $ct.fields(uri) reads the reply's Contact, as fix_nated_contact left it
    assert ringing.get("x-seen") == "180 Ringing INVITE second sip:bob@127.0.0.1:5080;ob"
    assert ok.get("x-seen").startswith("200 OK INVITE second sip:bob@")


def test_reply_route_drops_a_183_but_not_a_final_reply():
    """drop in a reply route drops a provisional reply; a final reply still goes upstream."""
    link = tm_link()
    link.uac.send(private_invite())
    link.uac.expect(100)
    fwd = link.uas.expect("INVITE")
    answer(link, fwd, 183, "Session Progress")
    link.uac.expect_nothing()
    assert link.core.stats["replies_dropped"] == 1
    answer(link, fwd, 180, "Ringing")
    link.uac.expect(180)
    answer(link, fwd, 500, "Server Error")
    link.uas.take()  # the ACK of the 500
    # the 500 could not be dropped: the failure route ran and answered
    busy = parse_message(link.uac.expect(486))
    assert link.core.stats["reply_drop_ignored"] == 1
    # $avp is a list: $null removed "second", the failure route saw "first"
    assert busy.reason == "Busy for first"


def test_transaction_without_reply_route_relays_replies_untouched():
    """Without t_on_reply the reply's private Contact is relayed as it is."""
    spec = dict(SEEDLIKE, request_route=[{"set": {"$du": "sip:127.0.0.1:5080"}}, "t_relay"])
    link = tm_link(spec)
    link.uac.send(private_invite())
    link.uac.expect(100)
    fwd = link.uas.expect("INVITE")
    answer(link, fwd, 180, "Ringing")
    ringing = parse_message(link.uac.expect(180))
    assert ringing.get("contact") == "<sip:bob@192.168.1.20:5080;ob>"
    assert ringing.get("x-seen") is None


def test_rr_param_is_signed_and_checked_on_the_in_dialog_request():
    """add_rr_param puts ;nat=yes in the signed Record-Route and check_route_param finds it."""
    link = tm_link()
    up = link.uac.send(private_invite())
    link.uac.expect(100)
    fwd = parse_message(link.uas.expect("INVITE"))
    (rr,) = fwd.values("record-route")
    assert ";nat=yes;sdsig=" in rr
    call_id = parse_message(up).call_id
    bye = sipmsg.in_dialog("BYE", "sip:bob@127.0.0.1:5080", [rr], call_id=call_id, cseq=2)
    link.uac.send(bye)
    out = parse_message(link.uas.expect("BYE"))
    assert out.get("x-nat") == "yes"
    # the parameter is covered by the signature: changed, the route set is refused
    forged = rr.replace("nat=yes", "nat=no")
    link.uac.send(sipmsg.in_dialog("BYE", "sip:bob@127.0.0.1:5080", [forged],
                                   call_id=call_id, cseq=3))
    assert parse_message(link.uac.expect(404)).reason == "Not here"
    assert link.core.stats["route_unsigned"] == 1


def test_record_route_without_params_signs_as_before():
    """An entry without add_rr_param parameters carries the signature of call and tag alone."""
    link = tm_link()
    up = link.uac.send(sipmsg.request("INVITE", "sip:bob@127.0.0.1:5060"))
    link.uac.expect(100)
    fwd = parse_message(link.uas.expect("INVITE"))
    sig = link.core.rr_signature(parse_message(up).call_id, "ftag")
    assert fwd.values("record-route") == [f"<sip:127.0.0.1:5060;lr;sdsig={sig}>"]


# -- branch routes, branch flags and lookup ----------------------------------------------

FORKING = yaml.safe_load("""
request_route:
  - if: {is_method: REGISTER}
    then:
      - if: {eq: ["$sp", 5071]}
        then: [{setbflag: 5}]
      - save: location
      - exit
  - if: {not: {lookup: location}}
    then: [{sl_send_reply: [404, "Not Found"]}, exit]
  - t_on_branch: per_branch
  - if: {not: t_relay}
    then: [{sl_send_reply: [500, "All branches dropped"]}]
  - exit
branch_routes:
  per_branch:
    - if: {isbflagset: 5}
      then: [drop]
    - append_hf: "X-Branch: $ru"
    - remove_hf: X-Drop-Me
""")


def forking_stack(spec=FORKING):
    """A registrar stack running ``spec``."""
    return Stack({"routing": spec})


def test_branch_flag_is_stored_with_the_contact_and_restored_by_lookup():
    """setbflag before save lands in the contact's cflags; lookup gives it back to the branch."""
    s = forking_stack()
    assert s.ua("alice", port=5071).register().status == 200
    (b,) = s.location.bindings("alice", s.now)
    assert b.cflags & (1 << 5)
    ctx = RequestContext(s.core, parse_message(invite("sip:alice@example.com")),
                         Target("udp", "127.0.0.1", 5080), None, s.now)
    assert s.registrar.lookup(ctx)
    assert ctx.bflags & (1 << 5)


def test_branch_route_runs_per_forked_branch_and_drops_one():
    """Two contacts: the branch route drops the flagged one and adds a header to the other."""
    s = forking_stack()
    s.ua("alice", port=5071).register()
    s.ua("alice", host="10.0.0.2", port=5072).register()
    out = s.send(invite("sip:alice@example.com", extra=["X-Drop-Me: 1"]),
                 source=("127.0.0.1", 5080))
    sent = requests(out, "INVITE")
    assert [(t.host, t.port) for _, t in sent] == [("10.0.0.2", 5072)]
    (fwd, _) = sent[0]
    assert fwd.get("x-branch") == "sip:alice@10.0.0.2:5072"
    assert fwd.get("x-drop-me") is None
    assert s.core.stats["branches_dropped"] == 1


def test_every_branch_dropped_fails_t_relay():
    """When the branch route drops every branch, t_relay is false and the route answers."""
    s = forking_stack()
    s.ua("alice", port=5071).register()
    out = s.send(invite("sip:alice@example.com"), source=("127.0.0.1", 5080))
    assert not requests(out, "INVITE")
    assert [r.status for r in responses(out) if r.status >= 200] == [500]


def test_branch_route_changes_stay_on_their_branch():
    """A $du and a header set in the branch route go out on that branch only."""
    spec = yaml.safe_load("""
request_route:
  - if: {is_method: REGISTER}
    then: [{save: location}, exit]
  - if: {not: {lookup: location}}
    then: [{sl_send_reply: [404, "Not Found"]}, exit]
  - t_on_branch: steer
  - t_relay
  - exit
branch_routes:
  steer:
    - if: {eq: ["$rd", "10.0.0.2"]}
      then:
        - set: {"$du": "sip:127.0.0.1:5099"}
        - append_hf: "X-Steered: yes"
""")
    s = forking_stack(spec)
    s.ua("alice", port=5071).register()
    s.ua("alice", host="10.0.0.2", port=5072).register()
    out = s.send(invite("sip:alice@example.com"), source=("127.0.0.1", 5080))
    sent = {(t.host, t.port): m for m, t in requests(out, "INVITE")}
    assert set(sent) == {("10.0.0.1", 5071), ("127.0.0.1", 5099)}
    assert sent[("127.0.0.1", 5099)].get("x-steered") == "yes"
    assert sent[("10.0.0.1", 5071)].get("x-steered") is None


# -- compile-time checks ------------------------------------------------------------------

@pytest.mark.parametrize("routing, message", [
    ({"request_route": [{"t_on_reply": "nope"}]},
     "routing.request_route[0].t_on_reply: no reply route named 'nope' (defined: none)"),
    ({"request_route": [{"t_on_branch": "nope"}]},
     "routing.request_route[0].t_on_branch: no branch route named 'nope' (defined: none)"),
    ({"request_route": ["t_relay"], "onreply_routes": {"r": ["t_relay"]}},
     "routing.onreply_routes.r[0].t_relay: t_relay cannot be used in a reply route "
     "(it answers, relays or looks up the request)"),
    ({"request_route": ["t_relay"], "branch_routes": {"b": [{"sl_send_reply": [500, "x"]}]}},
     "routing.branch_routes.b[0].sl_send_reply: sl_send_reply cannot be used in a branch "
     "route (it answers, relays or looks up the request)"),
    ({"request_route": [{"setbflag": "NOPE"}]},
     "routing.request_route[0].setbflag: unknown branch flag 'NOPE' (routing.branch_flags "
     "names: FLB_NATB, FLB_NATSIPPING, NAT, SIP_PING_FLAG)"),
    ({"request_route": [{"setbflag": 32}]},
     "routing.request_route[0].setbflag: branch flag 32 is out of range 0-31"),
    ({"request_route": [{"add_rr_param": ";lr=1"}]},
     "routing.request_route[0].add_rr_param: add_rr_param: lr is this proxy's own "
     "Record-Route parameter"),
    ({"request_route": [{"add_rr_param": "nat yes"}]},
     "routing.request_route[0].add_rr_param: add_rr_param needs \";name=value\", "
     "got ';nat yes'"),
    ({"request_route": [{"xlog": "$ct.fields(color)"}]},
     "routing.request_route[0].xlog: $ct.fields(color): known fields are uri, name, "
     "expires, q, params"),
    ({"branch_flags": {"NAT": 40}}, "routing.branch_flags.NAT: expected a bit number 0-31, got 40"),
])
def test_mistakes_are_one_line_errors_naming_the_key(routing, message):
    """Each mistake in transaction routes, flags or parameters is one line naming its key."""
    with pytest.raises(ConfigError) as info:
        cfg = routing_config(routing)
        compile_routing(routing_spec(cfg), Env(shipped_functions(), config=cfg))
    assert str(info.value) == message


def test_configured_branch_flag_names_add_to_the_seed_names():
    """routing.branch_flags names a bit; the seeds' NAT names keep theirs."""
    cfg = routing_config({"branch_flags": {"VIDEO": 9},
                          "request_route": [{"setbflag": "VIDEO"}, {"setbflag": "NAT"}]})
    routing = compile_routing(routing_spec(cfg), Env(shipped_functions(), config=cfg))
    ctx = RequestContext(ProxyCore([], None), parse_message(invite("sip:a@example.com")),
                         Target("udp", "127.0.0.1", 5080), None, 0.0)
    routing.request_route(ctx)
    assert ctx.bflags == (1 << 9) | (1 << 6)


# -- pseudo-variables ---------------------------------------------------------------------

def pv(name, raw, proto="udp"):
    """The value of pseudo-variable ``name`` for the request ``raw``."""
    ctx = RequestContext(ProxyCore([], None), parse_message(raw),
                         Target(proto, "127.0.0.1", 5080), None, 0.0)
    return compile_pv(name, "t", shipped_functions().variables)(ctx)


def test_auth_username_domain_and_realm_from_the_credentials():
    """$au, $aU, $ad and $ar read the Authorization (REGISTER) or Proxy-Authorization."""
    raw = invite("sip:a@example.com", method="REGISTER", extra=[
        'Authorization: Digest username="alice@example.com", realm="sip.example.com", '
        'nonce="n", uri="sip:example.com", response="r"'])
    assert (pv("$au", raw), pv("$aU", raw), pv("$ad", raw), pv("$ar", raw)) == \
        ("alice@example.com", "alice", "example.com", "sip.example.com")
    plain = invite("sip:a@example.com", extra=[
        "Proxy-Authorization: Digest realm=r, username=bob, nonce=n"])
    assert (pv("$au", plain), pv("$aU", plain), pv("$ad", plain)) == ("bob", "bob", "r")
    assert pv("$au", invite("sip:a@example.com")) is None


def test_contact_fields_fd_and_proto():
    """$ct.fields(uri|expires|q|name), $ct, $fd, $proto and $pr read the request."""
    raw = invite("sip:a@example.com").replace(
        b"Contact: <sip:bob@127.0.0.1:5080>",
        b'Contact: "Bob" <sip:bob@10.1.1.1:5090;transport=tcp>;expires=60;q=0.5, <sip:x@y>')
    assert pv("$ct.fields(uri)", raw) == "sip:bob@10.1.1.1:5090;transport=tcp"
    assert (pv("$ct.fields(expires)", raw), pv("$ct.fields(q)", raw),
            pv("$ct.fields(name)", raw)) == ("60", "0.5", "Bob")
    assert pv("$ct", raw).endswith("<sip:x@y>")
    assert pv("$fd", raw) == "fs.example.net"
    assert (pv("$proto", raw, "tcp"), pv("$pr", raw, "ws")) == ("tcp", "ws")


def test_avp_is_a_list_newest_first_and_null_pops():
    """$avp assignments stack; reading gives the newest; $null removes it."""
    cfg = routing_config({"request_route": [
        {"set": {"$avp(x)": 1}}, {"set": {"$avp(x)": 2}}, {"set": {"$var(seen)": "$avp(x)"}},
        {"set": {"$avp(x)": None}}, {"set": {"$var(after)": "$avp(x)"}},
        {"set": {"$avp(x)": None}}, {"set": {"$var(empty)": "$avp(x)"}}]})
    routing = compile_routing(routing_spec(cfg), Env(shipped_functions(), config=cfg))
    ctx = RequestContext(ProxyCore([], None), parse_message(invite("sip:a@example.com")),
                         Target("udp", "127.0.0.1", 5080), None, 0.0)
    routing.request_route(ctx)
    assert (ctx.vars["seen"], ctx.vars["after"], ctx.vars["empty"]) == (2, 1, None)


def test_named_route_called_from_a_reply_route_reads_the_reply():
    """A named route called from a reply route is compiled for it: $rm and drop act on the reply."""
    spec = yaml.safe_load("""
request_route:
  - set: {"$du": "sip:127.0.0.1:5080"}
  - t_on_reply: r
  - t_relay
onreply_routes:
  r: [{route: tag}]
routes:
  tag:
    - append_hf: "X-Method: $rm $ru"
    - if: {is_method: INVITE}
      then:
        - if: {eq: ["$rs", 181]}
          then: [drop]
""")
    link = tm_link(spec)
    link.uac.send(private_invite())
    link.uac.expect(100)
    fwd = link.uas.expect("INVITE")
    answer(link, fwd, 181, "Call Is Being Forwarded")
    link.uac.expect_nothing()
    answer(link, fwd, 180, "Ringing")
    assert parse_message(link.uac.expect(180)).get("x-method") == "INVITE <null>"


def test_python_route_arms_a_reply_route_function():
    """ctx.t_on_reply(function) calls it with a ReplyContext whose message is the reply."""
    seen = []

    def on_reply(rctx):
        seen.append((rctx.request.status, rctx.source.port, rctx.vars.get("x")))
        rctx.dropped = rctx.request.status == 183

    def route(ctx):
        ctx.vars["x"] = "kept"
        ctx.set_dst("sip:127.0.0.1:5080")
        ctx.t_on_reply(on_reply)
        ctx.t_relay()

    link = Link.udp(route=route)
    link.uac.send(private_invite())
    link.uac.expect(100)
    fwd = link.uas.expect("INVITE")
    answer(link, fwd, 183, "Session Progress")
    link.uac.expect_nothing()
    answer(link, fwd, 200, "OK")
    link.uac.expect(200)
    assert seen == [(183, 5080, "kept"), (200, 5080, "kept")]
