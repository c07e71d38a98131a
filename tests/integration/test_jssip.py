"""A browser softphone's SIP stack (JsSIP from npm, in Node over the ws
package) against a running sipdisp with digest auth: it registers over
WebSocket, receives an INVITE SIPp sends over UDP through sipdisp and
rejects it (the caller gets the 486), and sends a MESSAGE (407, then 200)."""

import sqlite3
import subprocess
import sys
import time

import pytest

from tests.support.peers import JS_DIR, NodePeer, node_available
from tests.support.processes import ROOT, Sipdisp, Sipp, free_port, sipp_available
from tests.support.registrar import rpc

DOMAIN = "example.com"

pytestmark = [
    pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed"),
    pytest.mark.skipif(not node_available(), reason="node and npm are not installed"),
]


def ensure_jssip():
    """Install tests/js's pinned packages (npm ci) unless jssip is already there."""
    if (JS_DIR / "node_modules" / "jssip" / "package.json").exists():
        return
    subprocess.run(["npm", "ci", "--prefix", str(JS_DIR), "--no-audit", "--no-fund"],
                   check=True, timeout=300, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


class JsSipPeer(NodePeer):
    """tests/js/jssip_peer.js and the events it reports (one JSON object per line)."""

    FATAL = ("registrationFailed", "messageFailed")

    def __init__(self, ws_url, uri, password, lifetime=40):
        super().__init__(["node", str(JS_DIR / "jssip_peer.js"), "--ws", ws_url, "--uri", uri,
                          "--password", password, "--reject", "486",
                          "--lifetime", str(lifetime)])


def test_jssip_registers_over_websocket_receives_a_call_and_sends_a_message(tmp_path):
    """JsSIP registers with digest auth over WS; SIPp's INVITE over UDP reaches it on
    its WebSocket and its 486 reaches SIPp; its MESSAGE is challenged 407 and then delivered."""
    ensure_jssip()
    db = tmp_path / "sipdisp.db"
    subprocess.run([sys.executable, "-m", "sipdisp.cli", "user", "add", f"alice@{DOMAIN}",
                    "wonderland", "--url", f"sqlite:///{db}"], cwd=ROOT, check=True, timeout=60,
                   stdout=subprocess.DEVNULL)
    with sqlite3.connect(db) as conn:  # the CLI wrote a kamctl-style row
        assert conn.execute("SELECT password FROM subscriber WHERE username='alice'"
                            ).fetchone() == ("wonderland",)
    caller_port = free_port()
    uas_port = free_port()
    dispatcher = tmp_path / "dispatcher.list"
    dispatcher.write_text(f"0 sip:127.0.0.1:{uas_port}\n1 sip:127.0.0.1:{caller_port}\n")
    cfg = {"auth": {"enabled": True, "secret": "jssip"}, "proxy": {"domains": [DOMAIN]},
           "dispatcher": {"list_file": str(dispatcher)}}
    with Sipdisp(tmp_path, cfg) as proxy:
        peer = JsSipPeer(f"ws://127.0.0.1:{proxy.port('ws')}", f"sip:alice@{DOMAIN}", "wonderland")
        uas = None
        try:
            registered = peer.expect("registered", 15)
            assert registered["status"] == 200
            assert any(".invalid;transport=ws" in c for c in registered["contact"])
            # a call from the FreeSWITCH stand-in (a dispatcher destination: trusted)
            caller = Sipp(tmp_path, "caller", "call_rejected_uac.xml", caller_port, "u1",
                          target=f"127.0.0.1:{proxy.port('udp')}",
                          extra=["-s", "alice", "-key", "domain", DOMAIN, "-m", 1,
                                 "-timeout", 20, "-timeout_error"]).start()
            invite = peer.expect("invite", 15)
            assert invite["ruri"].endswith(".invalid;transport=ws")
            assert any("sdf-" in rr and "transport=ws" in rr for rr in invite["recordRoute"])
            rc = caller.wait(30)
            stats = caller.stats()
            assert stats["ok"] == 1 and stats["failed"] == 0 and rc == 0, (stats, caller.errors())
            # a MESSAGE from the softphone: 407, JsSIP answers it, the node gets it
            trace = tmp_path / "uas_messages.log"
            uas = Sipp(tmp_path, "uas", "message_uas.xml", uas_port, "u1",
                       extra=["-m", 1, "-timeout", 20, "-timeout_error", "-trace_msg",
                              "-message_file", trace]).start()
            time.sleep(0.5)
            peer.command(message={"target": f"sip:bob@{DOMAIN}", "body": "hello from JsSIP"})
            done = peer.expect("messageSucceeded", 15)
            assert done["status"] == 200
            assert uas.wait(20) == 0 and uas.stats()["ok"] == 1
            delivered = trace.read_text()
            assert "hello from JsSIP" in delivered
            assert "Proxy-Authorization" not in delivered  # consume_credentials
            stats = rpc(proxy, "ul.stats")
            assert stats["auth_challenges"] >= 2 and stats["auth_authorized"] >= 2, stats
            assert stats["contacts"] == 1
        finally:
            peer.close()
            if uas is not None:
                uas.stop()
        log = proxy.log_text()
        assert "Traceback" not in log
