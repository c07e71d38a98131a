"""The presence server through real sockets: sipdisp started as an operator
starts it, with the built-in route and presence.enabled, and SIPp as the
publisher and the watchers over UDP and TCP: PUBLISH + refresh + modify +
412 + remove; SUBSCRIBE, 200 and NOTIFY, refresh, unsubscribe with the
final NOTIFY, 481 in the ended dialog; a watcher answering its NOTIFY 481
loses its subscription. The tables are read back with the database's own
client on SQLite, PostgreSQL and MariaDB (SIPDISP_TEST_PG_URL,
SIPDISP_TEST_MYSQL_URL; skipped when they cannot be reached). Bad input (malformed PIDF, a 1 MB body, an unknown event, a
SUBSCRIBE flood from one source) gets clear replies and stores nothing.
Every wait is bounded."""

import os
import subprocess
import sys
import uuid

import pytest

from tests.support.calls import rpc, wait_until
from tests.support.peers import UdpEndpoint, answer
from tests.support.processes import ROOT, Sipdisp, Sipp, free_port, sipp_available

DOMAIN = "example.com"

pytestmark = pytest.mark.skipif(not sipp_available(), reason="sipp is not installed")


def _url(backend, tmp_path):
    from sipdisp.storage.testing import MYSQL_URL, PG_URL
    return {"sqlite": f"sqlite:///{tmp_path / 'presence.db'}", "postgres": PG_URL,
            "mysql": MYSQL_URL}[backend]


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def db(request, tmp_path):
    """A database with sipdisp's tables (``db init``); a server that cannot be reached is skipped."""
    from sipdisp.storage.testing import Unreachable, server_for
    url = _url(request.param, tmp_path)
    srv = server_for(url)
    if request.param != "sqlite":
        try:
            srv.check_reachable()
        except Unreachable as exc:
            pytest.skip(str(exc))
    subprocess.run([sys.executable, "-m", "sipdisp.cli", "db", "init", url],
                   env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True, timeout=60,
                   stdout=subprocess.DEVNULL)
    return server_for(url)


def config(url, **presence):
    """sipdisp with the built-in route answering presence for example.com."""
    return {"storage": {"url": url}, "proxy": {"domains": [DOMAIN]},
            "presence": dict({"enabled": True}, **presence), "nat": {"natping_interval": 0},
            "console": {"enabled": False}, "flood": {"enabled": False}}


def pidf(user, note):
    """A PIDF document of ``user``@example.com."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<presence '
            f'xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{user}@{DOMAIN}"><tuple id="t">'
            f'<status><basic>open</basic></status><note>{note}</note></tuple>'
            f'</presence>').encode()


def publish(ep, proxy_port, user, body, event="presence", ctype="application/pidf+xml",
            expires=600):
    """Send one PUBLISH from ``ep``; its final response."""
    n = uuid.uuid4().hex[:10]
    lines = [f"PUBLISH sip:{user}@{DOMAIN} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:{ep.port};branch=z9hG4bK{n};rport",
             f"From: <sip:{user}@{DOMAIN}>;tag={n}", f"To: <sip:{user}@{DOMAIN}>",
             f"Call-ID: pub-{n}@127.0.0.1", "CSeq: 1 PUBLISH", "Max-Forwards: 70",
             f"Expires: {expires}"]
    if event:
        lines.append(f"Event: {event}")
    if body:
        lines.append(f"Content-Type: {ctype}")
    lines.append(f"Content-Length: {len(body)}")
    ep.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body, proxy_port)
    return ep.recv(timeout=10, match=lambda m: not m.is_request and m.status >= 200)


def subscribe(ep, proxy_port, user, watcher="dave", event="presence", expires=600):
    """Send one initial SUBSCRIBE from ``ep``; its final response."""
    n = uuid.uuid4().hex[:10]
    lines = [f"SUBSCRIBE sip:{user}@{DOMAIN} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:{ep.port};branch=z9hG4bK{n};rport",
             f"From: <sip:{watcher}@{DOMAIN}>;tag={n}", f"To: <sip:{user}@{DOMAIN}>",
             f"Call-ID: sub-{n}@127.0.0.1", "CSeq: 1 SUBSCRIBE", "Max-Forwards: 70",
             f"Contact: <sip:{watcher}@127.0.0.1:{ep.port}>", f"Expires: {expires}"]
    if event:
        lines.append(f"Event: {event}")
    ep.send(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode(), proxy_port)
    return ep.recv(timeout=10, match=lambda m: not m.is_request and m.status >= 200)


def run_sipp(tmp_path, name, scenario, proxy, transport, user):
    """Run one SIPp scenario against sipdisp (one call, bounded); asserts it succeeded."""
    mode = {"udp": "u1", "tcp": "t1"}[transport]
    sipp = Sipp(tmp_path, name, scenario, free_port(socket_kind(transport)), mode,
                target=f"127.0.0.1:{proxy.port(transport)}",
                extra=["-s", user, "-key", "domain", DOMAIN, "-m", 1, "-timeout", 30,
                       "-timeout_error"]).start()
    rc = sipp.wait(60)
    stats = sipp.stats()
    assert rc == 0 and stats["ok"] == 1 and stats["failed"] == 0, (
        rc, stats, sipp.errors()[-3000:], sipp.out_file.read_text()[-2000:])


def socket_kind(transport):
    import socket
    return socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_publish_and_subscribe_over_udp_and_tcp(tmp_path, db, transport):
    """SIPp publishes (initial, refresh, modify, 412, remove) and watches (200 +
    NOTIFY with the published PIDF, refresh, unsubscribe with the final
    NOTIFY, 481 after it); the presentity and active_watchers rows follow."""
    bob = f"bob{uuid.uuid4().hex[:8]}"
    ep = UdpEndpoint()
    try:
        with Sipdisp(tmp_path, config(db.url)) as proxy:
            port = proxy.port("udp")
            assert wait_until(lambda: _db_up(proxy), 20)
            run_sipp(tmp_path, "publisher", "presence_publish_uac.xml", proxy, transport, bob)
            assert wait_until(lambda: _count(db, "presentity", bob) == 0, 10)
            stats = rpc(proxy, "presence.stats")
            assert (stats["publish_initial"], stats["publish_refresh"], stats["publish_modify"],
                    stats["publish_remove"]) == (1, 1, 1, 1)

            ready = publish(ep, port, bob, pidf(bob, "ready"))
            assert ready.status == 200 and ready.get("sip-etag")
            assert wait_until(lambda: _count(db, "presentity", bob) == 1, 10)
            run_sipp(tmp_path, "watcher", "presence_subscribe_uac.xml", proxy, transport, bob)
            assert rpc(proxy, "presence.watchers", f"sip:{bob}@{DOMAIN}") == []
            assert wait_until(lambda: _watchers(db, bob) == 0, 10)
            stats = rpc(proxy, "presence.stats")
            assert stats["subscribe_new"] == 1 and stats["subscribe_refreshed"] == 1
            assert stats["subscribe_ended"] == 1 and stats["subscribe_unknown"] == 1
            assert stats["notify_sent"] == 3
            log = proxy.log_text()
    finally:
        ep.close()
        _cleanup(db, bob)
    assert "Traceback" not in log


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_watcher_answering_481_loses_its_subscription(tmp_path, transport):
    """SIPp answers the first NOTIFY 481: the subscription is gone (481 to its refresh,
    presence.watchers empty, notify_failed counted)."""
    bob = f"bob{uuid.uuid4().hex[:8]}"
    with Sipdisp(tmp_path, config(f"sqlite:///{tmp_path / 'p.db'}")) as proxy:
        run_sipp(tmp_path, "forgetful", "presence_notify_481_uac.xml", proxy, transport, bob)
        assert rpc(proxy, "presence.watchers") == []
        stats = rpc(proxy, "presence.stats")
        assert stats["notify_failed"] == 1 and stats["subscription_failed"] == 1
        log = proxy.log_text()
    assert "Traceback" not in log and "answered 481" in log


def test_stored_rows_have_kamailios_columns_on_postgres(tmp_path):
    """On PostgreSQL a live subscription is an active_watchers row with the dialog's
    identity and the last NOTIFY's CSeq, and a publication a presentity row."""
    from sipdisp.storage.testing import PG_URL
    from tests.support.cluster import postgres_with_schema
    srv = postgres_with_schema()
    bob = f"bob{uuid.uuid4().hex[:8]}"
    ep = UdpEndpoint()
    try:
        with Sipdisp(tmp_path, config(PG_URL)) as proxy:
            port = proxy.port("udp")
            assert wait_until(lambda: _db_up(proxy), 20)
            assert publish(ep, port, bob, pidf(bob, "stored")).status == 200
            ok = subscribe(ep, port, bob)
            assert ok.status == 200
            notify = ep.recv(timeout=10, match=lambda m: m.is_request and m.method == "NOTIFY")
            ep.send(answer(notify, 200, "OK").encode(), port)
            assert wait_until(lambda: _watchers(srv, bob) == 1, 10)
            assert wait_until(lambda: srv.execute(
                "SELECT local_cseq FROM active_watchers WHERE presentity_uri = "
                f"'sip:{bob}@{DOMAIN}'")[0][0] == 1, 10)
            [row] = srv.execute(
                "SELECT callid, from_tag, to_tag, watcher_username, watcher_domain, event, "
                "status, contact, expires - updated FROM active_watchers WHERE "
                f"presentity_uri = 'sip:{bob}@{DOMAIN}'")
            assert row[:8] == (notify.call_id, notify.to_tag, notify.from_tag, "dave", DOMAIN,
                               "presence", 1, f"sip:dave@127.0.0.1:{ep.port}")
            assert 598 <= row[8] <= 600
            [pres] = srv.execute(f"SELECT event, sender, body FROM presentity WHERE "
                                 f"username = '{bob}'")
            assert pres[0] == "presence" and b"stored" in bytes(pres[2])
            log = proxy.log_text()
    finally:
        ep.close()
        _cleanup(srv, bob)
    assert "Traceback" not in log


def test_bad_input_gets_clear_replies_and_stores_nothing(tmp_path):
    """Malformed PIDF 400, a 1 MB body 413 (or the parser's own limit), an unknown
    event 489, a missing Event on SUBSCRIBE 400, and a SUBSCRIBE flood from one
    source capped with 503 + Retry-After: nothing stored past the caps, sipdisp serving."""
    bob = f"bob{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    ep = UdpEndpoint()
    try:
        with Sipdisp(tmp_path, config(url, max_subscriptions_per_source=20)) as proxy:
            port = proxy.port("udp")
            bad = publish(ep, port, bob, b"<presence><tuple id='x'>")
            assert bad.status == 400 and bad.reason
            assert publish(ep, port, bob, pidf(bob, "x"), event="foo").status == 489
            assert subscribe(ep, port, bob, event="").status == 400
            assert subscribe(ep, port, bob, event="bogus").status == 489
            flood = [subscribe(ep, port, bob, watcher=f"w{i}") for i in range(25)]
            codes = [r.status for r in flood]
            assert codes[:20] == [200] * 20 and set(codes[20:]) == {503}
            assert all(r.get("retry-after") == "30" for r in flood[20:])
            stats = rpc(proxy, "presence.stats")
            assert stats["subscriptions"] == 20 and stats["presentities"] == 0
            assert stats["limit_max_subscriptions_per_source"] == 5
            assert len(rpc(proxy, "presence.watchers")) == 20
            metrics = _metrics(proxy)
            assert 'sipdisp_presence_subscriptions{event="presence"} 20' in metrics
            assert "sipdisp_presence_notify_sent_total 20" in metrics
            assert 'sipdisp_core_events_total{event="presence_limit_source"} 5' in metrics
            assert publish(ep, port, bob, pidf(bob, "still serving")).status == 200
            log = proxy.log_text()
        # 1 MB over TCP (a UDP datagram cannot carry it), with sip.max_message_size
        # raised so the parser lets it through: presence's own 413, never stored
        assert _tcp_publish_1mb(tmp_path, bob) == 413
    finally:
        ep.close()
    assert "Traceback" not in log
    assert "presence.max_subscriptions_per_source reached" in log


def _tcp_publish_1mb(tmp_path, user):
    import socket
    (tmp_path / "big").mkdir()
    cfg = config(f"sqlite:///{tmp_path / 'big.db'}")
    cfg["sip"] = {"max_message_size": 2 << 20}
    cfg["connections"] = {"max_write_buffer": 4 << 20}
    with Sipdisp(tmp_path / "big", cfg) as proxy:
        body = b"<a>" + b"x" * (1 << 20) + b"</a>"
        head = (f"PUBLISH sip:{user}@{DOMAIN} SIP/2.0\r\n"
                "Via: SIP/2.0/TCP 127.0.0.1:5099;branch=z9hG4bKbig1\r\n"
                f"From: <sip:{user}@{DOMAIN}>;tag=big\r\nTo: <sip:{user}@{DOMAIN}>\r\n"
                "Call-ID: big@127.0.0.1\r\nCSeq: 1 PUBLISH\r\nMax-Forwards: 70\r\n"
                "Event: presence\r\nContent-Type: application/pidf+xml\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        sock = socket.create_connection(("127.0.0.1", proxy.port("tcp")), timeout=10)
        try:
            try:
                sock.sendall(head + body)
            except OSError:
                pass  # the proxy may close the connection once the frame is too big
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
        finally:
            sock.close()
        stats = rpc(proxy, "presence.stats")
        assert stats.get("publish_initial", 0) == 0 and stats["presentities"] == 0
        assert stats["limit_max_body_size"] == 1
    return int(data.split(b" ", 2)[1]) if data else 0


def _metrics(proxy):
    import urllib.request
    url = f"http://127.0.0.1:{proxy.port('http')}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode().splitlines()


def _db_up(proxy):
    import urllib.request
    url = f"http://127.0.0.1:{proxy.port('http')}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return "sipdisp_db_up 1" in response.read().decode().splitlines()


def _count(srv, table, user):
    return srv.execute(f"SELECT COUNT(*) FROM {table} WHERE username = '{user}'")[0][0]


def _watchers(srv, user):
    return srv.execute("SELECT COUNT(*) FROM active_watchers WHERE presentity_uri = "
                       f"'sip:{user}@{DOMAIN}'")[0][0]


def _cleanup(srv, user):
    srv.execute(f"DELETE FROM presentity WHERE username = '{user}'")
    srv.execute(f"DELETE FROM active_watchers WHERE presentity_uri = 'sip:{user}@{DOMAIN}'")
