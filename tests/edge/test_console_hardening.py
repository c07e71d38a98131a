"""The management listeners refuse what a web page, a slow client or a flood
sends them: judged on the headers before the body is read, counted, logged once.

HTTP goes through the real twisted.web Site and channel over a StringTransport;
the SSH factory and transport run on a task.Clock."""

import json
from collections import Counter

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh import keys
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent

from sipdisp.console.listening import ConnectionCap, LimitAlarm
from sipdisp.console.manhole import ConsoleFactory, make_portal
from sipdisp.console.web import make_site, split_host, token_digest
from tests.support.console import HttpClient, HttpResponse, make_root

CALL = json.dumps({"jsonrpc": "2.0", "method": "core.version", "id": 1}).encode()


def failures(events):
    """Events logged with a traceback (log.failure)."""
    return [e for e in events if "log_failure" in e]


def warnings(events, text):
    return [e for e in events if e.get("log_level") == LogLevel.warn
            and text in (e.get("log_format") or "")]


def stats(root):
    return root.sip.core.stats


def connect(site):
    """A channel of ``site`` on a StringTransport, its timers on a Clock."""
    clock = Clock()
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    channel.callLater = clock.callLater
    transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 5064),
                                peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    channel.makeConnection(transport)
    return channel, transport, clock


def head(method="POST", path="/rpc", **headers):
    """Request line and headers (``content_type`` becomes ``Content-Type``), no body."""
    headers = {"Host": "127.0.0.1:5064", **{k.replace("_", "-").title(): v
                                            for k, v in headers.items()}}
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- HTTP: judged on the headers ------------------------------------------------------


def test_text_plain_post_is_refused_415_without_running_the_command(tmp_path, logged):
    """A browser's "simple" cross-site POST (text/plain) gets 415; the command never runs."""
    root = make_root(tmp_path)
    ran = []
    root.registry.command("test.mark")(lambda: ran.append(1))
    http = HttpClient(make_site(root))
    body = json.dumps({"jsonrpc": "2.0", "method": "test.mark", "id": 1}).encode()
    response = http.request("POST", "/rpc", body, [("Content-Type", "text/plain")])
    assert response.status == 415
    assert json.loads(response.body)["error"]["data"] == "Content-Type must be application/json"
    assert ran == []
    assert http.request("POST", "/rpc", body).status == 200 and ran == [1]
    assert stats(root)["http_refused_content_type"] == 1


def test_form_encoded_and_missing_content_type_are_refused(tmp_path):
    """Only application/json (with parameters) is a JSON-RPC body."""
    http = HttpClient(make_site(make_root(tmp_path)))
    form = [("Content-Type", "application/x-www-form-urlencoded")]
    assert http.request("POST", "/rpc", CALL, form).status == 415
    json_utf8 = [("Content-Type", "Application/JSON; charset=utf-8")]
    assert http.request("POST", "/rpc", CALL, json_utf8).status == 200


def test_foreign_host_is_refused_421(tmp_path):
    """DNS rebinding: a Host naming another site gets 421, on /rpc and /metrics alike."""
    root = make_root(tmp_path)
    http = HttpClient(make_site(root))
    assert http.request("POST", "/rpc", CALL, [("Host", "evil.example:5064")]).status == 421
    assert http.request("GET", "/metrics", headers=[("Host", "evil.example")]).status == 421
    for good in ("127.0.0.1:5064", "localhost:5064", "LOCALHOST.", "[::1]:5064", "127.0.0.1"):
        assert http.request("POST", "/rpc", CALL, [("Host", good)]).status == 200, good
    assert stats(root)["http_refused_host"] == 2


def test_allowed_hosts_adds_names(tmp_path):
    """http.allowed_hosts adds names (any port) and name:port pairs."""
    root = make_root(tmp_path, http={"allowed_hosts": ["mgmt.example", "tunnel.example:8080"]})
    http = HttpClient(make_site(root))
    ok = ["mgmt.example", "mgmt.example:5064", "tunnel.example:8080"]
    for host in ok:
        assert http.request("POST", "/rpc", CALL, [("Host", host)]).status == 200, host
    assert http.request("POST", "/rpc", CALL, [("Host", "tunnel.example:9")]).status == 421


def test_host_on_the_connection_address_is_accepted_on_a_wildcard_listener(tmp_path):
    """Listening on 0.0.0.0, the address the client connected to is a valid Host."""
    token = "t" * 20
    root = make_root(tmp_path, http={"listen": "0.0.0.0:0", "token_sha256": token_digest(token)})
    channel, transport, _ = connect(make_site(root))
    channel.dataReceived(head(host="127.0.0.1:5064", content_type="application/json",
                              authorization=f"Bearer {token}", content_length=len(CALL)) + CALL)
    assert HttpResponse(transport.value()).status == 200
    channel, transport, _ = connect(make_site(root))
    channel.dataReceived(head(host="attacker.example", content_type="application/json",
                              authorization=f"Bearer {token}", content_length=len(CALL)) + CALL)
    assert HttpResponse(transport.value()).status == 421


def test_split_host():
    """Host values parse to (name, port); malformed ones to None."""
    assert split_host(b"127.0.0.1:5064") == ("127.0.0.1", 5064)
    assert split_host("[::1]:80") == ("::1", 80)
    assert split_host("[::1]") == ("::1", None)
    assert split_host("::1") == ("::1", None)
    assert split_host("Example.COM.") == ("example.com", None)
    assert split_host("a:b") is None and split_host("[::1") is None and split_host("") is None


def test_foreign_origin_is_refused_403(tmp_path):
    """A request carrying an Origin not configured gets 403; a configured one passes."""
    root = make_root(tmp_path, http={"allowed_origins": ["https://ops.example"]})
    http = HttpClient(make_site(root))
    evil = [("Origin", "http://evil.example")]
    assert http.request("POST", "/rpc", CALL, evil).status == 403
    assert http.request("GET", "/metrics", headers=evil).status == 403
    assert http.request("POST", "/rpc", CALL, [("Origin", "null")]).status == 403
    assert http.request("POST", "/rpc", CALL, [("Origin", "https://OPS.example/")]).status == 200
    assert stats(root)["http_refused_origin"] == 3


def test_two_gigabyte_content_length_is_refused_from_the_headers(tmp_path):
    """413 is answered to the headers alone and the connection closed: no body is
    read and no temporary file is made (twisted.web spools bodies over 100 KB)."""
    root = make_root(tmp_path)
    channel, transport, _ = connect(make_site(root))
    channel.dataReceived(head(content_type="application/json", content_length=2 * 1024 ** 3))
    response = HttpResponse(transport.value())
    assert response.status == 413 and response.headers["connection"] == "close"
    assert transport.disconnecting
    assert channel.requests[-1].content is None  # gotLength never ran: nothing to spool into
    channel.dataReceived(b"x" * 65536)  # the body the client sends anyway is ignored
    assert channel.requests[-1].content is None
    assert stats(root)["http_refused_body_size"] == 1


def test_large_body_without_the_token_is_refused_401_before_the_body(tmp_path):
    """With a token set, a request without it is refused from its headers too."""
    root = make_root(tmp_path, http={"token_sha256": token_digest("secret-token")})
    channel, transport, _ = connect(make_site(root))
    channel.dataReceived(head(content_type="application/json", content_length=2 * 1024 ** 3))
    response = HttpResponse(transport.value())
    assert response.status == 401 and transport.disconnecting
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert channel.requests[-1].content is None


def test_chunked_body_is_cut_off_at_the_limit(tmp_path):
    """A chunked body gets 413 as soon as it passes http.max_body_size; no more is kept."""
    root = make_root(tmp_path, http={"max_body_size": 1000})
    channel, transport, _ = connect(make_site(root))
    channel.dataReceived(head(content_type="application/json", transfer_encoding="chunked"))
    chunk = b"%x\r\n%s\r\n" % (600, b" " * 600)
    channel.dataReceived(chunk)
    assert transport.value() == b""
    channel.dataReceived(chunk * 50)
    assert HttpResponse(transport.value()).status == 413 and transport.disconnecting
    assert channel.requests[-1].content.tell() <= 1000


def test_expect_continue_is_not_granted_to_a_refused_request(tmp_path):
    """curl's Expect: 100-continue gets the refusal, never "100 Continue"."""
    channel, transport, _ = connect(make_site(make_root(tmp_path)))
    channel.dataReceived(head(content_type="text/plain", content_length=200000,
                              expect="100-continue"))
    assert transport.value().startswith(b"HTTP/1.1 415 ")


# -- HTTP: JSON the parser must not choke on ------------------------------------------


def test_deeply_nested_json_is_400_parse_error_without_traceback(tmp_path, logged):
    """100,000 nested arrays get 400 with -32700, and nothing is logged with a traceback."""
    root = make_root(tmp_path)
    http = HttpClient(make_site(root))
    response = http.request("POST", "/rpc", b"[" * 100000 + b"]" * 100000)
    assert response.status == 400
    out = json.loads(response.body)
    assert out["error"]["code"] == -32700 and "nesting" in out["error"]["data"]
    assert failures(logged) == []
    assert stats(root)["http_rpc_client_errors"] == 1


def test_nesting_is_bounded_at_max_json_depth(tmp_path):
    """32 levels are served; 33 are refused (http.max_json_depth)."""
    http = HttpClient(make_site(make_root(tmp_path)))

    def nested(levels):  # the request object is level 1, params level 2
        params = "[" * (levels - 1) + "]" * (levels - 1)
        return f'{{"jsonrpc": "2.0", "method": "core.version", "params": {params}, "id": 1}}'

    assert http.request("POST", "/rpc", nested(32).encode()).status == 200
    assert http.request("POST", "/rpc", nested(33).encode()).status == 400


def test_non_json_constants_and_unconvertible_numbers_are_client_errors(tmp_path, logged):
    """NaN/Infinity are not JSON (400); a float too large for an int parameter is
    -32602: neither is logged with a traceback."""
    root = make_root(tmp_path)

    @root.registry.command("test.count")
    def count(n: int) -> int:
        """Echo an int."""
        return n

    http = HttpClient(make_site(root))
    body = b'{"jsonrpc": "2.0", "method": "test.count", "params": [Infinity], "id": 1}'
    assert http.request("POST", "/rpc", body).status == 400
    body = b'{"jsonrpc": "2.0", "method": "test.count", "params": [1e400], "id": 1}'
    out = json.loads(http.request("POST", "/rpc", body).body)
    assert out["error"]["code"] == -32602
    assert failures(logged) == []


# -- HTTP: timeouts and the connection cap ---------------------------------------------


def test_slow_request_gets_408_after_request_timeout(tmp_path):
    """A client trickling its headers is cut off after http.request_timeout."""
    root = make_root(tmp_path, http={"request_timeout": 2})
    channel, transport, clock = connect(make_site(root))
    for _ in range(3):
        channel.dataReceived(b"POST /rpc HTTP/1.1\r\nX-Slow: 1\r\n"[:10])
        clock.advance(0.6)
    assert transport.value() == b""
    clock.advance(0.3)
    assert HttpResponse(transport.value()).status == 408 and transport.disconnecting
    assert stats(root)["http_request_timeouts"] == 1


def test_kept_alive_connection_serves_requests_and_closes_when_idle(tmp_path):
    """The deadline restarts per request; an idle kept-alive connection is closed quietly."""
    root = make_root(tmp_path, http={"request_timeout": 2, "idle_timeout": 5})
    channel, transport, clock = connect(make_site(root))
    request = head(content_type="application/json", content_length=len(CALL)) + CALL
    channel.dataReceived(request)
    clock.advance(1.5)
    channel.dataReceived(request)
    assert transport.value().count(b"HTTP/1.1 200 OK") == 2
    clock.advance(4.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting
    assert stats(root)["http_idle_timeouts"] == 1 and stats(root)["http_request_timeouts"] == 0


def test_connections_past_the_cap_are_refused_at_accept(tmp_path, logged):
    """Past http.max_connections buildProtocol returns None (the socket is closed),
    counted each time and logged once."""
    root = make_root(tmp_path, http={"max_connections": 3})
    site = make_site(root)
    open_ = [connect(site) for _ in range(3)]
    addr = IPv4Address("TCP", "127.0.0.1", 1)
    assert [site.buildProtocol(addr) for _ in range(5)] == [None] * 5
    assert stats(root)["http_refused_connections"] == 5
    assert len(warnings(logged, "http.max_connections")) == 1
    channel, transport, _ = open_[0]
    channel.connectionLost(None)
    assert site.buildProtocol(addr) is not None


# -- the alarm shared by both listeners ------------------------------------------------


def test_limit_alarm_counts_every_event_and_logs_once_per_interval(logged):
    """A flood of refusals is one warning, then one per interval with the count."""
    clock, counters = Clock(), Counter()
    alarm = LimitAlarm(counters, "x_refused", "refused from {peer}", clock, interval=60)
    for _ in range(1000):
        alarm.trip(peer="p")
    assert counters["x_refused"] == 1000
    assert len(warnings(logged, "refused from")) == 1
    clock.advance(61)
    alarm.trip(peer="p")
    lines = warnings(logged, "refused from")
    assert len(lines) == 2
    summary = [formatEvent(e) for e in warnings(logged, "more like this")]
    assert len(summary) == 1 and "refused from p (999 more like this" in summary[0]


def test_connection_cap_admits_again_when_one_closes():
    """The cap follows connections opened and closed."""
    cap = ConnectionCap(2, LimitAlarm(Counter(), "c", "full", Clock()))
    for _ in range(2):
        assert cap.admit()
        cap.opened()
    assert not cap.admit()
    cap.closed()
    assert cap.admit()


# -- SSH console: connection cap and login timeout -------------------------------------


def ssh_factory(tmp_path, root, clock, **kwargs):
    """A started ConsoleFactory on ``clock`` counting into ``root``'s core stats."""
    portal = make_portal(root, str(tmp_path / "authorized_keys"))
    factory = ConsoleFactory(portal, keys.Key(ed25519.Ed25519PrivateKey.generate()),
                             clock=clock, stats=stats(root), **kwargs)
    factory.startFactory()
    return factory


def ssh_connect(factory):
    """(transport protocol, StringTransport) of a new connection, or (None, None) if refused."""
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    if proto is None:
        return None, None
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    proto.makeConnection(transport)
    return proto, transport


def test_ssh_connections_past_the_cap_are_refused_at_accept(tmp_path, logged):
    """Past console.max_connections buildProtocol returns None, counted and logged once."""
    root = make_root(tmp_path)
    factory = ssh_factory(tmp_path, root, Clock(), max_connections=3)
    held = [ssh_connect(factory) for _ in range(3)]
    assert all(proto is not None for proto, _ in held)
    assert [ssh_connect(factory)[0] for _ in range(4)] == [None] * 4
    assert stats(root)["console_refused_connections"] == 4
    assert len(warnings(logged, "console.max_connections")) == 1
    proto, transport = held[0]
    proto.connectionLost(None)
    assert ssh_connect(factory)[0] is not None


def test_ssh_connection_not_logged_in_is_closed_after_login_timeout(tmp_path, logged):
    """A connection that never authenticates is disconnected after console.login_timeout
    (Twisted's default is 10 hours), and the place is given back."""
    root = make_root(tmp_path)
    clock = Clock()
    factory = ssh_factory(tmp_path, root, clock, max_connections=1, login_timeout=3)
    proto, transport = ssh_connect(factory)
    assert transport.value().startswith(b"SSH-2.0-")
    clock.advance(2.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting
    assert stats(root)["console_login_timeouts"] == 1
    proto.connectionLost(None)
    assert ssh_connect(factory)[0] is not None
    # conch's own per-connection lines ("connection lost", moduli) are not at info
    assert not [e for e in logged if e.get("log_format") == "connection lost"]


def test_ssh_login_cancels_the_login_timeout(tmp_path):
    """Once the ssh-connection service starts (login done) the deadline is gone."""
    from twisted.conch.ssh.connection import SSHConnection
    clock = Clock()
    factory = ssh_factory(tmp_path, make_root(tmp_path), clock, login_timeout=3)
    proto, transport = ssh_connect(factory)
    proto.setService(SSHConnection())
    clock.advance(100)
    assert not transport.disconnecting
