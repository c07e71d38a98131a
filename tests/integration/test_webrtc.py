"""WebRTC calls through sipdisp: JsSIP 3.13.8 in headless Chromium (real
WebRTC: ICE, DTLS-SRTP, a fake microphone) registered over WebSocket, and a
SIPp stand-in for FreeSWITCH that speaks plain RTP/AVP over UDP.

tests/js/webrtc/browser_phone.js serves the page and drives Chromium through
puppeteer-core; this module reads the JSON events it prints and sends it
commands."""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.support.peers import JS_DIR, node_available
from tests.support.processes import ROOT, Sipdisp, Sipp, free_port, sipp_available

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


class BrowserPhone:
    """tests/js/webrtc/browser_phone.js (Chromium + JsSIP) and the events it reports."""

    def __init__(self, ws_url, uri, password, lifetime=90):
        self.events = queue.Queue()
        self.seen = []
        # its own process group: Chromium and its helpers go with it on a kill
        self.proc = subprocess.Popen(
            ["node", str(JS_DIR / "webrtc" / "browser_phone.js"), "--ws", ws_url, "--uri", uri,
             "--password", password, "--chromium", CHROMIUM, "--lifetime", str(lifetime)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            bufsize=1, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                self.events.put(json.loads(line))
        self.events.put({"event": "eof"})

    def expect(self, kind, timeout=20.0):
        """The next event of ``kind``; fails on a timeout, a failure or the process ending."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind!r} within {timeout}s; saw {self._brief()}")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(event)
            if event["event"] == kind:
                return event
            if event["event"] in ("eof", "exit", "error", "pageError", "registrationFailed",
                                  "failed", "ended"):
                raise AssertionError(f"{event} before {kind!r}; saw {self._brief()}")

    def _brief(self):
        return [{k: (v[:60] + "..." if isinstance(v, str) and len(v) > 60 else v)
                 for k, v in e.items()} for e in self.seen]

    def command(self, **cmd):
        """Send one command line to the harness."""
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

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
