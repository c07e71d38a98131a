"""drouting through a real twistd-started sipdisp and real UDP sockets, with
OpenSIPS' dr_* tables on SQLite, PostgreSQL and MariaDB: a ``+`` number
reaches gateway 1, which answers 503, and the call goes on to gateway 2;
``dr.number_routing`` and ``dr.gw_status`` answer, and ``dr.reload``
refuses a rule whose time recurrence cannot be evaluated.

Every wait has a deadline; the gateways and the caller are sockets of the test."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.support.calls import rpc
from tests.support.peers import UdpEndpoint, answer
from tests.support.processes import ROOT, Sipdisp

SOURCES = ["sqlite", "postgres", "mysql"]

ROUTE = {
    "request_route": [
        {"if": "has_totag", "then": [
            {"if": "loose_route", "then": ["t_relay", "exit"]},
            {"if": {"is_method": "ACK"}, "then": ["exit"]},
            {"sl_send_reply": [404, "Not here"]}, "exit"]},
        {"if": {"not": {"is_method": "INVITE"}},
         "then": [{"sl_send_reply": [405, "Method Not Allowed"]}, "exit"]},
        "record_route",
        {"if": {"match": ["$rU", "^\\+[1-9][0-9]+$"]}, "then": [
            {"if": {"not": {"do_routing": "0"}},
             "then": [{"send_reply": [500, "No PSTN Route found"]}, "exit"]},
            {"route": "relay"}]},
        {"send_reply": [404, "Not Found"]},
    ],
    "routes": {
        "relay": [
            {"t_on_failure": "missed_call"},
            {"if": {"not": "t_relay"}, "then": [{"send_reply": [500, "Internal Error"]}]},
            "exit"],
    },
    "failure_routes": {
        "missed_call": [
            {"if": "t_was_cancelled", "then": ["exit"]},
            {"if": {"t_check_status": "5[0-9][0-9]|408"},
             "then": [{"if": "use_next_gw", "then": [{"route": "relay"}]}]},
        ],
    },
}


def _url(source, tmp_path):
    from sipdisp.storage.testing import MYSQL_URL, PG_URL
    return {"sqlite": f"sqlite:///{tmp_path / 'sipdisp.db'}", "postgres": PG_URL,
            "mysql": MYSQL_URL}[source]


@pytest.fixture(params=SOURCES)
def url(request, tmp_path):
    """The database of the dr_* tables; server databases are skipped when unreachable."""
    from sipdisp.storage.testing import Unreachable, server_for
    url = _url(request.param, tmp_path)
    if request.param != "sqlite":
        try:
            server_for(url).check_reachable()
        except Unreachable as exc:
            pytest.skip(str(exc))
    return url


def fill_tables(url, gateway_ports, extra_rules=()):
    """``sipdisp db init`` the database, then OpenSIPS-style rows: gateways 1 and 2
    (strip 1; gateway 2 prefixes 00) and rule 1 for +49 over "1,2"."""
    from sipdisp.storage.testing import server_for
    server = server_for(url)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    statements = ["DELETE FROM dr_gateways", "DELETE FROM dr_rules", "DELETE FROM dr_carriers",
                  "DELETE FROM dr_groups"]
    for n, port in enumerate(gateway_ports, 1):
        prefix = "'00'" if n == 2 else "NULL"
        statements.append(
            "INSERT INTO dr_gateways (gwid, type, address, strip, pri_prefix, probe_mode, "
            f"state, description) VALUES ('{n}', 0, '127.0.0.1:{port}', 1, {prefix}, 0, 0, "
            f"'gateway {n}')")
    statements.append("INSERT INTO dr_rules (ruleid, groupid, prefix, timerec, priority, gwlist, "
                      "sort_alg, description) VALUES (1, '0', '+49', "
                      "'20240101T000000|P1D|daily', 0, '1,2', 'N', 'Germany')")
    statements += list(extra_rules)
    for attempt in range(3):  # the storage tests may drop the shared test tables meanwhile
        subprocess.run([sys.executable, "-m", "sipdisp.cli", "db", "init", url], env=env,
                       check=True, timeout=60, stdout=subprocess.DEVNULL)
        try:
            for sql in statements:
                server.execute(sql)
            return server
        except Exception:
            if attempt == 2:
                raise
            time.sleep(1.0)


def wait_for(proxy, text, timeout):
    """Poll the proxy's log until a line with ``text`` appears."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in proxy.log_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged within {timeout} s:\n{proxy.log_text()[-3000:]}")


def invite(ruri, caller):
    return (f"INVITE {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bKdr{time.monotonic_ns()}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:alice@sipdisp.test>;tag=drcaller\r\n"
            f"To: <{ruri}>\r\n"
            f"Call-ID: dr-{time.monotonic_ns()}@sipdisp.test\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:alice@127.0.0.1:{caller.port}>\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def rpc_error(proxy, method, *params):
    """The JSON-RPC error of a command that must fail."""
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params),
                       "id": 1}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{proxy.port('http')}/rpc", body,
                                 {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as response:
        return json.loads(response.read()).get("error")


def test_a_plus_number_fails_over_from_gateway_1_on_503_to_gateway_2(tmp_path, url):
    """gw1 gets the INVITE (user stripped), answers 503; gw2 gets it with its prefix and answers
    200, which reaches the caller; the dr.* commands see the same tables."""
    gw1, gw2, caller = UdpEndpoint(), UdpEndpoint(), UdpEndpoint()
    proxy = None
    try:
        server = fill_tables(url, [gw1.port, gw2.port])
        proxy = Sipdisp(tmp_path, {"routing": ROUTE, "storage": {"url": url},
                                   "drouting": {"enabled": True, "probing_interval": 0},
                                   "console": {"enabled": False}}).start()
        wait_for(proxy, "drouting: loaded 2 gateway(s), 0 carrier(s), 1 rule(s)", 20)
        port = proxy.port("udp")

        caller.send(invite("sip:+4930123@127.0.0.1", caller), port)
        first = gw1.recv(5, match=lambda m: m.is_request and m.method == "INVITE")
        assert first.uri.user == "4930123"
        gw1.send(answer(first, 503, "Service Unavailable").encode(), port)
        gw1.recv(5, match=lambda m: m.is_request and m.method == "ACK")
        second = gw2.recv(5, match=lambda m: m.is_request and m.method == "INVITE")
        assert second.uri.user == "004930123"
        assert second.call_id == first.call_id
        gw2.send(answer(second, 200, "OK", to_tag="gw2",
                        contact=f"sip:gw2@127.0.0.1:{gw2.port}").encode(), port)
        final = caller.recv(5, match=lambda m: not m.is_request and m.status >= 200)
        assert final.status == 200

        routing = rpc(proxy, "dr.number_routing", 0, "+4930123")
        assert routing["rule"]["ruleid"] == 1
        assert [g["user"] for g in routing["gateways"]] == ["4930123", "004930123"]
        assert {g["id"]: g["state"] for g in rpc(proxy, "dr.gw_status")} == \
            {"1": "active", "2": "active"}

        server.execute("INSERT INTO dr_rules (ruleid, groupid, prefix, timerec, priority, "
                       "gwlist, sort_alg) VALUES (9, '0', '+33', '20240101T0900|PT1H|daily', "
                       "0, '1', 'N')")
        error = rpc_error(proxy, "dr.reload")
        assert error is not None and "dr_rules ruleid 9: timerec cannot be evaluated" \
            in error["data"]
        assert rpc(proxy, "dr.number_routing", 0, "+4930123")["rule"]["ruleid"] == 1
    finally:
        for sock in (gw1, gw2, caller):
            sock.close()
        if proxy is not None:
            proxy.stop()
    assert "Traceback" not in proxy.log_text()
