"""A reply route in a running sipdisp: SIPp calls through it to a SIPp callee
whose replies carry a NAT-like private Contact, as the OpenSIPS seed's
``onreply_route[handle_nat]`` expects to meet them."""

import pytest

from tests.support.processes import Sipdisp, Sipp, free_port, sipp_available

pytestmark = pytest.mark.skipif(not sipp_available(),
                                reason="SIPp is not installed (apt-get install sip-tester); "
                                       ".ci/run installs it")


def seed_routing(uas_port):
    """The seed's relay with t_on_reply(handle_nat), the next hop the SIPp callee."""
    return {
        "request_route": [
            {"if": "has_totag", "then": [
                {"if": "loose_route", "then": ["t_relay", "exit"]},
                {"sl_send_reply": [404, "Not here"]}, "exit"]},
            "record_route",
            {"set": {"$du": f"sip:127.0.0.1:{uas_port}", "$avp(received_nh)": "$ru"}},
            {"t_on_reply": "handle_nat"},
            {"if": {"not": "t_relay"}, "then": [{"send_reply": [500, "Internal Error"]}]},
        ],
        "onreply_routes": {"handle_nat": [
            {"if": {"nat_uac_test": 1}, "then": [
                "fix_nated_contact",
                {"xlog": " reply route: $rs $du $ru $avp(received_nh) $ct.fields(uri)"}]},
            {"if": {"eq": ["$rs", 183]}, "then": ["drop"]},
            {"xlog": "incoming reply"},
        ]},
    }


def test_reply_route_fixes_the_callees_contact_and_drops_183(tmp_path):
    """Five calls: 183 dropped, 180/200 Contact fixed to the callee's address, BYE reaches it."""
    uas_port = free_port()
    with Sipdisp(tmp_path, {"routing": seed_routing(uas_port)}) as proxy:
        uas = Sipp(tmp_path, "uas", "uas_nat_contact.xml", uas_port, "u1").start()
        try:
            uac = Sipp(tmp_path, "uac", "uac_nat_reply.xml", free_port(), "u1",
                       target=f"127.0.0.1:{proxy.port('udp')}",
                       extra=["-m", 5, "-r", 5, "-timeout", 30, "-timeout_error"]).start()
            rc = uac.wait(45)
        finally:
            uas.stop()
        stats = uac.stats()
        log = proxy.log_text()
        assert stats["ok"] == 5, (stats, uac.errors()[-2000:], log[-3000:])
        assert stats["failed"] == 0 and rc == 0
        assert uas.stats()["ok"] == 5, uas.stats()
        # the route's own lines: the Contact as fixed, the R-URI kept in the $avp
        assert " reply route: 200 <null> <null> sip:service@127.0.0.1:" in log
        assert f"sip:fs@127.0.0.1:{uas_port}" in log
        assert log.count("incoming reply") >= 10  # 100, 180, 200 of each call
        assert "Traceback" not in log
