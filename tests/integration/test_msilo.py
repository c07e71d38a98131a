"""msilo through real sockets: sipdisp started as an operator starts it, with
the built-in route and msilo.enabled, on SQLite, PostgreSQL and MariaDB. A
MESSAGE to a user with no contact is answered 202 and lands in the silo
table (read back with the database's own client); when she registers from
her UDP socket the MESSAGE reaches her, and her 200 deletes the row.

PostgreSQL and MariaDB come from SIPDISP_TEST_PG_URL / SIPDISP_TEST_MYSQL_URL
(scripts/ci-databases.sh); one that cannot be reached is skipped. Every wait
is bounded."""

import os
import subprocess
import sys
import urllib.request

import pytest

from tests.support.calls import wait_until
from tests.support.peers import UdpEndpoint, answer
from tests.support.processes import ROOT, Sipdisp


def _url(backend, tmp_path):
    from sipdisp.storage.testing import MYSQL_URL, PG_URL
    return {"sqlite": f"sqlite:///{tmp_path / 'msilo.db'}", "postgres": PG_URL,
            "mysql": MYSQL_URL}[backend]


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def server(request, tmp_path):
    """The database of one backend with sipdisp's tables and an empty silo table."""
    from sipdisp.storage.testing import Unreachable, server_for
    url = _url(request.param, tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if request.param != "sqlite":
        srv = server_for(url)
        try:
            srv.check_reachable()
        except Unreachable as exc:
            pytest.skip(str(exc))
    subprocess.run([sys.executable, "-m", "sipdisp.cli", "db", "init", url], env=env,
                   check=True, timeout=60, stdout=subprocess.DEVNULL)
    srv = server_for(url)
    srv.execute("DELETE FROM silo")
    srv.execute("DELETE FROM location")
    return srv


def db_up(proxy):
    """True once sipdisp's /metrics says its database is connected."""
    url = f"http://127.0.0.1:{proxy.port('http')}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return "sipdisp_db_up 1" in response.read().decode().splitlines()


def message(port, proxy_port, body):
    """A MESSAGE from alice (at 127.0.0.1:``port``) to bob@example.com, as bytes."""
    raw = body.encode()
    return ("\r\n".join([
        "MESSAGE sip:bob@example.com SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKmsilo{port};rport",
        "From: <sip:alice@example.com>;tag=al1", "To: <sip:bob@example.com>",
        f"Call-ID: msilo-it-{port}@127.0.0.1", "CSeq: 1 MESSAGE", "Max-Forwards: 70",
        "Content-Type: text/plain", f"Content-Length: {len(raw)}", "", ""]).encode() + raw)


def register(port):
    """Bob's REGISTER from 127.0.0.1:``port``, as bytes."""
    return ("\r\n".join([
        "REGISTER sip:example.com SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKreg{port};rport",
        "From: <sip:bob@example.com>;tag=bo1", "To: <sip:bob@example.com>",
        f"Call-ID: reg-it-{port}@127.0.0.1", "CSeq: 1 REGISTER", "Max-Forwards: 70",
        f"Contact: <sip:bob@127.0.0.1:{port}>", "Expires: 600", "Content-Length: 0",
        "", ""]).encode())


def test_offline_message_is_stored_and_delivered_when_she_registers(tmp_path, server):
    """MESSAGE to offline bob: 202 and a silo row; bob registers: the MESSAGE reaches
    his socket with its body, and his 200 deletes the row."""
    config = {"storage": {"url": server.url}, "proxy": {"domains": ["example.com"]},
              "msilo": {"enabled": True}, "listen": {"tcp": [], "ws": []},
              "console": {"enabled": False}, "nat": {"natping_interval": 0},
              "dispatcher": {"list_file": str(tmp_path / "none.list")}}
    alice, bob = UdpEndpoint(), UdpEndpoint()
    try:
        with Sipdisp(tmp_path, config) as proxy:
            port = proxy.port("udp")
            # a read before the first connection completes fails (and m_store with it)
            assert wait_until(lambda: db_up(proxy), 20)
            alice.send(message(alice.port, port, "see you at 5"), port)
            resp = alice.recv(match=lambda m: not m.is_request and m.status >= 200)
            assert (resp.status, resp.reason) == (202, "Accepted")
            assert wait_until(lambda: server.execute("SELECT COUNT(*) FROM silo")[0][0] == 1, 10)
            [row] = server.execute("SELECT src_addr, dst_addr, username, domain, ctype, body, "
                                   "exp_time - inc_time FROM silo")
            assert row[:5] == ("sip:alice@example.com", "sip:bob@example.com", "bob",
                               "example.com", "text/plain")
            assert bytes(row[5]) == b"see you at 5" and row[6] == 259200

            bob.send(register(bob.port), port)
            ok = bob.recv(match=lambda m: not m.is_request)
            assert ok.status == 200
            delivered = bob.recv(match=lambda m: m.is_request and m.method == "MESSAGE")
            assert bytes(delivered.body) == b"see you at 5"
            assert "sip:alice@example.com" in delivered.get("from")
            assert server.execute("SELECT COUNT(*) FROM silo")[0][0] == 1   # not yet answered
            bob.send(answer(delivered, 200, "OK", to_tag="bob1").encode(), port)
            assert wait_until(lambda: server.execute("SELECT COUNT(*) FROM silo")[0][0] == 0, 10)
            log = proxy.log_text()
    finally:
        alice.close()
        bob.close()
    assert "Traceback" not in log
