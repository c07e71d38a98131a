"""The attacks of issue #10 (defect 6 and the SSH part of 4) against a running
sipdisp (twistd), over real loopback sockets, bounded in count and time:
a web page's cross-site POST, DNS rebinding, a 2 GB Content-Length, deeply
nested JSON, and a flood of unauthenticated SSH connections."""

import json
import os
import socket
import time
import urllib.request

import pytest

from tests.support.console import HttpResponse
from tests.support.processes import Sipdisp

SSH_CAP = 4
SSH_EXTRA = 16  # connections past the cap
LOGIN_TIMEOUT = 1.0
CALL = json.dumps({"jsonrpc": "2.0", "method": "core.version", "id": 1}).encode()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hardening")
    config = {"console": {"authorized_keys": str(directory / "authorized_keys"),
                          "max_connections": SSH_CAP, "login_timeout": LOGIN_TIMEOUT},
              "http": {"request_timeout": 1.0}}
    with Sipdisp(directory, config) as running:
        yield running


def exchange(port, data, timeout=5.0):
    """Send ``data`` on a new connection; (status, headers, body) of the answer,
    read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        answer = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    response = HttpResponse(answer)
    return response.status, response.headers, response.body


def post(proxy, body=CALL, content_type="application/json", host=None, extra=""):
    port = proxy.port("http")
    host = host or f"127.0.0.1:{port}"
    head = (f"POST /rpc HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n{extra}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return exchange(port, head + body)


def spooled_bytes(pid):
    """Bytes in deleted regular files the process holds open (twisted.web's body spool)."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        path = f"/proc/{pid}/fd/{fd}"
        try:
            if os.readlink(path).endswith("(deleted)"):
                total += os.stat(path).st_blocks * 512
        except OSError:
            continue
    return total


def metrics(proxy):
    url = f"http://127.0.0.1:{proxy.port('http')}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def event(page, name):
    """The value of sipdisp_core_events_total{event=name} in a metrics page (0 if absent)."""
    prefix = f'sipdisp_core_events_total{{event="{name}"}} '
    for line in page.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return 0


def test_json_post_still_works(proxy):
    """The ordinary call (what sipdisp-ctl and curl -H send) is served."""
    status, _, body = post(proxy)
    assert status == 200 and json.loads(body)["result"].startswith("sipdisp ")


def test_cross_site_text_plain_post_is_refused(proxy):
    """A browser's simple cross-site POST (text/plain, Origin of the page) is refused."""
    assert post(proxy, content_type="text/plain")[0] == 415
    status, _, body = post(proxy, extra="Origin: http://evil.example\r\n")
    assert status == 403 and json.loads(body)["error"]["data"].startswith("Origin")


def test_dns_rebinding_host_is_refused(proxy):
    """A request for the attacker's name (rebound to 127.0.0.1) gets 421, on /metrics too."""
    assert post(proxy, host=f"rebind.evil.example:{proxy.port('http')}")[0] == 421
    port = proxy.port("http")
    status, _, _ = exchange(port, b"GET /metrics HTTP/1.1\r\nHost: rebind.evil.example\r\n"
                                  b"Connection: close\r\n\r\n")
    assert status == 421
    assert post(proxy, host=f"localhost:{port}")[0] == 200


def test_two_gigabyte_content_length_is_refused_before_the_body(proxy):
    """The headers alone get 413 at once and the connection is closed; nothing is spooled
    to disk while the client keeps sending (before: 650 MB on disk in one second)."""
    port = proxy.port("http")
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        s.sendall(f"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: "
                  f"application/json\r\nContent-Length: {2 * 1024 ** 3}\r\n\r\n".encode())
        started = time.monotonic()
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
        assert time.monotonic() - started < 1.0
        sent, chunk = 0, b"x" * 65536
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and sent < 64 * 1024 * 1024:
            try:
                s.sendall(chunk)
            except OSError:  # reset: the server closed the connection
                break
            sent += len(chunk)
        assert spooled_bytes(proxy.proc.pid) == 0
    finally:
        s.close()
    assert event(metrics(proxy), "http_refused_body_size") >= 1


def test_deep_json_is_400_without_a_traceback(proxy):
    """100,000 nested arrays get HTTP 400 / -32700; the log has no traceback."""
    status, _, body = post(proxy, b"[" * 100000 + b"]" * 100000)
    assert status == 400 and json.loads(body)["error"]["code"] == -32700
    time.sleep(0.1)
    assert "Traceback" not in proxy.log_text()


def test_slow_request_is_closed_after_the_request_timeout(proxy):
    """A client that never finishes its headers gets 408 after http.request_timeout."""
    port = proxy.port("http")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert 0.8 < time.monotonic() - started < 3.0


def test_ssh_flood_is_capped_and_unauthenticated_connections_time_out(proxy):
    """Past console.max_connections raw TCP connections are closed at once; the admitted
    ones, never logging in, are closed after console.login_timeout; HTTP answers
    throughout and sipdisp holds no more than the cap in descriptors."""
    pid, port = proxy.proc.pid, proxy.port("ssh")
    fds_before = len(os.listdir(f"/proc/{pid}/fd"))
    socks = [socket.create_connection(("127.0.0.1", port), timeout=3)
             for _ in range(SSH_CAP + SSH_EXTRA)]
    try:
        time.sleep(0.3)
        assert post(proxy)[0] == 200  # the HTTP listener still answers
        # before: one descriptor per connection, held for Twisted's 10-hour login timeout
        assert len(os.listdir(f"/proc/{pid}/fd")) <= fds_before + SSH_CAP + 2
        banners, closed = [], []
        for s in socks:
            first = s.recv(256)
            (banners if first.startswith(b"SSH-2.0-") else closed).append(s)
            assert first == b"" or first.startswith(b"SSH-2.0-")
        assert len(banners) == SSH_CAP and len(closed) == SSH_EXTRA
        started = time.monotonic()
        for s in banners:  # read until the server closes: the login timeout
            while s.recv(65536):
                pass
        assert time.monotonic() - started < LOGIN_TIMEOUT + 3
    finally:
        for s in socks:
            s.close()
    time.sleep(0.2)
    page = metrics(proxy)
    assert event(page, "console_refused_connections") >= SSH_EXTRA
    assert event(page, "console_login_timeouts") >= SSH_CAP
    log = proxy.log_text()
    assert log.count("(console.max_connections)") == 1  # one line, not one per connection
    assert "connection lost" not in log
