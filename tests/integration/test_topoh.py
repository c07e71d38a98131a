"""Topology hiding through a real sipdisp between a SIPp caller on 127.0.0.2
and a SIPp callee on 127.0.0.3 (the proxy on 127.0.0.1): the message traces
of both (``-trace_msg``) show no address of the other side in any header of
what each received, for the INVITE, 200 and ACK, a re-INVITE from each side
and a BYE from each side, over UDP and TCP; and a BYE after a restart
(dialog.db_mode 1, SQLite) still reaches the callee."""

import re
import sqlite3

import pytest

from tests.support.calls import rpc, wait_until
from tests.support.processes import Sipdisp, Sipp, free_port, sipp_available

pytestmark = pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed")

UAC_IP = "127.0.0.2"
UAS_IP = "127.0.0.3"

_BLOCK = re.compile(r"^-{20,}.*$", re.M)


def route(uas_port, transport):
    """The route: in-dialog requests of hidden calls first, INVITEs hidden
    and sent to the callee."""
    hop = f"sip:{UAS_IP}:{uas_port}" + (";transport=tcp" if transport == "tcp" else "")
    return {"request_route": [
        {"if": "has_totag", "then": [
            {"if": "topology_hiding_match", "then": ["t_relay", "exit"]},
            {"if": "loose_route", "then": ["t_relay", "exit"]},
            {"if": {"is_method": "ACK"}, "then": ["exit"]},
            {"sl_send_reply": [404, "Not here"]}, "exit"]},
        {"if": {"not": {"is_method": "INVITE"}},
         "then": [{"sl_send_reply": [405, "Method Not Allowed"]}, "exit"]},
        {"if": {"not": "topology_hiding"}, "then": [{"sl_send_reply": [500, "Not hidden"]}, "exit"]},
        {"set": {"$du": hop}},
        "t_relay",
    ]}


def sipp(tmp_path, name, scenario, ip, port, mode, target=None, extra=()):
    """A SIPp bound to ``ip`` (its own loopback address), tracing its messages."""
    trace = tmp_path / f"{name}.msg"
    peer = Sipp(tmp_path, name, scenario, port, mode, target=target,
                extra=["-cid_str", "%u-%p-topoh", "-trace_msg", "-message_file", trace, *extra])
    argv = peer.argv
    argv[argv.index("-i") + 1] = ip
    argv[argv.index("-mi") + 1] = ip
    peer.trace = trace
    return peer


def received(trace):
    """The header sections of every message a SIPp trace shows it received."""
    out = []
    for block in _BLOCK.split(trace.read_text()):
        block = block.strip("\n")
        first, _, rest = block.partition("\n")
        if "message received" not in first:
            continue
        head = rest.strip("\n").replace("\r\n", "\n").split("\n\n", 1)[0]
        out.append(head)
    return out


def first_lines(messages):
    return [m.split("\n", 1)[0] for m in messages]


def assert_no_leak(messages, address, who):
    for head in messages:
        assert address not in head, f"{who} saw {address}:\n{head}"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("hangup", ["caller", "callee"])
def test_neither_side_sees_the_others_addresses(tmp_path, transport, hangup):
    """One call with a re-INVITE from each side and a BYE from ``hangup``:
    both SIPp parties complete it, the callee's trace holds no 127.0.0.2 in
    any header, the caller's no 127.0.0.3, and the callee got only the
    proxy's Via on every request."""
    mode = "u1" if transport == "udp" else "t1"
    uas_port, uac_port = free_port(), free_port()
    uac_scenario, uas_scenario = (("topoh_uac.xml", "topoh_uas.xml") if hangup == "caller"
                                  else ("topoh_uac_bye_in.xml", "topoh_uas_bye_out.xml"))
    cfg = {"console": {"enabled": False}, "routing": route(uas_port, transport)}
    with Sipdisp(tmp_path, cfg) as proxy:
        uas = sipp(tmp_path, "uas", uas_scenario, UAS_IP, uas_port, mode,
                   extra=["-m", 1, "-timeout", 30, "-timeout_error"]).start()
        uac = sipp(tmp_path, "uac", uac_scenario, UAC_IP, uac_port, mode,
                   target=f"127.0.0.1:{proxy.port(transport)}",
                   extra=["-m", 1, "-timeout", 30, "-timeout_error"]).start()
        try:
            uac_rc = uac.wait(40)
            uas_rc = uas.wait(40)
        finally:
            uac.stop()
            uas.stop()
        log = proxy.log_text()
    assert uac_rc == 0 and uac.stats()["ok"] == 1, (uac.errors()[-2000:], log[-3000:])
    assert uas_rc == 0 and uas.stats()["ok"] == 1, (uas.errors()[-2000:], log[-3000:])
    at_callee = received(uas.trace)
    at_caller = received(caller_trace := uac.trace)
    requests = [m for m in at_callee if not m.startswith("SIP/2.0")]
    methods = [line.split()[0] for line in first_lines(requests)]
    expected = ["INVITE", "ACK", "INVITE", "ACK"] + (["BYE"] if hangup == "caller" else [])
    assert methods == expected, first_lines(at_callee)
    caller_methods = [line.split()[0] for line in first_lines(at_caller)
                      if not line.startswith("SIP/2.0")]
    assert caller_methods == ["INVITE", "ACK"] + (["BYE"] if hangup == "callee" else []), \
        first_lines(at_caller)
    assert_no_leak(at_callee, UAC_IP, "the callee")
    assert_no_leak(at_caller, UAS_IP, "the caller")
    for head in requests:
        assert len(re.findall(r"^Via:", head, re.M | re.I)) == 1, head
        assert "Record-Route" not in head
    assert caller_trace.exists() and "Traceback" not in log


def test_a_bye_after_a_restart_reaches_the_callee(tmp_path):
    """dialog.db_mode 1 on SQLite: the call is answered, sipdisp is stopped
    and started again on the same ports and node secret, and the caller's
    BYE (sent to the Contact of the first process) reaches the callee,
    still hidden."""
    uas_port, uac_port = free_port(), free_port()
    proxy_port = free_port()
    cfg = {"console": {"enabled": False}, "routing": route(uas_port, "udp"),
           "listen": {"udp": [f"127.0.0.1:{proxy_port}"], "tcp": [], "ws": []},
           "dialog": {"db_mode": 1}}
    uas = sipp(tmp_path, "uas", "uas.xml", UAS_IP, uas_port, "u1",
               extra=["-m", 1, "-timeout", 60, "-timeout_error"]).start()
    uac = sipp(tmp_path, "uac", "topoh_uac_restart.xml", UAC_IP, uac_port, "u1",
               target=f"127.0.0.1:{proxy_port}",
               extra=["-m", 1, "-d", 4000, "-timeout", 60, "-timeout_error"])
    first = Sipdisp(tmp_path, cfg).start()
    second = None
    db = tmp_path / "sipdisp.db"

    def stored():
        with sqlite3.connect(db) as conn:
            try:
                return conn.execute("SELECT count(*) FROM dialog_vars "
                                    "WHERE dialog_key = 'th_flags'").fetchone()[0]
            except sqlite3.OperationalError:
                return 0
    try:
        # the embedded database's tables are created as sipdisp starts: the
        # dialog table read once means they are there for the call's rows
        assert wait_until(lambda: "restored 0 answered call" in first.log_text(), 15)
        uac.start()
        assert wait_until(lambda: stored() == 1, 15), first.log_text()[-3000:]
        first.stop()
        second = Sipdisp(tmp_path, cfg).start()
        assert uac.wait(60) == 0, (uac.errors()[-2000:], second.log_text()[-3000:])
        assert uas.wait(30) == 0, uas.errors()[-2000:]
        log = second.log_text()
        # the second process turned the BYE around, from the restored dialog
        counters = rpc(second, "stats.get", "topoh")
        assert counters.get("topoh_matched") == 1, counters
    finally:
        uac.stop()
        uas.stop()
        first.stop()
        if second is not None:
            second.stop()
    assert "restored 1 answered call" in log
    at_callee = received(uas.trace)
    assert [line.split()[0] for line in first_lines(at_callee)] == ["INVITE", "ACK", "BYE"]
    assert_no_leak(at_callee, UAC_IP, "the callee")
    assert_no_leak(received(uac.trace), UAS_IP, "the caller")
    assert stored() == 0  # the BYE ended the call, its rows are gone


VIA_HOST = "th7ws0caller.invalid"


@pytest.mark.parametrize("hangup", ["caller", "callee"])
def test_a_websocket_caller_and_a_udp_callee_see_nothing_of_each_other(tmp_path, hangup):
    """A caller over WebSocket (Node ws) calls SIPp on 127.0.0.3 over UDP:
    the WebSocket side gets replies with its own Via only and the proxy's
    ws Contact; its ACK and BYE to that Contact reach the callee hidden, or
    the callee's BYE comes back over the caller's own connection with the
    proxy's Via only."""
    from tests.support.peers import Dialog, WsPeer, answer, ensure_node_modules, node_available
    if not node_available():
        pytest.skip("node/npm are not installed; .ci/run installs them")
    ensure_node_modules()
    uas_port = free_port()
    cfg = {"console": {"enabled": False}, "routing": route(uas_port, "udp")}
    scenario = "uas.xml" if hangup == "caller" else "uas_sends_bye.xml"
    with Sipdisp(tmp_path, cfg) as proxy:
        uas = sipp(tmp_path, "uas", scenario, UAS_IP, uas_port, "u1",
                   extra=["-m", 1, "-timeout", 30, "-timeout_error"]).start()
        try:
            with WsPeer(f"ws://127.0.0.1:{proxy.port('ws')}") as peer:
                peer.open(timeout=10)
                dialog = Dialog("WS", VIA_HOST, f"sip:alice@{VIA_HOST};transport=ws",
                                "sip:bob@example.com")
                peer.send(dialog.invite())
                got = []
                while not got or got[-1].status < 200:
                    got.append(peer.recv_sip(timeout=10, match=lambda m: not m.is_request))
                final = got[-1]
                assert final.status == 200, [m.status for m in got]
                for msg in got:
                    assert UAS_IP not in str(msg.headers)
                    assert len(msg.values("via")) == 1 and VIA_HOST in msg.values("via")[0]
                contact = final.addresses("contact")[0].uri
                assert (contact.host, contact.port, contact.param("transport")) == (
                    "127.0.0.1", proxy.port("ws"), "ws")
                assert not final.has("record-route")
                dialog.learn(final)
                assert dialog.route_set == []
                peer.send(dialog.ack())
                if hangup == "caller":
                    peer.send(dialog.bye())
                    ok = peer.recv_sip(timeout=10, match=lambda m: not m.is_request
                                       and m.cseq_method == "BYE")
                    assert ok.status == 200 and UAS_IP not in str(ok.headers)
                else:
                    bye = peer.recv_sip(timeout=10, match=lambda m: m.is_request)
                    assert bye.method == "BYE" and bye.uri.host == VIA_HOST
                    assert len(bye.values("via")) == 1 and not bye.has("route")
                    assert bye.values("via")[0].startswith(
                        f"SIP/2.0/WS 127.0.0.1:{proxy.port('ws')};")
                    assert UAS_IP not in str(bye.headers)
                    peer.send(answer(bye, 200, "OK"))
            assert uas.wait(15) == 0, uas.errors()[-2000:]
        finally:
            uas.stop()
        log = proxy.log_text()
    assert uas.stats()["ok"] == 1, uas.errors()[-2000:]
    at_callee = received(uas.trace)
    assert_no_leak(at_callee, VIA_HOST, "the callee")
    assert_no_leak(at_callee, "transport=ws", "the callee")
    methods = [line.split()[0] for line in first_lines(at_callee) if not line.startswith("SIP")]
    assert methods == ["INVITE", "ACK"] + (["BYE"] if hangup == "caller" else [])
    assert "Traceback" not in log


def test_a_prack_in_the_early_dialog_reaches_the_callee_hidden(tmp_path):
    """A reliable 183 (100rel): the caller's PRACK, sent to the 183's
    Contact, reaches the callee at its early Contact with nothing of the
    caller; the call then completes as usual."""
    uas_port, uac_port = free_port(), free_port()
    cfg = {"console": {"enabled": False}, "routing": route(uas_port, "udp")}
    with Sipdisp(tmp_path, cfg) as proxy:
        uas = sipp(tmp_path, "uas", "topoh_uas_prack.xml", UAS_IP, uas_port, "u1",
                   extra=["-m", 1, "-timeout", 30, "-timeout_error"]).start()
        uac = sipp(tmp_path, "uac", "topoh_uac_prack.xml", UAC_IP, uac_port, "u1",
                   target=f"127.0.0.1:{proxy.port('udp')}",
                   extra=["-m", 1, "-timeout", 30, "-timeout_error"]).start()
        try:
            uac_rc = uac.wait(40)
            uas_rc = uas.wait(40)
        finally:
            uac.stop()
            uas.stop()
        log = proxy.log_text()
    assert uac_rc == 0 and uas_rc == 0, (uac.errors()[-2000:], uas.errors()[-2000:], log[-3000:])
    at_callee = received(uas.trace)
    requests = [m for m in at_callee if not m.startswith("SIP/2.0")]
    methods = [line.split()[0] for line in first_lines(requests)]
    assert methods == ["INVITE", "PRACK", "ACK", "BYE"], methods
    assert first_lines(requests)[1].split()[1].startswith(f"sip:bob-early@{UAS_IP}:{uas_port}")
    assert_no_leak(at_callee, UAC_IP, "the callee")
    assert_no_leak(received(uac.trace), UAS_IP, "the caller")
    assert "Traceback" not in log
