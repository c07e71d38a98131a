"""SIP over WebSocket (RFC 7118) with real peers: a Node ``ws`` client on one
side of a twistd-started sipdisp, SIPp standing in for FreeSWITCH on UDP on
the other."""

import re

import pytest

from tests.support.peers import (
    Dialog, WsPeer, answer, ensure_node_modules, node_available,
)
from tests.support.processes import Sipdisp, Sipp, free_port, sipp_available

pytestmark = [
    pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed (apt-get install "
                                                    "sip-tester); .ci/run installs it"),
    pytest.mark.skipif(not node_available(), reason="node/npm are not installed; "
                                                    ".ci/run installs them"),
]

VIA_HOST = "df7jal23ls0d.invalid"
CONTACT = f"sip:alice@{VIA_HOST};transport=ws"
FLOW_RR = re.compile(r"^<sip:sdf-(\d+)@127\.0\.0\.1:(\d+);transport=ws;lr;r2=on;sdsig=(\w+)>$")


@pytest.fixture(scope="module", autouse=True)
def node_modules():
    """tests/js's pinned ws package, installed once with npm ci if missing."""
    ensure_node_modules()


def start_uas(tmp_path, scenario, port):
    """SIPp UAS on UDP ``port`` handling one call, exiting afterwards."""
    return Sipp(tmp_path, "uas", scenario, port, "u1", extra=["-m", 1]).start()


def ws_url(proxy):
    """The URL of sipdisp's first ws listener."""
    return f"ws://127.0.0.1:{proxy.port('ws')}"


def test_handshake_without_sip_subprotocol_is_refused(tmp_path):
    """A WebSocket client that does not offer the 'sip' subprotocol gets no upgrade."""
    with Sipdisp(tmp_path, {}) as proxy:
        with WsPeer(ws_url(proxy), protocols=("chat",)) as peer:
            rejected = peer.expect("rejected", timeout=10)
            assert rejected["status"] == 400
            assert not [e for e in peer.seen if e["event"] == "open"]
        with WsPeer(ws_url(proxy), protocols=()) as peer:
            assert peer.expect("rejected", timeout=10)["status"] == 400


def test_call_from_websocket_client_to_udp_uas(tmp_path):
    """An INVITE from a WebSocket client reaches SIPp over UDP; 100/180/200 come
    back on the WebSocket, ACK and BYE follow the double Record-Route."""
    uas_port = free_port()
    with Sipdisp(tmp_path, {"proxy": {"next_hop": f"sip:127.0.0.1:{uas_port}"}}) as proxy:
        uas = start_uas(tmp_path, "uas.xml", uas_port)
        try:
            with WsPeer(ws_url(proxy)) as peer:
                upgrade, opened = peer.open(timeout=10)
                assert upgrade["status"] == 101
                assert upgrade["headers"]["sec-websocket-protocol"] == "sip"
                assert opened["protocol"] == "sip"

                dialog = Dialog("WS", VIA_HOST, CONTACT, f"sip:bob@127.0.0.1:{proxy.port('ws')}")
                peer.send(dialog.invite())
                statuses = []
                while True:
                    resp = peer.recv_sip(timeout=10)
                    assert resp.call_id == dialog.call_id
                    statuses.append(resp.status)
                    if resp.status >= 200:
                        break
                assert statuses == [100, 180, 200], statuses
                # the Via we sent comes back as the only one, marked with the source
                assert len(resp.values("via")) == 1
                assert VIA_HOST in resp.values("via")[0]
                assert "received=127.0.0.1" in resp.values("via")[0]

                rr = resp.values("record-route")
                assert len(rr) == 2, rr
                sig = proxy.rr_signature(resp.call_id, resp.from_tag)
                assert rr[0] == f"<sip:127.0.0.1:{proxy.port('udp')};lr;r2=on;sdsig={sig}>"
                flow = FLOW_RR.match(rr[1])
                assert flow and int(flow.group(2)) == proxy.port("ws"), rr
                assert flow.group(3) == sig

                dialog.learn(resp)
                peer.send(dialog.ack())
                peer.send(dialog.bye())
                bye_ok = peer.recv_sip(timeout=10, match=lambda m: not m.is_request)
                assert bye_ok.status == 200
                assert bye_ok.cseq_method == "BYE"
                assert bye_ok.call_id == dialog.call_id
            assert uas.wait(15) == 0
        finally:
            uas.stop()
        stats = uas.stats()
        assert stats["ok"] == 1 and stats["failed"] == 0, (stats, uas.errors()[-2000:])
        assert "Traceback" not in proxy.log_text()


def test_bye_from_uas_reaches_websocket_client_by_flow_token(tmp_path):
    """A BYE sent by the UDP side along the Record-Route is delivered on the
    WebSocket client's own connection (the sdf- flow token), and its 200 gets back."""
    uas_port = free_port()
    with Sipdisp(tmp_path, {"proxy": {"next_hop": f"sip:127.0.0.1:{uas_port}"}}) as proxy:
        uas = start_uas(tmp_path, "uas_sends_bye.xml", uas_port)
        try:
            with WsPeer(ws_url(proxy)) as peer:
                peer.open(timeout=10)
                dialog = Dialog("WS", VIA_HOST, CONTACT, f"sip:bob@127.0.0.1:{proxy.port('ws')}")
                peer.send(dialog.invite())
                final = peer.recv_sip(timeout=10, match=lambda m: not m.is_request
                                      and m.status >= 200)
                assert final.status == 200
                dialog.learn(final)
                peer.send(dialog.ack())

                bye = peer.recv_sip(timeout=10, match=lambda m: m.is_request)
                assert bye.method == "BYE"
                assert bye.call_id == dialog.call_id
                # both Record-Route entries were ours and were consumed by sipdisp
                assert not bye.has("route"), bye.values("route")
                assert bye.uri.host == VIA_HOST
                vias = bye.values("via")
                assert len(vias) == 2 and vias[0].startswith(
                    f"SIP/2.0/WS 127.0.0.1:{proxy.port('ws')};"), vias
                peer.send(answer(bye, 200, "OK"))
            assert uas.wait(15) == 0
        finally:
            uas.stop()
        stats = uas.stats()
        assert stats["ok"] == 1 and stats["failed"] == 0, (stats, uas.errors()[-2000:])
        assert "Traceback" not in proxy.log_text()
