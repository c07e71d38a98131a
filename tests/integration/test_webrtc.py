"""WebRTC calls through sipdisp: JsSIP 3.13.8 in headless Chromium (real
WebRTC: ICE, DTLS-SRTP, a fake microphone) registered over WebSocket, and a
SIPp stand-in for FreeSWITCH that speaks plain RTP/AVP over UDP; with a real
rtpengine between them (user space), the route turns the browser's offer into
plain RTP for the node and the node's answer into ICE and DTLS-SRTP for the
browser, both ways, and the rtpengine session lasts as long as the call.

tests/js/webrtc/browser_phone.js serves the page and drives Chromium through
puppeteer-core; this module reads the JSON events it prints and sends it
commands."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.support.peers import JS_DIR, NodePeer, node_available
from tests.support.processes import ROOT, Sipdisp, Sipp, free_port, sipp_available
from tests.support.rtpengine import RtpengineDaemon, needs_rtpengine

DOMAIN = "example.com"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [
    pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed"),
    pytest.mark.skipif(not node_available(), reason="node and npm are not installed"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is not installed"),
]


def ensure_puppeteer():
    """Install tests/js's pinned packages (npm ci) unless puppeteer-core is there."""
    if (JS_DIR / "node_modules" / "puppeteer-core" / "package.json").exists():
        return
    subprocess.run(["npm", "ci", "--prefix", str(JS_DIR), "--no-audit", "--no-fund"],
                   check=True, timeout=300, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


class BrowserPhone(NodePeer):
    """tests/js/webrtc/browser_phone.js (Chromium + JsSIP) and the events it reports."""

    FATAL = ("exit", "error", "pageError", "registrationFailed", "failed", "ended")
    TIMEOUT = 20.0

    def __init__(self, ws_url, uri, password, lifetime=90):
        # its own process group: Chromium and its helpers go with it on a kill
        super().__init__(["node", str(JS_DIR / "webrtc" / "browser_phone.js"), "--ws", ws_url,
                          "--uri", uri, "--password", password, "--chromium", CHROMIUM,
                          "--lifetime", str(lifetime)], new_session=True)

    def brief(self):
        """The events seen, long values (SDP) cut."""
        return [{k: (v[:60] + "..." if isinstance(v, str) and len(v) > 60 else v)
                 for k, v in e.items()} for e in self.seen]

    def close(self):
        """Stop the harness (it closes Chromium), bounded; kill its group if it lingers."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


def add_user(tmp_path, user, password):
    """A subscriber row, written by sipdisp's own CLI (kamctl style)."""
    subprocess.run([sys.executable, "-m", "sipdisp.cli", "user", "add", f"{user}@{DOMAIN}",
                    password, "--url", f"sqlite:///{tmp_path / 'sipdisp.db'}"],
                   cwd=ROOT, check=True, timeout=60, stdout=subprocess.DEVNULL)


def sdp_of(trace_text, first_line):
    """The body of the first message in SIPp's -trace_msg file whose start line
    begins with ``first_line`` ("INVITE", "SIP/2.0 200")."""
    for block in re.split(r"(?m)^-{5,}.*$", trace_text.replace("\r\n", "\n")):
        # "UDP message received [n] bytes :", a blank line, then the message
        parts = block.strip().split("\n\n", 2)
        if len(parts) == 3 and parts[1].startswith(first_line):
            return parts[2]
    raise AssertionError(f"no {first_line!r} with a body in the SIPp trace:\n{trace_text[-3000:]}")


def proxy_config(tmp_path, uas_port, caller_port, extra=None):
    """sipdisp with digest auth, the built-in route, set 0 = the FreeSWITCH
    stand-in the browser calls, set 1 = the one that calls the browser."""
    dispatcher = tmp_path / "dispatcher.list"
    dispatcher.write_text(f"0 sip:127.0.0.1:{uas_port}\n1 sip:127.0.0.1:{caller_port}\n")
    cfg = {"auth": {"enabled": True, "secret": "webrtc"}, "proxy": {"domains": [DOMAIN]},
           "dispatcher": {"list_file": str(dispatcher)}}
    cfg.update(extra or {})
    return cfg


def test_browser_offer_reaches_an_rtp_only_node_untouched_without_a_media_relay(tmp_path):
    """Without rtpengine the browser's offer reaches the FreeSWITCH stand-in as
    the browser wrote it (ICE, DTLS fingerprint, UDP/TLS/RTP/SAVPF), which a
    node that only speaks RTP/AVP cannot use; the browser in turn refuses the
    node's plain RTP/AVP answer and hangs up."""
    ensure_puppeteer()
    add_user(tmp_path, "alice", "wonderland")
    uas_port, caller_port = free_port(), free_port()
    trace = tmp_path / "uas_messages.log"
    with Sipdisp(tmp_path, proxy_config(tmp_path, uas_port, caller_port)) as proxy:
        uas = Sipp(tmp_path, "uas", "uas.xml", uas_port, "u1",
                   extra=["-m", 1, "-timeout", 60, "-timeout_error", "-trace_msg",
                          "-message_file", trace]).start()
        phone = BrowserPhone(f"ws://127.0.0.1:{proxy.port('ws')}", f"sip:alice@{DOMAIN}",
                             "wonderland")
        try:
            assert "Chrome/" in phone.expect("ready", 30)["chromium"]
            assert phone.expect("registered", 20)["status"] == 200
            phone.command(call=f"sip:fs@{DOMAIN}")
            sent = phone.expect("sending", 20)["offerSdp"]
            assert "a=ice-ufrag" in sent and "UDP/TLS/RTP/SAVPF" in sent
            failed = phone.expect("failed", 30)
            # JsSIP cannot apply an RTP/AVP answer to its SAVPF offer: it ACKs
            # the 200 and sends a BYE, which the stand-in answers
            assert failed["cause"] == "Bad Media Description", failed
            assert uas.wait(30) == 0, uas.errors()
        finally:
            phone.close()
            uas.stop()
        offer = sdp_of(trace.read_text(), "INVITE")
        assert "a=ice-ufrag" in offer and "a=fingerprint" in offer, offer
        assert "UDP/TLS/RTP/SAVPF" in offer
        assert "Traceback" not in proxy.log_text()


# rtpengine's WebRTC <-> RTP/AVP recipe, as Chromium 156 and rtpengine 10.5
# need it (tried one flag at a time, browser -> node calls):
# - toward the node: no ICE, no DTLS, no SDES, plain RTP/AVP on rtpengine's
#   address, and rtcp-mux-demux (or -accept). Without it rtpengine's answer
#   to the browser has no a=rtcp-mux, whatever the answer's flags say
#   (rtcp-mux-require included), and Chromium refuses it: "RTCP-MUX is not
#   enabled when it is required" (0 of 11 calls confirmed);
# - toward the browser: ICE, DTLS-SRTP, UDP/TLS/RTP/SAVPF, RTCP multiplexed;
# - no DTLS=passive in the answer to the browser: rtpengine starts ICE with
#   the browser as soon as it has the offer, on loopback ICE completes before
#   the answer command arrives, rtpengine starts DTLS in its default (active)
#   role, and the answer's passive role then leaves both ends waiting (calls
#   confirmed, but media in 1 of 13: the browser stays "connecting"). Active
#   from the start, its early ClientHello is kept by Chromium until the answer
#   is applied (media in 18 of 18).
TO_NODE = ("ICE=remove RTP/AVP DTLS=off SDES-off rtcp-mux-demux "
           "replace-origin replace-session-connection")
TO_BROWSER_ANSWER = ("ICE=force UDP/TLS/RTP/SAVPF SDES-off rtcp-mux-require "
                     "replace-origin replace-session-connection")
TO_BROWSER_OFFER = ("ICE=force UDP/TLS/RTP/SAVPF SDES-off rtcp-mux-offer rtcp-mux-require "
                    "generate-mid replace-origin replace-session-connection")


def media_relay_routes():
    """The built-in route with its RELAY block putting rtpengine in the media
    path: an INVITE from a WebSocket client is offered to rtpengine for the
    node, one going to a WebSocket contact for the browser, and each reply's
    SDP is the answer the other way; BYE ends the session."""
    return {
        "routes": {
            "RELAY": [
                {"if": {"all": [{"is_method": "INVITE"}, "has_sdp", {"not": "has_totag"}]},
                 "then": [
                     {"if": {"any": [{"eq": ["$proto", "ws"]}, {"eq": ["$proto", "wss"]}]},
                      "then": [
                          {"if": {"not": {"rtpengine_offer": TO_NODE}},
                           "then": [{"send_reply": [503, "Media Relay Unavailable"]}, "exit"]},
                          {"t_on_reply": "ANSWER_TO_BROWSER"}],
                      "else": [
                          {"if": {"match": ["$ru", "transport=wss?"]}, "then": [
                              {"if": {"not": {"rtpengine_offer": TO_BROWSER_OFFER}},
                               "then": [{"send_reply": [503, "Media Relay Unavailable"]},
                                        "exit"]},
                              {"t_on_reply": "ANSWER_TO_NODE"}]}]}]},
                {"if": {"is_method": "BYE|CANCEL"}, "then": ["rtpengine_delete"]},
                {"if": {"not": "t_relay"}, "then": ["sl_reply_error"]},
                "exit",
            ],
        },
        "onreply_routes": {
            "ANSWER_TO_BROWSER": [
                {"if": "has_sdp", "then": [{"rtpengine_answer": TO_BROWSER_ANSWER}]}],
            "ANSWER_TO_NODE": [{"if": "has_sdp", "then": [{"rtpengine_answer": TO_NODE}]}],
        },
    }


def managed_media_routes():
    """The same media path written the Kamailio way, with rtpengine_manage
    only: the request route picks the flags for each direction into
    transaction AVPs, the reply route hands the reply's SDP to
    rtpengine_manage with the other direction's flags (an answer, since the
    INVITE had an offer), and manage deletes on BYE."""
    ws_caller = {"any": [{"eq": ["$proto", "ws"]}, {"eq": ["$proto", "wss"]}]}
    return {
        "routes": {
            "RELAY": [
                {"if": {"all": [{"is_method": "INVITE"}, "has_sdp", {"not": "has_totag"}]},
                 "then": [
                     {"if": ws_caller,
                      "then": [{"set": {"$avp(offer_flags)": TO_NODE,
                                        "$avp(answer_flags)": TO_BROWSER_ANSWER}}],
                      "else": [
                          {"if": {"match": ["$ru", "transport=wss?"]}, "then": [
                              {"set": {"$avp(offer_flags)": TO_BROWSER_OFFER,
                                       "$avp(answer_flags)": TO_NODE}}]}]},
                     {"if": {"ne": ["$avp(offer_flags)", None]}, "then": [
                         {"if": {"not": {"rtpengine_manage": "$avp(offer_flags)"}},
                          "then": [{"send_reply": [503, "Media Relay Unavailable"]}, "exit"]},
                         {"t_on_reply": "MANAGE"}]}]},
                {"if": {"is_method": "BYE|CANCEL"}, "then": ["rtpengine_manage"]},
                {"if": {"not": "t_relay"}, "then": ["sl_reply_error"]},
                "exit",
            ],
        },
        "onreply_routes": {
            "MANAGE": [{"if": "has_sdp", "then": [{"rtpengine_manage": "$avp(answer_flags)"}]}],
        },
    }


ROUTE_STYLES = {"offer_answer_delete": media_relay_routes, "manage": managed_media_routes}


def media_line(sdp):
    """``(port, proto)`` of the SDP's audio m= line."""
    m = re.search(r"(?m)^m=audio (\d+) (\S+) ", sdp)
    assert m, sdp
    return int(m.group(1)), m.group(2)


def connection_address(sdp):
    """The address of the SDP's first c= line."""
    m = re.search(r"(?m)^c=IN IP4 (\S+)", sdp)
    assert m, sdp
    return m.group(1).strip()


def assert_plain_rtp_on_rtpengine(sdp, rtpe):
    """What the node gets: RTP/AVP on rtpengine's address and ports, no ICE, no DTLS, no SDES."""
    port, proto = media_line(sdp)
    assert proto == "RTP/AVP", sdp
    assert rtpe.port_min <= port <= rtpe.port_max, (port, sdp)
    assert connection_address(sdp) == "127.0.0.1", sdp
    assert re.search(r"(?m)^o=.* IN IP4 127\.0\.0\.1\s*$", sdp), sdp  # replace-origin
    for attr in ("a=ice-ufrag", "a=ice-pwd", "a=candidate", "a=fingerprint", "a=setup",
                 "a=crypto"):
        assert attr not in sdp, (attr, sdp)


def assert_webrtc_on_rtpengine(sdp, rtpe, setup):
    """What the browser gets: ICE and DTLS-SRTP (DTLS role ``setup``), RTCP
    multiplexed, on rtpengine's address, port and candidates."""
    port, proto = media_line(sdp)
    assert proto == "UDP/TLS/RTP/SAVPF", sdp
    assert rtpe.port_min <= port <= rtpe.port_max, (port, sdp)
    assert connection_address(sdp) == "127.0.0.1", sdp
    for attr in ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:sha-", f"a=setup:{setup}\r\n",
                 "a=rtcp-mux"):
        assert attr in sdp, (attr, sdp)
    candidates = re.findall(r"(?m)^a=candidate:\S+ 1 (?i:udp) \d+ (\S+) (\d+) typ host", sdp)
    assert ("127.0.0.1", str(port)) in candidates, sdp


def wait_for(predicate, timeout, step=0.2):
    """Poll ``predicate`` until it is true or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


def assert_media_flows(phone, rtpe, call_id):
    """Real media both ways: the browser's ICE and DTLS with rtpengine complete,
    its SRTP reaches rtpengine (fingerprint verified), goes on as RTP to the
    node, whose SIPp echoes it (-rtp_echo), and comes back to the browser."""
    phone.expect("connectionState", 30, match=lambda e: e["state"] == "connected")
    stats = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        phone.command(stats=True)
        stats = phone.expect("stats", 10)
        if stats["packetsSent"] > 0 and stats["packetsReceived"] > 0:
            break
        time.sleep(0.5)
    assert stats["packetsSent"] > 0 and stats["packetsReceived"] > 0, stats
    assert stats["dtlsState"] == "connected", stats
    legs = {}
    for tag in rtpe.ng({"command": "query", "call-id": call_id})["tags"].values():
        for media in tag["medias"]:
            rtp = media["streams"][0]
            legs[media["protocol"]] = (rtp["stats"]["packets"], rtp["flags"])
    assert set(legs) == {"UDP/TLS/RTP/SAVPF", "RTP/AVP"}, legs
    webrtc_packets, webrtc_flags = legs["UDP/TLS/RTP/SAVPF"]
    assert webrtc_packets > 0 and "DTLS fingerprint verified" in webrtc_flags, legs
    assert legs["RTP/AVP"][0] > 0, legs  # the node's echo came back through rtpengine
    return stats


@needs_rtpengine
@pytest.mark.parametrize("style", sorted(ROUTE_STYLES))
def test_browser_calls_an_rtp_only_node_through_rtpengine(tmp_path, style):
    """A WebRTC call from the browser: its ICE/DTLS-SRTP offer reaches the
    RTP/AVP-only node as plain RTP on rtpengine's address, the node's RTP/AVP
    answer reaches the browser with ICE and DTLS, the call is confirmed, media
    flows both ways, rtpengine lists the call while it is up and forgets it
    after the browser's BYE."""
    ensure_puppeteer()
    add_user(tmp_path, "alice", "wonderland")
    uas_port, caller_port = free_port(), free_port()
    trace = tmp_path / "node_messages.log"
    with RtpengineDaemon(tmp_path) as rtpe:
        cfg = proxy_config(tmp_path, uas_port, caller_port,
                           {"routing": ROUTE_STYLES[style](),
                            "rtpengine": {"sockets": rtpe.url}})
        with Sipdisp(tmp_path, cfg) as proxy:
            node = Sipp(tmp_path, "node", "webrtc_fs_uas.xml", uas_port, "u1",
                        extra=["-m", 1, "-timeout", 60, "-timeout_error", "-rtp_echo",
                               "-trace_msg", "-message_file", trace]).start()
            phone = BrowserPhone(f"ws://127.0.0.1:{proxy.port('ws')}", f"sip:alice@{DOMAIN}",
                                 "wonderland")
            try:
                phone.expect("ready", 30)
                assert phone.expect("registered", 20)["status"] == 200
                phone.command(call=f"sip:fs@{DOMAIN}")
                sending = phone.expect("sending", 20)
                call_id, browser_offer = sending["callId"], sending["offerSdp"]
                assert "a=fingerprint" in browser_offer  # the browser offers DTLS-SRTP
                confirmed = phone.expect("confirmed", 30)
                listed = wait_for(lambda: call_id in rtpe.calls(), 10)
                assert listed, (call_id, rtpe.calls())
                assert_media_flows(phone, rtpe, call_id)
                phone.command(hangup=True)
                assert phone.expect("ended", 20)["originator"] == "local"
                assert node.wait(30) == 0, node.errors()
                gone = wait_for(lambda: call_id not in rtpe.calls(), 15)
                assert gone, (call_id, rtpe.calls())
            finally:
                phone.close()
                node.stop()
            log = proxy.log_text()
        text = trace.read_text()
        offer_at_node = sdp_of(text, "INVITE")
        answer_of_node = sdp_of(text, "SIP/2.0 200")
        assert_plain_rtp_on_rtpengine(offer_at_node, rtpe)
        assert media_line(offer_at_node)[0] != media_line(browser_offer)[0]
        assert_webrtc_on_rtpengine(confirmed["remoteSdp"], rtpe, "active")
        # the browser's media goes to rtpengine, not to the node's port
        assert media_line(confirmed["remoteSdp"])[0] != media_line(answer_of_node)[0]
        assert confirmed["signalingState"] == "stable"
        assert "Traceback" not in log


@needs_rtpengine
@pytest.mark.parametrize("style", sorted(ROUTE_STYLES))
def test_rtp_only_node_calls_the_browser_through_rtpengine(tmp_path, style):
    """A call from the RTP/AVP-only node to the browser registered over WS:
    the browser gets an offer with ICE and DTLS-SRTP on rtpengine's address and
    answers it, the node gets a plain RTP/AVP answer on rtpengine's address,
    media flows both ways, rtpengine lists the call while it is up and not
    after the node hangs up (its BYE, cued by an INFO from the browser)."""
    ensure_puppeteer()
    add_user(tmp_path, "alice", "wonderland")
    uas_port, caller_port = free_port(), free_port()
    trace = tmp_path / "node_messages.log"
    with RtpengineDaemon(tmp_path) as rtpe:
        cfg = proxy_config(tmp_path, uas_port, caller_port,
                           {"routing": ROUTE_STYLES[style](),
                            "rtpengine": {"sockets": rtpe.url}})
        with Sipdisp(tmp_path, cfg) as proxy:
            phone = BrowserPhone(f"ws://127.0.0.1:{proxy.port('ws')}", f"sip:alice@{DOMAIN}",
                                 "wonderland")
            node = None
            try:
                phone.expect("ready", 30)
                assert phone.expect("registered", 20)["status"] == 200
                node = Sipp(tmp_path, "node", "webrtc_fs_uac.xml", caller_port, "u1",
                            target=f"127.0.0.1:{proxy.port('udp')}",
                            extra=["-s", "alice", "-key", "domain", DOMAIN, "-m", 1,
                                   "-timeout", 60, "-timeout_error", "-rtp_echo",
                                   "-trace_msg", "-message_file", trace]).start()
                invite = phone.expect("invite", 30)
                call_id = invite["callId"]
                confirmed = phone.expect("confirmed", 30)
                listed = wait_for(lambda: call_id in rtpe.calls(), 10)
                assert listed, (call_id, rtpe.calls())
                assert_media_flows(phone, rtpe, call_id)
                phone.command(info=True)
                assert phone.expect("ended", 20)["originator"] == "remote"
                assert node.wait(30) == 0, node.errors()
                gone = wait_for(lambda: call_id not in rtpe.calls(), 15)
                assert gone, (call_id, rtpe.calls())
            finally:
                phone.close()
                if node is not None:
                    node.stop()
            log = proxy.log_text()
        text = trace.read_text()
        offer_of_node = sdp_of(text, "INVITE")
        answer_at_node = sdp_of(text, "SIP/2.0 200")
        # an offer leaves the DTLS role to the answerer (RFC 5763): the browser takes active
        assert_webrtc_on_rtpengine(invite["offerSdp"], rtpe, "actpass")
        assert_webrtc_on_rtpengine(confirmed["remoteSdp"], rtpe, "actpass")
        assert media_line(invite["offerSdp"])[0] != media_line(offer_of_node)[0]
        assert_plain_rtp_on_rtpengine(answer_at_node, rtpe)
        assert "a=setup:active" in confirmed["localSdp"]  # the browser is the DTLS client
        assert "Traceback" not in log
