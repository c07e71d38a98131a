"""Issue 10 against a real twistd-started sipdisp on loopback: the in-dialog
relay and self-routing amplification attacks over UDP (defects 1 and 2), and
the steady-load check of defect 5 (RSS sampled every 10 s at 200 calls/s, no
growth after warm-up, no keepalive probe slower than 100 ms).

The steady-load check runs in a short form in CI; set
SIPDISP_STEADY_SECONDS=600 for the 10-minute form."""

import os
import re
import socket
import time
import urllib.request

import pytest

from sipdisp.proxy import ProxyCore
from tests.support.peers import receive_all
from tests.support.processes import Sipdisp, Sipp, free_port, rss_kib, sipp_available

SECRET = "integration node secret"


def metric(proxy, name, **labels):
    """One sample of /metrics (0 when absent)."""
    url = f"http://127.0.0.1:{proxy.port('http')}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.compile(rf"^{re.escape(name)}(\{{{re.escape(want)}\}})? (\S+)$", re.M)
    m = pattern.search(text)
    return float(m.group(2)) if m else 0.0


def in_dialog(method, ruri, routes, n, port):
    """An in-dialog request from 127.0.0.1:``port`` carrying ``routes``."""
    lines = [f"{method} {ruri} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKatk{n}",
             "From: <sip:mallory@evil.example>;tag=m1", "To: <sip:bob@example.com>;tag=b1",
             f"Call-ID: attack-{n}@evil.example", f"CSeq: {n + 1} {method}",
             "Max-Forwards: 70", *[f"Route: {r}" for r in routes], "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture
def udp_pair():
    """An attacker socket and a victim socket (where a relayed request would land)."""
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind(("127.0.0.1", 0))
    victim.bind(("127.0.0.1", 0))
    yield attacker, victim
    attacker.close()
    victim.close()


@pytest.mark.parametrize("auth", [False, True])
def test_in_dialog_requests_with_our_address_in_route_relay_nothing(tmp_path, udp_pair, auth):
    """BYE, MESSAGE, INFO and an INVITE for a foreign R-URI, each with a To tag and
    Route: <sip:PROXY;lr>, were relayed to the R-URI (with auth on too). Now each gets
    one 404 and the victim receives nothing."""
    attacker, victim = udp_pair
    vport = victim.getsockname()[1]
    with Sipdisp(tmp_path, {"auth": {"enabled": auth}}) as proxy:
        route = f"<sip:127.0.0.1:{proxy.port('udp')};lr>"
        aport = attacker.getsockname()[1]
        for n, method in enumerate(["BYE", "MESSAGE", "INFO", "INVITE"]):
            attacker.sendto(in_dialog(method, f"sip:bob@127.0.0.1:{vport}", [route], n, aport),
                            ("127.0.0.1", proxy.port("udp")))
        replies = receive_all(attacker, 1.5)
        finals = {(r.split(b"\r\n", 1)[0], re.search(rb"Call-ID: (\S+)", r).group(1))
                  for r in replies if not r.startswith(b"SIP/2.0 100")}
        # one 404 per request (the INVITE's is retransmitted until an ACK: a set)
        assert sorted(finals) == sorted((b"SIP/2.0 404 Not here", f"attack-{n}@evil.example".encode())
                                        for n in range(4)), finals
        assert receive_all(victim, 0.2) == []


def test_seventy_self_routes_are_answered_once_not_bounced_seventy_times(tmp_path, udp_pair):
    """The amplification: 1,000 datagrams with 70 `Route: <sip:PROXY;lr>` each produced
    about 300,000 receptions and 56,000 forwards. Now 200 such datagrams, unsigned and
    signed, give exactly 200 receptions, one final answer each, and no forward."""
    attacker, victim = udp_pair
    # sip.max_route_headers (30) would refuse 70 Routes with a 400 before any is
    # popped: raised here, since what this test checks is the popping
    cfg = {"proxy": {"secret": SECRET}, "sip": {"max_route_headers": 70}}
    with Sipdisp(tmp_path, cfg) as proxy:
        port = proxy.port("udp")
        aport = attacker.getsockname()[1]
        signer = ProxyCore([], None, secret=SECRET)
        sent, replies = 0, []
        for n in range(200):
            call_id = f"attack-{n}@evil.example"
            route = (f"<sip:127.0.0.1:{port};lr>" if n % 2 else
                     f"<sip:127.0.0.1:{port};lr;sdsig={signer.rr_signature(call_id, 'm1')}>")
            ruri = f"sip:bob@127.0.0.1:{port}"  # the proxy itself again
            attacker.sendto(in_dialog("BYE", ruri, [route] * 70, n, aport), ("127.0.0.1", port))
            sent += 1
            # read as we go: 200 answers would overflow our own receive buffer
            replies += receive_all(attacker, 0.003)
        replies += receive_all(attacker, 2.0)
        got = {re.search(rb"Call-ID: attack-(\d+)", r).group(1).decode() for r in replies}
        assert len(replies) == sent, (sorted(set(map(str, range(sent))) - got), proxy.log_text()[-2000:])
        statuses = {r.split(b"\r\n", 1)[0] for r in replies}
        assert statuses <= {b"SIP/2.0 404 Not here", b"SIP/2.0 482 Loop Detected"}, statuses
        assert metric(proxy, "sipdisp_sip_requests_received_total", method="BYE") == sent
        assert metric(proxy, "sipdisp_sip_requests_sent_total", method="BYE") == 0
        assert metric(proxy, "sipdisp_sip_retransmissions_sent_total") == 0
        assert receive_all(victim, 0.1) == []


# -- defect 5: steady load ---------------------------------------------------------------

def keepalive_rtt(sock, port, n):
    """Seconds an OPTIONS keepalive to sipdisp takes to be answered (None: no answer in 1 s)."""
    request = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{sock.getsockname()[1]};branch=z9hG4bKprobe{n}\r\n"
               f"From: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
               f"Call-ID: probe-{n}@test\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
               "Content-Length: 0\r\n\r\n").encode()
    start = time.monotonic()
    sock.sendto(request, ("127.0.0.1", port))
    sock.settimeout(1.0)
    try:
        while f"probe-{n}@".encode() not in sock.recv(65535):
            pass
    except socket.timeout:
        return None
    return time.monotonic() - start


@pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed (apt-get install "
                    "sip-tester); .ci/run installs it")
def test_steady_load_holds_memory_flat_and_keepalives_fast(tmp_path):
    """200 calls/s of 5 s calls through the shipped route: after warm-up (two transaction
    lifetimes) RSS sampled every 10 s does not grow, and no OPTIONS keepalive to the proxy,
    sent every 0.25 s throughout, takes more than 100 ms (the old GC tuning grew RSS about
    22 KB per call and stalled the process for over 2 s at its full collection)."""
    seconds = int(os.environ.get("SIPDISP_STEADY_SECONDS", "100"))
    warmup = 50
    assert seconds >= warmup + 30
    uas_port = free_port()
    with Sipdisp(tmp_path, {"proxy": {"next_hop": f"sip:127.0.0.1:{uas_port}"},
                            "dispatcher": {"list_file": str(tmp_path / "none.list")}}) as proxy:
        uas = Sipp(tmp_path, "uas", "uas.xml", uas_port, "u1").start()
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        try:
            uac = Sipp(tmp_path, "uac", "uac.xml", free_port(), "u1",
                       target=f"127.0.0.1:{proxy.port('udp')}",
                       extra=["-r", 200, "-l", 3000, "-d", 5000, "-m", 200 * seconds,
                              "-timeout", seconds + 60, "-timeout_error"]).start()
            start = time.monotonic()
            samples, rtts, n = [], [], 0
            next_sample = start + 10
            while time.monotonic() - start < seconds:
                rtts.append(keepalive_rtt(probe, proxy.port("udp"), n))
                n += 1
                if time.monotonic() >= next_sample:
                    samples.append((round(time.monotonic() - start), rss_kib(proxy.proc.pid)))
                    next_sample += 10
                time.sleep(0.25)
            uac.wait(90)
        finally:
            probe.close()
            uas.stop()
        stats = uac.stats()
        steady = [kb for t, kb in samples if t >= warmup]
        slow = [r for r in rtts if r is None or r > 0.100]
        report = f"rss samples (s, KiB) {samples}; slowest probe {max(r or 9 for r in rtts):.3f} s"
        assert stats["failed"] == 0 and stats["ok"] >= 200 * (seconds - 10), (stats, report)
        assert len(steady) >= 3, report
        # flat: the last samples stay within 10 % (and 20 MB) of the first after warm-up
        assert max(steady) - steady[0] <= max(steady[0] // 10, 20 * 1024), report
        assert not slow, (f"{len(slow)} of {len(rtts)} probes over 100 ms", report)
        assert "Traceback" not in proxy.log_text()
        print(report)
