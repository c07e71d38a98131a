"""Calls placed by SIPp through a real sipdisp to SIPp standing in for FreeSWITCH."""

import pytest

from tests.support.processes import Sipdisp, Sipp, free_port, sipp_available

pytestmark = pytest.mark.skipif(not sipp_available(),
                                reason="SIPp is not installed (apt-get install sip-tester); "
                                       ".ci/run installs it")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_thousand_calls_at_100_cps(tmp_path, transport):
    """1,000 calls at 100 calls/s relay with no failure and no retransmission."""
    uas_port = free_port()
    hop = f"sip:127.0.0.1:{uas_port}" + (";transport=tcp" if transport == "tcp" else "")
    mode = "u1" if transport == "udp" else "t1"
    with Sipdisp(tmp_path, {"proxy": {"next_hop": hop}}) as proxy:
        uas = Sipp(tmp_path, "uas", "uas.xml", uas_port, mode).start()
        try:
            uac = Sipp(tmp_path, "uac", "uac.xml", free_port(), mode,
                       target=f"127.0.0.1:{proxy.port(transport)}",
                       extra=["-m", 1000, "-r", 100, "-l", 400, "-d", 200,
                              "-timeout", 60, "-timeout_error"]).start()
            rc = uac.wait(90)
        finally:
            uas.stop()
        stats = uac.stats()
        assert stats["ok"] == 1000, (stats, uac.errors()[-2000:], proxy.log_text()[-3000:])
        assert stats["failed"] == 0
        assert stats["retrans"] == 0, stats
        assert uas.stats()["retrans"] == 0, uas.stats()
        assert rc == 0
        assert "Traceback" not in proxy.log_text()
