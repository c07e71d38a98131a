"""The busy lamp field through real sockets: a watcher subscribed to bob's
``dialog`` event package (RFC 4235) over UDP sees bob's lamp go early ->
confirmed -> terminated while a SIPp call to bob runs through sipdisp
(SIPp caller -> sipdisp -> SIPp callee, the call tracked by create_dialog),
with no PUBLISH from anyone: the dialog module's own state feeds the NOTIFYs.
The same for a JsSIP phone watching over WebSocket.
And a fan-out: one PUBLISH reaches every one of 50 presence watchers."""

import re

import pytest

from tests.support.peers import node_available
from tests.support.presence import UdpWatchers, init_db, pidf
from tests.support.processes import Sipdisp, Sipp, free_port, sipp_available

DOMAIN = "example.com"

# handle_publish / handle_subscribe for PUBLISH and SUBSCRIBE (in-dialog ones
# too); INVITEs tracked by create_dialog and dispatched to bob's phone.
BLF_ROUTE = {
    "request_route": [
        {"if": "has_totag", "then": [
            {"if": "loose_route", "then": ["t_relay", "exit"]},
            {"if": {"is_method": "SUBSCRIBE"}, "then": ["handle_subscribe", "exit"]},
            {"if": {"is_method": "ACK"}, "then": ["exit"]},
            {"sl_send_reply": [404, "Not here"]}, "exit"]},
        {"if": {"is_method": "PUBLISH"}, "then": ["handle_publish", "exit"]},
        {"if": {"is_method": "SUBSCRIBE"}, "then": ["handle_subscribe", "exit"]},
        {"if": {"not": {"is_method": "INVITE"}},
         "then": [{"sl_send_reply": [405, "Method Not Allowed"]}, "exit"]},
        "record_route",
        "create_dialog",
        {"if": {"not": {"ds_select_dst": [0, 4]}},
         "then": [{"send_reply": [503, "No destination"]}, "exit"]},
        {"if": {"not": "t_relay"}, "then": ["sl_reply_error"]},
    ],
}

_STATE_RE = re.compile(r"<(?:\w+:)?state[^>]*>\s*(\w+)\s*</(?:\w+:)?state>")


def lamp_states(sub):
    """The dialog states in each NOTIFY body of ``sub`` ("idle" for a
    dialog-info document with no dialog), in order, repeats folded."""
    out = []
    for n in sub.notifies:
        states = _STATE_RE.findall(n.body) or ["idle"]
        for state in states:
            if not out or out[-1] != state:
                out.append(state)
    return out


def run_call(tmp_path):
    """A dialog-event watcher of bob while SIPp alice calls SIPp bob through
    sipdisp (ringing 2 s, talking 2 s); returns the watcher's Subscription
    once the lamp has gone to terminated (both SIPp sides checked)."""
    uas_port = free_port()
    dispatcher = tmp_path / "dispatcher.list"
    dispatcher.write_text(f"0 sip:127.0.0.1:{uas_port}\n")
    cfg = {"proxy": {"domains": [DOMAIN]},
           "presence": {"enabled": True, "force_active": True},
           "dispatcher": {"list_file": str(dispatcher), "ping_interval": 0},
           "routing": BLF_ROUTE}
    init_db(f"sqlite:///{tmp_path / 'sipdisp.db'}")
    proxy = Sipdisp(tmp_path, cfg).start(timeout=60)
    with proxy, UdpWatchers(proxy.port("udp"), DOMAIN) as w:
        lamp = w.subscribe("bob", "alice", event="dialog")
        w.wait_for(lambda: lamp.to_tag and lamp.notifies, 10, "the first dialog NOTIFY")
        assert lamp.responses[0].status in (200, 202), lamp.responses[0].start
        first = lamp.notifies[0]
        assert first.header("event", "").startswith("dialog")
        assert "application/dialog-info+xml" in first.header("content-type", "")
        assert first.header("subscription-state", "").startswith("active")
        assert lamp_states(lamp) == ["idle"], first.body

        callee = Sipp(tmp_path, "bob", "presence_blf_uas.xml", uas_port, "u1",
                      extra=["-m", 1, "-timeout", 30, "-timeout_error"]).start()
        caller = Sipp(tmp_path, "alice", "presence_blf_uac.xml", free_port(), "u1",
                      target=f"127.0.0.1:{proxy.port('udp')}",
                      extra=["-s", "bob", "-key", "domain", DOMAIN, "-d", 2000, "-m", 1,
                             "-timeout", 30, "-timeout_error"]).start()
        try:
            w.wait_for(lambda: "early" in lamp_states(lamp), 10, "an early lamp")
            w.wait_for(lambda: "confirmed" in lamp_states(lamp), 10, "a confirmed lamp")
            assert caller.wait(30) == 0, caller.errors()[-1500:]
            assert callee.wait(15) == 0, callee.errors()[-1500:]
            w.wait_for(lambda: "terminated" in lamp_states(lamp), 10, "a terminated lamp")
        finally:
            caller.stop()
            callee.stop()
        assert caller.stats()["ok"] == 1 and callee.stats()["ok"] == 1
        assert not w.unmatched
    assert "Traceback" not in proxy.log_text()
    assert "presence tables" not in proxy.log_text()  # read back at once
    return lamp


@pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed")
def test_busy_lamp_goes_early_confirmed_terminated_during_a_call(tmp_path):
    """A dialog-event watcher of bob gets NOTIFYs whose dialog-info says early
    (while bob's phone rings), confirmed (answered) and terminated (BYE), in
    that order and in one subscription dialog, for a call SIPp makes through
    sipdisp; the call itself completes on both SIPp sides."""
    lamp = run_call(tmp_path)
    states = lamp_states(lamp)
    # trying/proceeding before early are allowed by RFC 4235 3.7.1, not required
    lamp_path = [s for s in states if s not in ("trying", "proceeding")]
    assert lamp_path[0] == "idle" and lamp_path[1:4] == ["early", "confirmed", "terminated"], (
        states, [n.body for n in lamp.notifies])
    assert {(n.call_id, n.from_tag, n.to_tag) for n in lamp.notifies} == {
        (lamp.call_id, lamp.to_tag, lamp.from_tag)}
    cseqs = [n.cseq[0] for n in lamp.notifies]
    assert cseqs == sorted(set(cseqs)), cseqs
    assert all('entity="sip:bob@example.com"' in n.body for n in lamp.notifies)


@pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed")
def test_busy_lamp_documents_count_up_their_version(tmp_path):
    """RFC 4235 4.1: the dialog-info version starts at 0 and goes up by one with
    every document sent in a subscription (phones drop a NOTIFY whose version
    is not above the last one they saw, and the lamp would stick)."""
    lamp = run_call(tmp_path)
    versions = [int(re.search(r'version="(\d+)"', n.body).group(1)) for n in lamp.notifies]
    assert versions == list(range(len(versions))), versions


def test_one_publish_reaches_fifty_watchers(tmp_path):
    """50 UDP watchers of bob's presence (a bounded window of 10 SUBSCRIBEs in
    flight) each get one NOTIFY with the state of bob's next PUBLISH, in their
    own dialog, all answered 200 (the small version of bench/presence/fanout.py)."""
    cfg = {"proxy": {"domains": [DOMAIN]},
           "presence": {"enabled": True, "force_active": True}}
    init_db(f"sqlite:///{tmp_path / 'sipdisp.db'}")
    proxy = Sipdisp(tmp_path, cfg).start(timeout=60)
    with proxy, UdpWatchers(proxy.port("udp"), DOMAIN) as w:
        subs = w.subscribe_many("bob", 50, window=10, timeout=60)
        assert len({s.to_tag for s in subs}) == 50  # 50 dialogs
        answer = w.publish("bob", pidf(f"sip:bob@{DOMAIN}", note="fan-out 50"))
        assert answer.status == 200 and answer.header("sip-etag"), answer.start
        w.wait_for(lambda: all(any("fan-out 50" in n.body for n in s.notifies) for s in subs),
                   30, "50 NOTIFYs with the new state")
        for s in subs:
            n = next(n for n in s.notifies if "fan-out 50" in n.body)
            assert (n.call_id, n.to_tag) == (s.call_id, s.from_tag)
            assert n.cseq[0] > s.notifies[0].cseq[0]
            assert n.header("subscription-state", "").startswith("active")
        assert not w.unmatched
    assert "Traceback" not in proxy.log_text()


@pytest.mark.skipif(not (sipp_available() and node_available()),
                    reason="SIPp, node or npm are not installed")
def test_browser_busy_lamp_over_websocket(tmp_path):
    """A JsSIP phone (over WebSocket, registered) subscribed to bob's dialog
    package sees bob's lamp go early, confirmed and terminated in its NOTIFYs
    while SIPp calls SIPp bob through sipdisp over UDP."""
    from tests.integration.test_jssip import ensure_jssip
    from tests.integration.test_presence_jssip import PresencePeer
    ensure_jssip()
    uas_port = free_port()
    dispatcher = tmp_path / "dispatcher.list"
    dispatcher.write_text(f"0 sip:127.0.0.1:{uas_port}\n")
    cfg = {"proxy": {"domains": [DOMAIN]},
           "presence": {"enabled": True, "force_active": True},
           "dispatcher": {"list_file": str(dispatcher), "ping_interval": 0},
           "routing": dict(BLF_ROUTE, request_route=[
               {"if": {"is_method": "REGISTER"}, "then": [
                   {"if": {"not": {"save": "location"}}, "then": ["sl_reply_error"]}, "exit"]},
               *BLF_ROUTE["request_route"]])}
    init_db(f"sqlite:///{tmp_path / 'sipdisp.db'}")
    with Sipdisp(tmp_path, cfg).start(timeout=60) as proxy:
        carol = PresencePeer(f"ws://127.0.0.1:{proxy.port('ws')}", f"sip:carol@{DOMAIN}",
                             "unused")
        callee = caller = None
        try:
            carol.expect("registered")
            carol.command(subscribe={"target": f"sip:bob@{DOMAIN}", "event": "dialog",
                                     "accept": "application/dialog-info+xml", "expires": 600})
            carol.expect("notify")
            callee = Sipp(tmp_path, "bob", "presence_blf_uas.xml", uas_port, "u1",
                          extra=["-m", 1, "-timeout", 30, "-timeout_error"]).start()
            caller = Sipp(tmp_path, "alice", "presence_blf_uac.xml", free_port(), "u1",
                          target=f"127.0.0.1:{proxy.port('udp')}",
                          extra=["-s", "bob", "-key", "domain", DOMAIN, "-d", 2000, "-m", 1,
                                 "-timeout", 30, "-timeout_error"]).start()
            for state in ("early", "confirmed", "terminated"):
                carol.expect("notify", 20, match=lambda e, state=state: state in
                             _STATE_RE.findall(e["body"]))
            assert caller.wait(30) == 0, caller.errors()[-1500:]
            assert callee.wait(15) == 0, callee.errors()[-1500:]
        finally:
            carol.close()
            for sipp in (caller, callee):
                if sipp is not None:
                    sipp.stop()
        notifies = [e for e in carol.seen if e["event"] == "notify"]
        assert len({(e["callId"], e["fromTag"], e["toTag"]) for e in notifies}) == 1
        assert all("application/dialog-info+xml" in e["contentType"] for e in notifies)
    assert "Traceback" not in proxy.log_text()
