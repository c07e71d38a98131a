"""Flood protection against a real sipdisp (twistd) over UDP on loopback: a
flood of 5,000 requests in 5 s from 127.0.0.2 gets that source banned within
the configured density, requests from 127.0.0.1 keep being routed to a real
UAS with p99 under 50 ms meanwhile, and the ban expires on time."""

import json
import re
import socket
import threading
import time
import urllib.request

from tests.support.processes import Sipdisp, free_port

DENSITY = 30
BAN_TIME = 6.0  # longer than the flood: one ban covers it


def request(method, ruri, call_id, branch, ua="flood-test"):
    return (f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK{branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <{ruri}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nUser-Agent: {ua}\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


class Uas(threading.Thread):
    """A UAS on 127.0.0.1 answering 200 OK to every request, until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.answered = 0

    def run(self):
        while self.running:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
            keep = [h for h in head[1:] if re.match(r"(?i)(via|from|to|call-id|cseq):", h)]
            reply = "\r\n".join(["SIP/2.0 200 OK"] + keep + ["Content-Length: 0", "", ""])
            self.sock.sendto(reply.encode(), addr)
            self.answered += 1

    def stop(self):
        self.running = False
        self.join(5)
        self.sock.close()


def call_id_of(data):
    m = re.search(rb"(?im)^call-id:\s*(\S+)", data)
    return m.group(1) if m else None


def rpc(port, method, *params):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    req = urllib.request.Request(f"http://127.0.0.1:{port}/rpc", body.encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())["result"]


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def flood(proxy_port, answers, stop_after=5.0, count=5000):
    """Send ``count`` OPTIONS from 127.0.0.2 spread over ``stop_after`` seconds;
    collect the Call-IDs answered into the set ``answers``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.setblocking(False)
    start = time.monotonic()
    for i in range(count):
        sock.sendto(request("OPTIONS", "sip:bob@127.0.0.1", f"flood{i}", f"f{i}"),
                    ("127.0.0.1", proxy_port))
        # pace to count/stop_after a second, draining what comes back
        while time.monotonic() - start < i * stop_after / count:
            try:
                answers.add(call_id_of(sock.recv(65535)))
            except BlockingIOError:
                time.sleep(0.0005)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        try:
            answers.add(call_id_of(sock.recv(65535)))
        except BlockingIOError:
            time.sleep(0.01)
    sock.close()


def test_flood_is_banned_while_calls_flow_and_the_ban_expires(tmp_path):
    """5,000 requests in 5 s from 127.0.0.2: at most the density get through
    before the ban, 127.0.0.1 is routed with p99 < 50 ms meanwhile, and after
    ban_time 127.0.0.2 is routed again."""
    uas = Uas()
    uas.start()
    http = free_port(socket.SOCK_STREAM)
    cfg = {"flood": {"enabled": True, "sampling_time_unit": 2, "reqs_density_per_unit": DENSITY,
                     "remove_latency": 1, "ban_time": BAN_TIME},
           "proxy": {"next_hop": f"sip:127.0.0.1:{uas.port}"},
           "http": {"listen": f"127.0.0.1:{http}"}}
    try:
        with Sipdisp(tmp_path, cfg) as proxy:
            port = proxy.port("udp")
            answers = set()
            flooder = threading.Thread(target=flood, args=(port, answers), daemon=True)
            flooder.start()
            caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            caller.bind(("127.0.0.1", 0))
            caller.settimeout(2)
            latencies = []
            i = 0
            started = time.monotonic()
            # 10 requests a second from 127.0.0.1 for as long as the flood lasts
            while flooder.is_alive() and time.monotonic() - started < 8:
                i += 1
                sent = time.monotonic()
                caller.sendto(request("OPTIONS", "sip:bob@127.0.0.1", f"call{i}", f"c{i}"),
                              ("127.0.0.1", port))
                data = caller.recv(65535)
                assert data.startswith(b"SIP/2.0 200"), data[:40]
                latencies.append(time.monotonic() - sent)
                time.sleep(0.1)
            flooder.join(10)
            banned_at = time.monotonic()
            assert len(latencies) >= 30
            latencies.sort()
            p99 = latencies[int(len(latencies) * 0.99) - 1]
            assert p99 < 0.05, f"p99 {p99 * 1000:.1f} ms"
            # banned within the density: at most DENSITY requests were answered
            assert 0 < len(answers) <= DENSITY, len(answers)
            bans = rpc(http, "ipban.list")
            assert [b["address"] for b in bans] == ["127.0.0.2"]
            assert 'event="flood_dropped_banned"' in metrics(http)
            assert "127.0.0.1" not in [b["address"] for b in bans]
            # the ban expires on time: the last flood packet renewed nothing, the
            # ban was set at the first flood second, so it is gone BAN_TIME later
            left = bans[0]["expires_in"]
            assert 0 < left <= BAN_TIME
            time.sleep(max(0.0, left - (time.monotonic() - banned_at)) + 0.3)
            assert rpc(http, "ipban.list") == []
            again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            again.bind(("127.0.0.2", 0))
            again.settimeout(2)
            again.sendto(request("OPTIONS", "sip:bob@127.0.0.1", "after", "after"),
                         ("127.0.0.1", port))
            assert again.recv(65535).startswith(b"SIP/2.0 200")
            again.close()
            assert "banning 127.0.0.2" in proxy.log_text()
    finally:
        uas.stop()


def test_scanner_and_commands(tmp_path):
    """A friendly-scanner OPTIONS draws no answer; ipban.add bans, ipban.remove lifts."""
    uas = Uas()
    uas.start()
    http = free_port(socket.SOCK_STREAM)
    cfg = {"proxy": {"next_hop": f"sip:127.0.0.1:{uas.port}"},
           "http": {"listen": f"127.0.0.1:{http}"}}
    try:
        with Sipdisp(tmp_path, cfg) as proxy:
            port = proxy.port("udp")
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.3", 0))
            sock.settimeout(1)
            sock.sendto(request("OPTIONS", "sip:bob@127.0.0.1", "s1", "s1", "friendly-scanner"),
                        ("127.0.0.1", port))
            try:
                got = sock.recv(65535)
            except socket.timeout:
                got = None
            assert got is None
            assert rpc(http, "ipban.add", "127.0.0.3", 60)["banned"]
            sock.sendto(request("OPTIONS", "sip:bob@127.0.0.1", "s2", "s2"), ("127.0.0.1", port))
            try:
                got = sock.recv(65535)
            except socket.timeout:
                got = None
            assert got is None
            assert rpc(http, "ipban.remove", "127.0.0.3")["removed"] == 1
            sock.sendto(request("OPTIONS", "sip:bob@127.0.0.1", "s3", "s3"), ("127.0.0.1", port))
            assert sock.recv(65535).startswith(b"SIP/2.0 200")
            sock.close()
            assert 'event="flood_scanner_dropped"' in metrics(http)
    finally:
        uas.stop()
