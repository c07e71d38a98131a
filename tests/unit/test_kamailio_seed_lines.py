"""The Kamailio seed's lines that used to differ silently: sanity_check doing
the checks its flags select, force_rport answering to the source port,
proxy.record_route false, and the log_prefix on the lines the route logs."""

import pytest
from twisted.logger import globalLogPublisher

from sipdisp.config import ConfigError
from sipdisp.routing import sanity
from sipdisp.schema import config_from_dict
from sipdisp.sip import parse_message
from tests.support.dispatch import Proxy, requests, responses
from tests.support.sipmsg import request

NODE = "sip:127.0.0.1:5080"


def routing(steps):
    """A route: ``steps`` then relay to the node."""
    return {"request_route": steps + [{"set": {"$du": NODE}}, "t_relay", "exit"]}


SEED_REQINIT = [{"if": {"not": {"sanity_check": ["1511", "7"]}},
                 "then": [{"xlog": "Malformed SIP message from $si:$sp"}, "exit"]}]


def check(raw, msg_checks=sanity.ALL_CHECKS, uri_checks=sanity.ALL_URI_CHECKS, proto="udp"):
    """The Failure (or None) the selected checks give for ``raw``."""
    from sipdisp.proxy.target import Target
    try:
        sanity.compile_checks(msg_checks, uri_checks)(parse_message(raw),
                                                      Target(proto, "10.0.0.1", 5070))
    except sanity.Failure as failure:
        return failure
    return None


# -- sanity_check ------------------------------------------------------------------

def test_seed_flags_answer_an_illegal_expires_400_and_stop_the_request():
    """sanity_check("1511", "7") (256: Expires value) answers 400 Expires value is illegal; nothing is relayed."""
    p = Proxy({"routing": routing(SEED_REQINIT)})
    out = p.send(request("INVITE", extra=["Expires: soon"]))
    ((resp, to),) = responses(out)
    assert (resp.status, resp.reason) == (400, "Expires value is illegal")
    assert to == ("127.0.0.1", 5070)
    assert requests(out) == []
    assert p.core.stats["sanity_failed"] == 1


def test_seed_flags_pass_a_good_request_through():
    """A well-formed INVITE passes sanity_check("1511", "7") and is relayed."""
    p = Proxy({"routing": routing(SEED_REQINIT)})
    out = p.send(request("INVITE", extra=["Expires: 60"]))
    assert [to for _, to in requests(out, "INVITE")] == [("127.0.0.1", 5080)]
    assert p.core.stats["sanity_failed"] == 0


def test_unselected_checks_do_not_fail():
    """Without bit 256 an illegal Expires passes; with only 256 it fails."""
    raw = request("INVITE", extra=["Expires: soon"])
    assert check(raw, sanity.ALL_CHECKS & ~sanity.EXPIRES_VALUE) is None
    assert check(raw, sanity.EXPIRES_VALUE).status == 400


@pytest.mark.parametrize("bits, extra, status, reason", [
    (sanity.EXPIRES_VALUE, ["Expires: 99999999999"], 400, "Expires value is illegal"),
    (sanity.PROXY_REQUIRE, ["Proxy-Require: foo"], 420, "Bad Proxy Require Extension"),
    (sanity.CHECK_DIGEST, ['Authorization: Digest username="", realm="a", nonce="n", '
                           'uri="sip:a", response="r"'], 400, "Auth Empty User"),
    (sanity.CHECK_DIGEST, ['Authorization: Digest username="u", realm="a", nonce="", '
                           'uri="sip:a", response="r"'], 400, "Auth Empty Nonce"),
    (sanity.CHECK_DIGEST, ["Authorization: Basic dTpw"], None, "not a Digest credential"),
    (sanity.CHECK_AUTHORIZATION, ["Authorization: Basic dTpw"], "pass", ""),
    (sanity.PARSE_URIS, ["Contact: <sip:@@>"], 400, "Bad Contact Header"),
])
def test_each_selected_check_answers_like_the_module(bits, extra, status, reason):
    """Each bit's failure carries the module's status and reason (None: no reply)."""
    raw = request("REGISTER", "sip:127.0.0.1", extra=extra)
    failure = check(raw, bits)
    if status == "pass":
        assert failure is None
    else:
        assert (failure.status, failure.reason) == (status, reason)


def test_proxy_require_names_the_unsupported_extension():
    """420 carries Unsupported with the Proxy-Require tags."""
    failure = check(request("INVITE", extra=["Proxy-Require: foo, bar"]), sanity.PROXY_REQUIRE)
    assert failure.headers == (("unsupported", "foo, bar"),)


def test_duplicate_tags_and_required_headers():
    """4096 refuses two From tags (400); 4 fails without a reply on a repeated CSeq."""
    raw = request("INVITE").replace(b"tag=ftag", b"tag=ftag;tag=other")
    assert (check(raw, sanity.CHECK_DUPTAGS).status,
            check(raw, sanity.CHECK_DUPTAGS).reason) == (400, "Many From Tag Params")
    req = parse_message(request("INVITE"))
    req.add("cseq", "2 INVITE")
    with pytest.raises(sanity.Failure) as info:
        sanity.compile_checks(sanity.REQUIRED_HEADERS)(req, None)
    assert info.value.status is None


def test_content_length_and_cseq_checks_see_a_changed_request():
    """128 and 32 check the request as the route left it: a body of another size, a CSeq changed."""
    req = parse_message(request("INVITE", body=b"v=0\r\n"))
    req.body = b"v=0\r\nlonger"
    with pytest.raises(sanity.Failure, match="Content-Length mis-match"):
        sanity.compile_checks(sanity.CONTENT_LENGTH)(req, None)
    req.cseq_method = "BYE"
    with pytest.raises(sanity.Failure, match="CSeq method does not match"):
        sanity.compile_checks(sanity.CSEQ_METHOD)(req, None)


def test_via_transport_must_match_the_socket():
    """16: a Via saying TCP on a UDP socket is 400; WS and WSS are both fine on a WebSocket."""
    assert check(request("OPTIONS", proto="TCP"), sanity.VIA_PROTOCOL).status == 400
    assert check(request("OPTIONS", proto="WSS"), sanity.VIA_PROTOCOL, proto="ws") is None


def test_flags_out_of_range_are_config_errors_naming_the_step():
    """sanity_check with a flag beyond the module's is refused at load, naming the route step."""
    with pytest.raises(ConfigError, match=r"routing\.request_route.*msg_checks"):
        config_from_dict({"routing": routing([{"sanity_check": [1 << 20]}])})


# -- force_rport -------------------------------------------------------------------

def test_force_rport_answers_to_the_source_port_without_rport_in_via():
    """The Via says port 5070 without rport; the packet came from 40000: force_rport replies to 40000."""
    p = Proxy({"routing": {"request_route": ["force_rport",
                                             {"sl_send_reply": [404, "Not here"]}]}})
    out = p.send(request("OPTIONS", via_host="127.0.0.1", via_port=5070),
                 source=("127.0.0.1", 40000))
    ((resp, to),) = responses(out)
    assert to == ("127.0.0.1", 40000)
    assert resp.via.param("rport") == "40000" and resp.via.param("received") == "127.0.0.1"


def test_without_force_rport_replies_go_to_the_via_port():
    """The same request without force_rport is answered at the Via's port (RFC 3261 18.2.2)."""
    p = Proxy({"routing": {"request_route": [{"sl_send_reply": [404, "Not here"]}]}})
    out = p.send(request("OPTIONS", via_host="127.0.0.1", via_port=5070),
                 source=("127.0.0.1", 40000))
    assert [to for _, to in responses(out)] == [("127.0.0.1", 5070)]


def test_force_rport_relayed_replies_go_to_the_source_port():
    """A relayed INVITE's 180 and 486 (stateful) go back to the source port after force_rport."""
    p = Proxy({"routing": routing(["force_rport"])})
    out = p.send(request("INVITE", via_host="127.0.0.1", via_port=5070),
                 source=("127.0.0.1", 40000))
    ((fwd, _),) = requests(out, "INVITE")
    assert "rport=40000" in fwd.values("via")[1]
    back = p.send(_reply(fwd, 486, "Busy Here"), source=("127.0.0.1", 5080))
    assert ("127.0.0.1", 40000) in [to for m, to in responses(back, 486)]


def _reply(fwd, status, reason):
    from sipdisp.sip import make_response
    return make_response(fwd, status, reason, to_tag="t1").to_bytes()


# -- proxy.record_route ------------------------------------------------------------

def test_record_route_false_adds_no_record_route():
    """With proxy.record_route false the route's record_route adds nothing; true adds it."""
    for enabled, expected in ((True, 1), (False, 0)):
        p = Proxy({"routing": routing(["record_route"]),
                   "proxy": {"record_route": enabled}})
        p.core.record_route = p.cfg.proxy.record_route  # as service.SipService builds it
        ((fwd, _),) = requests(p.send(request("INVITE")), "INVITE")
        assert len(fwd.values("record-route")) == expected


def test_sip_service_gives_the_core_proxy_record_route():
    """SipService builds its core with proxy.record_route from the configuration."""
    from twisted.internet.testing import MemoryReactorClock

    from sipdisp.service import SipService
    cfg = config_from_dict({"proxy": {"record_route": False, "secret": "s"},
                            "console": {"enabled": False}, "http": {"enabled": False}})
    assert SipService(cfg, reactor=MemoryReactorClock()).core.record_route is False


# -- log.prefix --------------------------------------------------------------------

def test_log_prefix_goes_before_every_xlog_line():
    """log.prefix "{$mt $hdr(CSeq) $ci} " is rendered per request before the xlog text."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        p = Proxy({"log": {"prefix": "{$mt $hdr(CSeq) $ci} "},
                   "routing": {"request_route": [{"xlog": [ "L_INFO", "hello $rm"]},
                                                 {"sl_send_reply": [404, "x"]}]}})
        p.send(request("OPTIONS", call_id="pfx-1@test", cseq=7))
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [e["line"] for e in events if e.get("log_namespace") == "sipdisp.route"]
    assert lines == ["{1 7 OPTIONS pfx-1@test} hello OPTIONS"]


def test_log_prefix_with_an_unknown_variable_is_a_config_error():
    """A prefix naming an unknown pseudo-variable is refused in one line naming log.prefix."""
    with pytest.raises(ConfigError) as info:
        config_from_dict({"log": {"prefix": "{$nosuch} "}})
    assert str(info.value).startswith("log.prefix:")
