"""Presence for browser softphones: two JsSIP user agents (JsSIP from npm, in
Node over the ws package; tests/js/presence_peer.js) register with a running
sipdisp over WebSocket with digest auth (their SUBSCRIBE and PUBLISH are
challenged 407 and answered by JsSIP, as the seed's AUTH route does it);
alice subscribes to bob's presence with JsSIP's Subscriber, bob publishes
"away" and then "online" (PIDF with an RPID activity and a note), alice's
NOTIFYs carry both states in one dialog, and her unsubscribe ends with the
final NOTIFY (Subscription-State: terminated). And across a restart of
sipdisp: JsSIP reconnects and registers again, and alice's subscription
carries on in the same dialog over her new connection."""

import socket
import subprocess
import sys

import pytest

from tests.integration.test_jssip import ensure_jssip
from tests.support.peers import JS_DIR, NodePeer, node_available
from tests.support.presence import init_db, pidf
from tests.support.processes import ROOT, Sipdisp, free_port
from tests.support.registrar import rpc

DOMAIN = "example.com"

pytestmark = pytest.mark.skipif(not node_available(), reason="node and npm are not installed")


class PresencePeer(NodePeer):
    """tests/js/presence_peer.js and the events it reports (one JSON object per line)."""

    FATAL = ("registrationFailed", "publishFailed")
    TIMEOUT = 20.0

    def __init__(self, ws_url, uri, password, lifetime=60):
        super().__init__(["node", str(JS_DIR / "presence_peer.js"), "--ws", ws_url, "--uri", uri,
                          "--password", password, "--lifetime", str(lifetime)])

    def fatal(self, event, kind):
        """A failure, the end, or the subscription ending while waiting for something else."""
        return super().fatal(event, kind) or (
            event["event"] == "subscribeTerminated" and kind != "subscribeTerminated")


def _state(event):
    return (event.get("subscriptionState") or "").split(";")[0].strip().lower()


def test_jssip_watcher_sees_away_then_online_and_the_final_notify(tmp_path):
    """Over WebSocket: JsSIP's Subscriber gets 200 and a NOTIFY at once, then one
    NOTIFY per PUBLISH of bob ("away", then "online" by SIP-If-Match), all in
    the dialog of its SUBSCRIBE with rising CSeq, and its unsubscribe
    (Expires: 0) gets the final NOTIFY with Subscription-State terminated."""
    ensure_jssip()
    db = tmp_path / "sipdisp.db"
    init_db(f"sqlite:///{db}")
    for user, password in (("alice", "wonderland"), ("bob", "builder")):
        subprocess.run([sys.executable, "-m", "sipdisp.cli", "user", "add", f"{user}@{DOMAIN}",
                        password, "--url", f"sqlite:///{db}"], cwd=ROOT, check=True,
                       timeout=60, stdout=subprocess.DEVNULL)
    cfg = {"auth": {"enabled": True, "secret": "presence"}, "proxy": {"domains": [DOMAIN]},
           "presence": {"enabled": True, "force_active": True}}
    with Sipdisp(tmp_path, cfg).start(timeout=60) as proxy:
        ws = f"ws://127.0.0.1:{proxy.port('ws')}"
        alice = PresencePeer(ws, f"sip:alice@{DOMAIN}", "wonderland")
        bob = PresencePeer(ws, f"sip:bob@{DOMAIN}", "builder")
        try:
            assert alice.expect("registered")["status"] == 200
            assert bob.expect("registered")["status"] == 200

            alice.command(subscribe={"target": f"sip:bob@{DOMAIN}", "event": "presence",
                                     "accept": "application/pidf+xml", "expires": 600})
            alice.expect("subscribeAccepted")
            first = alice.expect("notify")
            assert _state(first) == "active", first
            assert "expires=" in first["subscriptionState"]

            bob.command(publish={"target": f"sip:bob@{DOMAIN}", "event": "presence",
                                 "expires": 600, "contentType": "application/pidf+xml",
                                 "body": pidf(f"sip:bob@{DOMAIN}", basic="open",
                                              note="Gone for lunch", activity="away")})
            published = bob.expect("publishResponse")
            assert published["status"] == 200 and published["etag"], published
            away = alice.expect("notify", match=lambda e: "Gone for lunch" in e["body"])
            assert _state(away) == "active"
            assert "away" in away["body"] and "<basic>open</basic>" in away["body"]
            assert "application/pidf+xml" in away["contentType"]

            bob.command(publish={"target": f"sip:bob@{DOMAIN}", "event": "presence",
                                 "expires": 600, "contentType": "application/pidf+xml",
                                 "body": pidf(f"sip:bob@{DOMAIN}", basic="open",
                                              note="Back at my desk")})
            modified = bob.expect("publishResponse")
            assert modified["status"] == 200 and modified["etag"], modified
            online = alice.expect("notify", match=lambda e: "Back at my desk" in e["body"])
            assert _state(online) == "active"
            assert "Gone for lunch" not in online["body"]  # the modify replaced bob's state
            assert "<basic>open</basic>" in online["body"]

            alice.command(unsubscribe=True)
            final = alice.expect("notify", match=lambda e: _state(e) == "terminated")
            ended = alice.expect("subscribeTerminated")
            assert ended["codeName"] == "FINAL_NOTIFY_RECEIVED", ended

            dialog = [e for e in alice.seen if e["event"] == "notify"]
            assert {(e["callId"], e["fromTag"], e["toTag"]) for e in dialog} == {
                (first["callId"], first["fromTag"], first["toTag"])}
            cseqs = [e["cseq"] for e in (first, away, online, final)]
            assert cseqs == sorted(set(cseqs)), cseqs

            bob.command(unpublish=True)
            removed = bob.expect("publishResponse")
            assert removed["status"] == 200, removed
            # bob, authenticated, cannot publish alice's state
            bob.command(publish={"target": f"sip:alice@{DOMAIN}", "event": "presence",
                                 "expires": 600, "contentType": "application/pidf+xml",
                                 "body": pidf(f"sip:alice@{DOMAIN}", basic="closed",
                                              note="not alice")})
            spoofed = bob.expect("publishResponse")
            assert spoofed["status"] == 403, spoofed
            assert rpc(proxy, "presence.list") == [], rpc(proxy, "presence.list")
            stats = rpc(proxy, "ul.stats")  # SUBSCRIBE and 4 PUBLISHes challenged
            assert stats["auth_challenges"] >= 4 and stats["auth_authorized"] >= 4, stats
        finally:
            alice.close()
            bob.close()
        assert "Traceback" not in proxy.log_text()


def test_jssip_watcher_keeps_its_subscription_across_a_restart(tmp_path):
    """sipdisp restarts under two JsSIP phones: their WebSockets drop, JsSIP
    reconnects and registers again on the same port, and bob's next PUBLISH
    (SIP-If-Match of his ETag from before the restart) reaches alice in the
    subscription dialog she made before it, over her new connection (the flow
    she registered from), with a higher CSeq."""
    ensure_jssip()
    db = tmp_path / "sipdisp.db"
    init_db(f"sqlite:///{db}")
    for user, password in (("alice", "wonderland"), ("bob", "builder")):
        subprocess.run([sys.executable, "-m", "sipdisp.cli", "user", "add", f"{user}@{DOMAIN}",
                        password, "--url", f"sqlite:///{db}"], cwd=ROOT, check=True,
                       timeout=60, stdout=subprocess.DEVNULL)
    ws_port = free_port(socket.SOCK_STREAM)
    cfg = {"listen": {"ws": [f"127.0.0.1:{ws_port}"]},
           "auth": {"enabled": True, "secret": "presence"}, "proxy": {"domains": [DOMAIN]},
           "presence": {"enabled": True, "force_active": True}}
    ws = f"ws://127.0.0.1:{ws_port}"
    proxy = Sipdisp(tmp_path, cfg).start(timeout=60)
    alice = PresencePeer(ws, f"sip:alice@{DOMAIN}", "wonderland", lifetime=90)
    bob = PresencePeer(ws, f"sip:bob@{DOMAIN}", "builder", lifetime=90)
    try:
        alice.expect("registered")
        bob.expect("registered")
        alice.command(subscribe={"target": f"sip:bob@{DOMAIN}", "event": "presence",
                                 "accept": "application/pidf+xml", "expires": 600})
        first = alice.expect("notify")
        bob.command(publish={"target": f"sip:bob@{DOMAIN}", "expires": 600,
                             "body": pidf(f"sip:bob@{DOMAIN}", note="before the restart")})
        assert bob.expect("publishResponse")["status"] == 200
        before = alice.expect("notify", match=lambda e: "before the restart" in e["body"])

        proxy.stop()
        assert "Traceback" not in proxy.log_text()
        alice.expect("disconnected")
        bob.expect("disconnected")
        proxy = Sipdisp(tmp_path, cfg).start(timeout=60)
        assert alice.expect("registered", 30)["status"] == 200
        assert bob.expect("registered", 30)["status"] == 200

        bob.command(publish={"target": f"sip:bob@{DOMAIN}", "expires": 600,
                             "body": pidf(f"sip:bob@{DOMAIN}", note="after the restart")})
        assert bob.expect("publishResponse")["status"] == 200
        after = alice.expect("notify", 20, match=lambda e: "after the restart" in e["body"])
        assert (after["callId"], after["fromTag"], after["toTag"]) == (
            first["callId"], first["fromTag"], first["toTag"])
        assert after["cseq"] > before["cseq"]
        assert _state(after) == "active"
    finally:
        alice.close()
        bob.close()
        proxy.stop()
    assert "Traceback" not in proxy.log_text()
