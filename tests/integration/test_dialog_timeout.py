"""A dialog past its timeout is ended by sipdisp with a BYE to both SIPp
parties, and accounted: its CDR and the seed's "200 Dialog Timeout" record."""

import sqlite3
import time

import pytest

from tests.support.calls import LB_ROUTE, lb_loads, rpc, wait_until
from tests.support.processes import Sipdisp, Sipp, free_port, sipp_available

pytestmark = pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed")

TIMEOUT = 2.0


def test_dialog_past_its_timeout_gets_bye_to_both_parties(tmp_path):
    """With dialog.default_timeout 2 s, a call nobody hangs up gets a BYE on both
    sides after 2 s, both SIPp parties answer it, the load is released and the
    CDR's duration is the timeout."""
    node_port = free_port()
    cfg = {"console": {"enabled": False}, "http": {"listen": "127.0.0.1:0"},
           "routing": LB_ROUTE, "dialog": {"default_timeout": TIMEOUT},
           "load_balancer": {"destinations": [
               {"group": 1, "uri": f"sip:127.0.0.1:{node_port}", "resources": "pstn=5"}]}}
    with Sipdisp(tmp_path, cfg) as proxy:
        node = Sipp(tmp_path, "fs1", "uas.xml", node_port, "u1", extra=["-m", 1]).start()
        uac = Sipp(tmp_path, "uac", "dlg_timeout_uac.xml", free_port(), "u1",
                   target=f"127.0.0.1:{proxy.port('udp')}",
                   extra=["-s", "1000", "-m", 1, "-timeout", 30, "-timeout_error"]).start()
        try:
            assert wait_until(lambda: rpc(proxy, "dlg.stats")["active"] == 1, 5)
            answered = time.monotonic()
            listed = rpc(proxy, "dlg.list")
            assert uac.wait(15) == 0, uac.errors()[-1500:]
            hung_up = time.monotonic() - answered
            assert node.wait(10) == 0, node.errors()[-1500:]
            assert wait_until(lambda: rpc(proxy, "dlg.stats")["total"] == 0, 5)
            loads = lb_loads(proxy)
            counters = rpc(proxy, "dlg.stats")["counters"]
        finally:
            uac.stop()
            node.stop()
    assert listed[0]["state_name"] == "confirmed" and listed[0]["lifetime"] == TIMEOUT
    assert TIMEOUT - 0.5 <= hung_up <= TIMEOUT + 1.5, hung_up
    assert uac.stats()["ok"] == 1 and node.stats()["ok"] == 1
    assert set(loads.values()) == {0}
    assert counters["ended_timeout"] == 1 and counters["byes_sent"] == 2, counters
    db = sqlite3.connect(tmp_path / "sipdisp.db")
    cdrs = db.execute("SELECT duration, sip_code FROM cdrs").fetchall()
    acc = db.execute("SELECT method, sip_code, sip_reason FROM acc ORDER BY id").fetchall()
    assert len(cdrs) == 1 and abs(cdrs[0][0] - TIMEOUT) < 0.3 and cdrs[0][1] == "200", cdrs
    assert acc == [("INVITE", "200", "OK"), ("BYE", "200", "Dialog Timeout")], acc
    assert "timed out after 2 s; BYE to both parties" in proxy.log_text()
    assert "Traceback" not in proxy.log_text()
