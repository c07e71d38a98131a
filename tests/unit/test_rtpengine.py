"""rtpengine control, sans-IO: the bencoding, Kamailio's flags strings, the
ng client (retransmissions, failover, pings, the call's instance), the SDP
in bodies and fix_nated_sdp, and through a proxy core the offer in the
request route, the answer in a held reply and the deletes that end the
session with the call. rtpengine's side is bytes fed to the client."""

import pytest

from sipdisp.proxy.interface import Timer
from sipdisp.rtpengine.bencode import BencodeError, decode, encode
from sipdisp.rtpengine.engine import Rtpengine, build_command
from sipdisp.rtpengine.flags import FlagError, parse_flags, rtpproxy_flags
from sipdisp.rtpengine.ng import NgClient, NgError, parse_sockets
from sipdisp.rtpengine import sdp as sdplib
from sipdisp.proxy.suspend import Suspender
from sipdisp.routing import build_routing
from sipdisp.schema import config_from_dict
from sipdisp.shipped import shipped_functions
from sipdisp.sip import parse_message
from sipdisp.transaction.timers import TimerHeap
from tests.support import sipmsg
from tests.support.harness import Link
from tests.support.shipped import modules_of

OFFER = (b"v=0\r\no=alice 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\n"
         b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\n")
RELAYED = (b"v=0\r\no=alice 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\n"
           b"t=0 0\r\nm=audio 30000 RTP/AVP 0\r\n")
ANSWER = (b"v=0\r\no=bob 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
          b"t=0 0\r\nm=audio 7000 RTP/AVP 0\r\n")
ANSWER_RELAYED = (b"v=0\r\no=bob 2 2 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\n"
                  b"t=0 0\r\nm=audio 30002 RTP/AVP 0\r\n")


# -- bencode -------------------------------------------------------------------------

def test_bencode_round_trip_of_an_ng_command():
    """Dicts (keys sorted), lists, ints and strings encode as the format asks and decode back."""
    cmd = {"command": "offer", "replace": ["origin"], "sdp": "v=0\r\n", "delete-delay": 0}
    data = encode(cmd)
    assert data == (b"d7:command5:offer12:delete-delayi0e7:replacel6:origine"
                    b"3:sdp5:v=0\r\ne")
    assert decode(data) == cmd


@pytest.mark.parametrize("bad", [b"", b"d", b"i12", b"5:abc", b"d3:keye", b"di1ei2ee",
                                 b"i01e", b"l", b"x", b"d3:abci1ee!"])
def test_malformed_bencoding_is_a_bencode_error(bad):
    """Truncated, misordered or trailing input raises BencodeError, nothing else."""
    with pytest.raises(BencodeError):
        decode(bad)


# -- flags ---------------------------------------------------------------------------

def test_the_webrtc_to_plain_rtp_flags_translate_as_kamailio_does():
    """ICE/DTLS as entries, RTP/AVP as transport-protocol, SDES-off and replace-* as lists."""
    f = parse_flags("ICE=remove RTP/AVP DTLS=off SDES-off replace-origin "
                    "replace-session-connection trust-address direction=internal "
                    "direction=external via-branch=1 record-call=on")
    assert f.dict == {"ICE": "remove", "transport-protocol": "RTP/AVP", "DTLS": "off",
                      "SDES": ["off"], "replace": ["origin", "session-connection"],
                      "flags": ["trust-address"], "direction": ["internal", "external"],
                      "record-call": "on"}
    assert f.via == 1


def test_the_browser_side_flags_and_combined_transport_words():
    """ICE=force RTP/SAVPF DTLS=passive; RTP + SRTP + AVPF combine to RTP/SAVPF."""
    f = parse_flags("ICE=force RTP/SAVPF DTLS=passive")
    assert f.dict == {"ICE": "force", "transport-protocol": "RTP/SAVPF", "DTLS": "passive"}
    assert parse_flags("SRTP AVPF").dict == {"transport-protocol": "RTP/SAVPF"}
    assert parse_flags("UDP/TLS/RTP/SAVPF").dict == {"transport-protocol": "UDP/TLS/RTP/SAVPF"}


def test_delete_gets_no_offer_answer_entries():
    """replace, direction and transport-protocol go with offer and answer only."""
    f = parse_flags("replace-origin RTP/AVP delete-delay=0 trust-address")
    assert f.entries("delete") == {"delete-delay": 0, "flags": ["trust-address"]}


@pytest.mark.parametrize("text", ["via-branch=7", "repacketize=x", "address-family=IP5",
                                  "call-id=", "direction="])
def test_bad_flag_values_are_refused(text):
    """A missing or invalid value is a FlagError (the route does not compile)."""
    with pytest.raises(FlagError):
        parse_flags(text)


def test_rtpproxy_letters_map_to_rtpengine_flags():
    """co -> replace-session-connection replace-origin; r -> trust-address; unknown letters refused."""
    assert rtpproxy_flags("co") == "replace-session-connection replace-origin"
    assert parse_flags(rtpproxy_flags("rie")).dict == {"flags": ["trust-address"],
                                                      "direction": ["internal", "external"]}
    with pytest.raises(FlagError):
        rtpproxy_flags("q")


def test_tags_are_the_offerers_in_from_tag():
    """An answer in a reply keeps From/To; an answer in an ACK swaps them; an offer has no to-tag."""
    invite = parse_message(sipmsg.request("INVITE", from_tag="caller", to_tag="callee"))
    assert "to-tag" not in build_command("offer", invite, parse_flags(""))
    assert build_command("offer", invite, parse_flags("to-tag"))["to-tag"] == "callee"
    ack = parse_message(sipmsg.request("ACK", from_tag="caller", to_tag="callee"))
    cmd = build_command("answer", ack, parse_flags("via-branch=1"))
    assert (cmd["from-tag"], cmd["to-tag"]) == ("callee", "caller")
    assert cmd["via-branch"] == ack.via.param("branch")


# -- the ng client ---------------------------------------------------------------------

class Ng:
    """An NgClient with its timers in a real heap and its datagrams kept."""

    def __init__(self, sockets="udp:127.0.0.1:2223=2 udp:127.0.0.1:2224", timeout=1.0,
                 retries=2):
        self.heap = TimerHeap()
        self.sent = []
        self.now = 0.0
        self.client = NgClient(parse_sockets(sockets), lambda d, a: self.sent.append((d, a)),
                               lambda owner, name: Timer(self.heap, owner, name),
                               timeout=timeout, retries=retries, ping_interval=10.0)

    def advance(self, dt):
        end = self.now + dt
        while True:
            nxt = self.heap.next_deadline()
            if nxt is None or nxt > end:
                break
            self.now = nxt
            for owner, name in self.heap.pop_due(nxt):
                owner.on_timer(name, nxt)
        self.now = end

    def reply(self, index, answer):
        data, addr = self.sent[index]
        cookie = data.split(b" ", 1)[0]
        self.client.on_datagram(cookie + b" " + encode(answer), addr, self.now)


def _results(d):
    out = []
    d.addBoth(out.append)
    return out


def test_sockets_parse_with_weights_and_refuse_garbage():
    """Kamailio's rtpengine_sock syntax: udp:host:port=weight; tcp and junk refused."""
    insts = parse_sockets("udp:127.0.0.1:2223=2 127.0.0.1:2224")
    assert [(i.url, i.weight) for i in insts] == [("udp:127.0.0.1:2223", 2),
                                                 ("udp:127.0.0.1:2224", 1)]
    for bad in ("", "udp:127.0.0.1", "tcp:127.0.0.1:1=1", "udp:h:99999", "udp:h:1=x"):
        with pytest.raises(ValueError):
            parse_sockets(bad)


def test_a_reply_matched_by_cookie_fires_the_request():
    """The request goes out as '<cookie> <bencoded dict>'; its reply fires (instance, dict)."""
    ng = Ng()
    got = _results(ng.client.request({"command": "query", "call-id": "c1"}, "c1", 0.0))
    data, addr = ng.sent[0]
    cookie, payload = data.split(b" ", 1)
    assert decode(payload) == {"command": "query", "call-id": "c1"}
    ng.client.on_datagram(b"unknown " + encode({"result": "ok"}), addr, 0.1)  # not ours
    assert got == []
    ng.reply(0, {"result": "ok", "totals": {}})
    inst, answer = got[0]
    assert answer["result"] == "ok" and (inst.host, inst.port) == addr
    ng.advance(10)
    assert len(ng.sent) == 1  # answered: no retransmission


def test_unanswered_request_is_retransmitted_then_fails_over_to_the_next_instance():
    """Two retransmissions one second apart, then the instance is inactive and the next gets it."""
    ng = Ng()
    first = ng.client.select("call-1")
    got = _results(ng.client.request({"command": "offer"}, "call-1", 0.0))
    ng.advance(2.5)
    assert [a for _, a in ng.sent] == [(first.host, first.port)] * 3
    assert ng.sent[0][0] == ng.sent[2][0]  # the same bytes, the same cookie
    ng.advance(0.6)
    assert first.state == "inactive" and first.timeouts == 1
    other = ng.sent[3][1]
    assert other != (first.host, first.port)
    ng.reply(3, {"result": "ok", "sdp": "v=0"})
    assert got[0][0].port == other[1]
    # new calls avoid the dead instance while it stays silent
    assert all(ng.client.select(f"c{i}").port == other[1] for i in range(20))


def test_every_instance_silent_fails_the_request():
    """With no instance answering, the request fails with NgError naming no instance."""
    ng = Ng()
    got = _results(ng.client.request({"command": "offer"}, "x", 0.0))
    ng.advance(10)
    assert isinstance(got[0].value, NgError) and got[0].value.instance is None
    assert all(i.state == "inactive" for i in ng.client.instances)
    failed = _results(ng.client.request({"command": "offer"}, "y", ng.now))
    assert "no rtpengine instance is up" in failed[0].value.reason


def test_a_pong_enables_an_inactive_instance_again():
    """The ping round reaches inactive instances; the first pong makes one active."""
    ng = Ng(sockets="udp:127.0.0.1:2223")
    inst = ng.client.instances[0]
    ng.client.start(0.0)
    ng.advance(3.5)  # the start-up ping unanswered
    assert inst.state == "inactive"
    ng.advance(10.0 - ng.now)  # the next round
    ng.reply(len(ng.sent) - 1, {"result": "pong"})
    assert inst.state == "active" and inst.last_pong == ng.now


def test_an_error_reply_fails_the_request_but_not_the_instance():
    """result=error is rtpengine's answer: NgError with the reason, the instance stays active."""
    ng = Ng()
    got = _results(ng.client.request({"command": "answer"}, "c", 0.0))
    ng.reply(0, {"result": "error", "error-reason": "Unknown call-id"})
    assert got[0].value.reason == "Unknown call-id" and got[0].value.instance is not None
    assert got[0].value.instance.state == "active" and got[0].value.instance.errors == 1


def test_one_call_always_goes_to_the_same_instance_and_weights_spread_calls():
    """The Call-ID hash picks one instance per call; weight 2:1 gives it about two thirds."""
    ng = Ng()
    picks = [ng.client.select(f"call-{i}@example").port for i in range(3000)]
    assert all(ng.client.select(f"call-{i}@example").port == p for i, p in enumerate(picks[:50]))
    share = picks.count(2223) / len(picks)
    assert 0.58 < share < 0.75, share


def test_an_operator_disabled_instance_is_not_chosen():
    """rtpengine.enable 0 keeps an instance out of new calls even while it answers."""
    ng = Ng()
    ng.client.instances[0].admin = False
    assert {ng.client.select(f"c{i}").port for i in range(50)} == {2224}
    assert ng.client.instances[0].state == "disabled"


# -- SDP in bodies ---------------------------------------------------------------------

MULTIPART = (b"--b1\r\nContent-Type: application/sdp\r\n\r\n" + OFFER +
             b"\r\n--b1\r\nContent-Type: application/isup\r\n\r\nxyz\r\n--b1--\r\n")


def test_the_sdp_part_of_a_multipart_body_is_found_and_replaced():
    """multipart/mixed: only the SDP part changes; the other parts and the delimiters stay."""
    msg = parse_message(sipmsg.request("INVITE", extra=[
        'Content-Type: multipart/mixed;boundary="b1"'], body=MULTIPART))
    assert sdplib.get_sdp(msg) == OFFER
    assert sdplib.set_sdp(msg, RELAYED)
    assert msg.body == MULTIPART.replace(OFFER, RELAYED)
    again = parse_message(msg.to_bytes())
    assert again.body == msg.body  # Content-Length follows the new body
    assert int(again.get("content-length")) == len(msg.body)


def test_a_body_of_another_type_has_no_sdp():
    """text/plain and an empty body have no SDP; a typeless v=0 body has one."""
    plain = parse_message(sipmsg.request("MESSAGE", extra=["Content-Type: text/plain"],
                                         body=b"v=0 hello"))
    assert sdplib.get_sdp(plain) is None
    assert sdplib.get_sdp(parse_message(sipmsg.request("INVITE"))) is None
    assert sdplib.get_sdp(parse_message(sipmsg.request("INVITE", body=OFFER))) == OFFER


def test_fix_nated_sdp_flags():
    """1 a=direction:active, 2 c= rewritten with a=oldmediaip, 4 a=nortpproxy:yes, 8 o= rewritten."""
    out = sdplib.fix_nated_sdp(OFFER, 2, "198.51.100.7")
    assert b"c=IN IP4 198.51.100.7\r\na=oldmediaip:10.0.0.1\r\n" in out
    assert b"o=alice 1 1 IN IP4 10.0.0.1" in out
    out = sdplib.fix_nated_sdp(OFFER, 1 | 4 | 8, "198.51.100.7")
    assert b"o=alice 1 1 IN IP4 198.51.100.7" in out and b"c=IN IP4 10.0.0.1" in out
    assert out.index(b"a=direction:active") < out.index(b"m=audio")
    assert b"a=nortpproxy:yes\r\n" in out and out.endswith(b"\r\n")
    assert sdplib.fix_nated_sdp(out, 1 | 4 | 8, "198.51.100.7") == out  # idempotent


# -- through the proxy core ----------------------------------------------------------

FLAGS = "replace-origin replace-session-connection"
ROUTE = {
    "request_route": [
        {"if": "has_totag", "then": [
            {"if": "loose_route", "then": [{"rtpengine_manage": FLAGS}, "t_relay", "exit"]},
            {"sl_send_reply": [404, "Not here"]}, "exit"]},
        "record_route",
        {"set": {"$du": "sip:127.0.0.1:5080"}},
        {"append_hf": "X-Before: once\r\n"},
        {"if": {"has_sdp": None}, "then": [
            {"if": {"not": {"rtpengine_manage": FLAGS}}, "then": [
                {"send_reply": [503, "Media Relay Unavailable"]}, "exit"]}]},
        {"t_on_reply": "MEDIA"},
        "t_relay",
    ],
    "onreply_routes": {"MEDIA": [
        {"append_hf": "X-Reply: once\r\n"},
        {"if": {"has_sdp": None}, "then": [{"rtpengine_manage": FLAGS}]},
    ]},
}


class MediaLink:
    """A Link whose route calls rtpengine_manage; ng datagrams kept in ``ng.sent``."""

    def __init__(self, sockets="udp:127.0.0.1:2223"):
        self.link = link = Link.udp(route=lambda ctx: None)
        core = link.core
        cfg = config_from_dict({"console": {"enabled": False}, "http": {"enabled": False},
                                "routing": ROUTE})
        self.sent = []
        self.client = NgClient(parse_sockets(sockets), lambda d, a: self.sent.append((d, a)),
                               core.timer, timeout=1.0, retries=1)
        wake = lambda: link._dispatch(core.layer.drain())  # noqa: E731
        self.suspender = Suspender(core, clock=lambda: link.now, wake=wake, timeout=30)
        self.engine = Rtpengine(self.client, self.suspender, core)
        modules_of(core).rtpengine = self.engine
        core.route = build_routing(cfg, shipped_functions(), core.modules, core).entry

    def command(self, index):
        return decode(self.sent[index][0].split(b" ", 1)[1])

    def reply(self, index, answer):
        data, addr = self.sent[index]
        cookie = data.split(b" ", 1)[0]
        self.client.on_datagram(cookie + b" " + encode(answer), addr, self.link.now)
        self.link._dispatch(self.link.core.layer.drain())


def _invite_with_sdp(**kw):
    return sipmsg.request("INVITE", "sip:bob@127.0.0.1:5060", via_host="10.0.0.1",
                          extra=["Content-Type: application/sdp"], body=OFFER, **kw)


def _reply_with_sdp(fwd, status, reason, body=ANSWER):
    resp = parse_message(sipmsg.response_to(fwd, status, reason,
                                            extra=[("Content-Type", "application/sdp")]))
    resp.body = body
    return resp.to_bytes()


def test_a_call_offers_in_the_request_route_and_answers_in_a_held_reply():
    """The INVITE waits for the offer, leaves with rtpengine's SDP; the 200 is
    held for the answer (its retransmission absorbed), then relayed rewritten;
    the BYE deletes the session."""
    m = MediaLink()
    link = m.link
    link.uac.send(_invite_with_sdp(call_id="call-a"))
    assert link.uas.take() == []  # waiting for rtpengine
    offer = m.command(0)
    assert offer["command"] == "offer" and offer["sdp"] == OFFER.decode()
    assert offer["replace"] == ["origin", "session-connection"] and "to-tag" not in offer
    m.reply(0, {"result": "ok", "sdp": RELAYED.decode()})
    fwd = link.uas.expect("INVITE")
    out = parse_message(fwd)
    assert out.body == RELAYED and int(out.get("content-length")) == len(RELAYED)
    assert out.get_all("x-before") == ["once"]  # the step before the offer acted once
    link.uac.take()  # 100 Trying

    ok = _reply_with_sdp(fwd, 200, "OK")
    link.uas.send(ok)
    assert link.uac.take() == []  # held while rtpengine answers
    link.uas.send(ok)  # the callee retransmits its 200
    assert link.core.stats["replies_absorbed_held"] == 1
    answer = m.command(1)
    assert answer["command"] == "answer" and answer["to-tag"] == "uastag"
    m.reply(1, {"result": "ok", "sdp": ANSWER_RELAYED.decode()})
    got = parse_message(link.uac.expect(200))
    assert got.body == ANSWER_RELAYED and got.get_all("x-reply") == ["once"]
    link.uac.expect_nothing()
    assert m.engine.sessions["call-a"].from_tag == "ftag"

    # a later retransmission of the 200 is rewritten from memory, no round trip
    link.uas.send(ok)
    assert parse_message(link.uac.expect(200)).body == ANSWER_RELAYED
    assert len(m.sent) == 2

    link.uac.send(sipmsg.request("BYE", "sip:bob@127.0.0.1:5080", via_host="10.0.0.1",
                                 call_id="call-a", to_tag="uastag", cseq=2,
                                 extra=[f"Route: <sip:127.0.0.1:5060;lr;"
                                        f"sdsig={link.core.rr_signature('call-a', 'ftag')}>"]))
    delete = m.command(2)
    assert delete["command"] == "delete" and delete["call-id"] == "call-a"
    assert "call-a" not in m.engine.sessions


def test_a_busy_callee_ends_the_session():
    """A 486 as the transaction's final sends a delete for the call."""
    m = MediaLink()
    link = m.link
    link.uac.send(_invite_with_sdp(call_id="call-b"))
    m.reply(0, {"result": "ok", "sdp": RELAYED.decode()})
    fwd = link.uas.expect("INVITE")
    link.uas.send(sipmsg.response_to(fwd, 486, "Busy Here"))
    assert parse_message([d for d in link.uac.take() if b"486" in d][0]).status == 486
    assert m.command(1) == {"command": "delete", "call-id": "call-b", "from-tag": "ftag"}
    assert m.engine.sessions == {}


def test_no_rtpengine_answering_lets_the_route_answer_503():
    """Every instance silent: rtpengine_manage is false, the route replies 503, counted."""
    m = MediaLink()
    link = m.link
    link.uac.send(_invite_with_sdp(call_id="call-c"))
    link.advance(5)
    assert len(m.sent) == 2  # sent and retransmitted once
    statuses = [parse_message(d).status for d in link.uac.take()]
    assert 503 in statuses
    assert link.uas.take() == []
    assert link.core.stats["rtpengine_failed"] == 1


def test_the_dialog_ending_deletes_a_session_the_route_left():
    """The dialog table's ended callback deletes the call's session once; unknown calls are ignored."""
    m = MediaLink()
    link = m.link
    link.uac.send(_invite_with_sdp(call_id="call-d"))
    m.reply(0, {"result": "ok", "sdp": RELAYED.decode()})
    assert "call-d" in m.engine.sessions

    class Ended:
        callid = "call-d"

    m.engine.on_dialog_ended(Ended(), link.now)
    assert m.command(1) == {"command": "delete", "call-id": "call-d", "from-tag": "ftag"}
    m.engine.on_dialog_ended(Ended(), link.now)  # already gone: nothing more sent
    assert len(m.sent) == 2 and m.engine.stats["deleted_dialog"] == 1


def test_sessions_over_max_sessions_forget_the_oldest():
    """rtpengine.max_sessions bounds the calls remembered; the oldest goes, counted."""
    m = MediaLink()
    m.engine.max_sessions = 2
    for n in range(3):
        m.link.uac.send(_invite_with_sdp(call_id=f"call-{n}"))
        m.reply(len(m.sent) - 1, {"result": "ok", "sdp": RELAYED.decode()})
    assert list(m.engine.sessions) == ["call-1", "call-2"]
    assert m.link.core.stats["rtpengine_sessions_evicted"] == 1


def test_the_example_configuration_compiles():
    """etc/examples/rtpengine.yaml is a valid configuration whose routes compile."""
    import pathlib
    import yaml
    path = pathlib.Path(__file__).resolve().parents[2] / "etc" / "examples" / "rtpengine.yaml"
    cfg = config_from_dict(yaml.safe_load(path.read_text()))
    assert cfg.rtpengine.sockets == "udp:127.0.0.1:2223"
    routing = build_routing(cfg, shipped_functions())
    assert "MEDIA_REPLY" in routing.reply_routes


def test_a_late_offer_in_the_200_is_answered_by_the_ack():
    """INVITE without SDP: the 200's SDP is an offer from the callee (from-tag
    its To tag), the ACK's SDP the answer (tags swapped back), both rewritten."""
    m = MediaLink()
    link = m.link
    link.uac.send(sipmsg.request("INVITE", "sip:bob@127.0.0.1:5060", via_host="10.0.0.1",
                                 call_id="call-late"))
    fwd = link.uas.expect("INVITE")
    assert m.sent == []  # no SDP: nothing to offer
    link.uas.send(_reply_with_sdp(fwd, 200, "OK"))
    offer = m.command(0)
    assert offer["command"] == "offer" and offer["from-tag"] == "uastag"
    m.reply(0, {"result": "ok", "sdp": ANSWER_RELAYED.decode()})
    assert parse_message([d for d in link.uac.take() if b" 200 " in d][0]).body == ANSWER_RELAYED
    link.uac.send(sipmsg.request(
        "ACK", "sip:bob@127.0.0.1:5080", via_host="10.0.0.1", call_id="call-late",
        to_tag="uastag", extra=["Content-Type: application/sdp",
                                f"Route: <sip:127.0.0.1:5060;lr;"
                                f"sdsig={link.core.rr_signature('call-late', 'ftag')}>"],
        body=OFFER))
    answer = m.command(1)
    assert answer["command"] == "answer"
    assert (answer["from-tag"], answer["to-tag"]) == ("uastag", "ftag")
    m.reply(1, {"result": "ok", "sdp": RELAYED.decode()})
    assert parse_message(link.uas.expect("ACK")).body == RELAYED


def test_nat_uac_test_8_finds_a_private_address_in_a_multipart_sdp():
    """nathelper's flag 8 looks at the c= lines of the body, multipart parts included."""
    from types import SimpleNamespace
    from sipdisp.proxy.target import Target
    from sipdisp.registrar.nat import nat_uac_test
    msg = parse_message(sipmsg.request("INVITE", extra=[
        'Content-Type: multipart/mixed;boundary="b1"'], body=MULTIPART))
    src = Target("udp", "203.0.113.9", 5070, None, None)
    assert nat_uac_test(SimpleNamespace(request=msg, source=src), 8)
    sdplib.set_sdp(msg, RELAYED)
    assert not nat_uac_test(SimpleNamespace(request=msg, source=src), 8)


def test_metrics_per_instance():
    """requests, errors, timeouts and up per instance, and the calls remembered."""
    ng = Ng()
    engine = Rtpengine(ng.client, None)
    ng.client.request({"command": "query"}, "c", 0.0)
    ng.reply(0, {"result": "error", "error-reason": "x"})
    families = {name: samples for name, kind, help_, samples in engine.metrics()}
    first = ng.client.instances[0].url
    by = {labels["instance"]: n for labels, n in families["sipdisp_rtpengine_requests_total"]}
    errs = {labels["instance"]: n for labels, n in families["sipdisp_rtpengine_errors_total"]}
    assert sum(by.values()) == 1 and sum(errs.values()) == 1
    assert {labels["instance"]: n for labels, n in families["sipdisp_rtpengine_up"]}[first] == 1
    assert families["sipdisp_rtpengine_sessions"] == 0


def test_a_200_arriving_while_the_183_is_held_wins_and_the_183_is_not_sent_after_it():
    """183 and 200 both held for their answers; the 200's comes first and goes
    upstream; the 183's, coming later, is not relayed after the final."""
    m = MediaLink()
    link = m.link
    link.uac.send(_invite_with_sdp(call_id="call-e"))
    m.reply(0, {"result": "ok", "sdp": RELAYED.decode()})
    fwd = link.uas.expect("INVITE")
    link.uac.take()
    link.uas.send(_reply_with_sdp(fwd, 183, "Session Progress"))
    link.uas.send(_reply_with_sdp(fwd, 200, "OK"))
    assert link.uac.take() == [] and link.core.stats["replies_held"] == 2
    assert [m.command(i)["command"] for i in (1, 2)] == ["answer", "answer"]
    m.reply(2, {"result": "ok", "sdp": ANSWER_RELAYED.decode()})
    assert parse_message(link.uac.expect(200)).body == ANSWER_RELAYED
    m.reply(1, {"result": "ok", "sdp": ANSWER_RELAYED.decode()})
    link.uac.expect_nothing()


def test_an_answer_that_fails_relays_the_reply_as_it_came():
    """rtpengine answers the answer with an error: the 200 goes on unchanged, counted."""
    m = MediaLink()
    link = m.link
    link.uac.send(_invite_with_sdp(call_id="call-f"))
    m.reply(0, {"result": "ok", "sdp": RELAYED.decode()})
    fwd = link.uas.expect("INVITE")
    link.uac.take()
    link.uas.send(_reply_with_sdp(fwd, 200, "OK"))
    m.reply(1, {"result": "error", "error-reason": "Unknown call-id"})
    assert parse_message(link.uac.expect(200)).body == ANSWER
    assert link.core.stats["rtpengine_failed"] == 1
