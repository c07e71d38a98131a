"""rtpengine control in a running sipdisp, against a real rtpengine daemon:
SIPp calls whose SDP offers and answers come out rewritten to rtpengine's
ports, a session during the call and none after it (BYE, CANCEL, 486),
200 mixed calls leaving rtpengine empty, and failover to a second instance
when the first is killed mid-run."""

import re
import threading
import time

import pytest

from tests.support.calls import rpc, wait_until
from tests.support.processes import Sipdisp, Sipp, free_port, sipp_available
from tests.support.rtpengine import RtpengineDaemon, needs_rtpengine

pytestmark = [needs_rtpengine,
              pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed; .ci/run installs it")]

FLAGS = "replace-origin replace-session-connection"


def media_routing(uas_ports):
    """A relay with rtpengine_manage in the request and the reply route; the
    callee by user: ``busy`` -> a 486 UAS, ``ring`` -> a UAS that only rings."""
    pick = [{"if": {"eq": ["$rU", user]}, "then": [{"set": {"$du": f"sip:127.0.0.1:{port}"}}]}
            for user, port in uas_ports.items() if user != "default"]
    return {
        "request_route": [
            {"if": "has_totag", "then": [
                {"if": "loose_route", "then": [
                    {"if": {"is_method": "BYE"}, "then": [{"rtpengine_manage": FLAGS}]},
                    {"if": {"has_sdp": None}, "then": [{"rtpengine_manage": FLAGS}]},
                    "t_relay", "exit"]},
                {"sl_send_reply": [404, "Not here"]}, "exit"]},
            "record_route",
            {"set": {"$du": f"sip:127.0.0.1:{uas_ports['default']}"}},
            *pick,
            {"if": {"has_sdp": None}, "then": [
                {"if": {"not": {"rtpengine_manage": FLAGS}}, "then": [
                    {"send_reply": [503, "Media Relay Unavailable"]}, "exit"]}]},
            {"t_on_reply": "MEDIA"},
            {"if": {"not": "t_relay"}, "then": [{"send_reply": [500, "Internal Error"]}]},
        ],
        "onreply_routes": {"MEDIA": [
            {"if": {"has_sdp": None}, "then": [{"rtpengine_manage": FLAGS}]},
        ]},
    }


def _logged(path, word):
    """``{call_id: (port, rest)}`` of SIPp's ``<log>`` lines starting ``word``."""
    out = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        m = re.match(rf"{word} (\S+) port (\d+)(.*)", line.strip())
        if m:
            out[m.group(1)] = (int(m.group(2)), m.group(3))
    return out


def _sipp_log(tmp_path, name):
    path = tmp_path / f"{name}_log.txt"
    return path, ["-trace_logs", "-log_file", str(path)]


def test_a_call_is_relayed_through_rtpengine_and_its_session_ends_with_the_bye(tmp_path):
    """The offer reaches the callee and the answer the caller on rtpengine's
    ports; rtpengine lists the call while it is up and not after the BYE."""
    uas_port = free_port()
    with RtpengineDaemon(tmp_path) as rtpe, \
            Sipdisp(tmp_path, {"routing": media_routing({"default": uas_port}),
                               "rtpengine": {"sockets": rtpe.url}}) as proxy:
        uas_log, uas_args = _sipp_log(tmp_path, "uas")
        uac_log, uac_args = _sipp_log(tmp_path, "uac")
        uas = Sipp(tmp_path, "uas", "rtp_uas.xml", uas_port, extra=uas_args).start()
        try:
            uac = Sipp(tmp_path, "uac", "rtp_uac.xml", free_port(),
                       target=f"127.0.0.1:{proxy.port('udp')}",
                       extra=["-m", 1, "-d", 4000, "-timeout", 30, "-timeout_error",
                              *uac_args]).start()
            seen = wait_until(lambda: rtpe.calls(), 15)
            assert seen and len(seen) == 1, (seen, proxy.log_text()[-3000:])
            call_id = seen[0]
            rc = uac.wait(40)
        finally:
            uas.stop()
        stats = uac.stats()
        log = proxy.log_text()
        assert stats["ok"] == 1 and rc == 0, (stats, uac.errors()[-2000:], log[-3000:])
        offers = _logged(uas_log, "OFFER")
        answers = _logged(uac_log, "ANSWER")
        assert call_id in offers and call_id in answers, (offers, answers)
        # the caller offered 6000, the callee answered 7000: both see rtpengine's ports
        assert rtpe.port_min <= offers[call_id][0] <= rtpe.port_max, offers
        assert "ip 127.0.0.1" in offers[call_id][1]
        assert rtpe.port_min <= answers[call_id][0] <= rtpe.port_max, answers
        assert wait_until(lambda: rtpe.calls() == [], 10), rtpe.calls()
        assert "Traceback" not in log
