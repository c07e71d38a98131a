"""rtpengine control in a running sipdisp, against a real rtpengine daemon:
SIPp calls whose SDP offers and answers come out rewritten to rtpengine's
ports, a session during the call and none after it (BYE, CANCEL, 486),
200 mixed calls leaving rtpengine empty, and failover to a second instance
when the first is killed mid-run."""

import re
import signal

import pytest
import yaml

from tests.support.calls import rpc, wait_until
from tests.support.processes import Sipdisp, Sipp, free_port, sipp_available
from tests.support.rtpengine import RtpengineDaemon, needs_rtpengine

pytestmark = [needs_rtpengine,
              pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed; .ci/run installs it")]

FLAGS = "replace-origin replace-session-connection"


def media_routing(uas_ports, dialog=False):
    """A relay with rtpengine_manage in the request and the reply route; the
    callee by user: ``busy`` -> a 486 UAS, ``ring`` -> a UAS that only rings;
    with ``dialog`` the INVITE creates a dialog (create_dialog)."""
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
            *(["create_dialog"] if dialog else []),
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
        # management: ping answered, an instance disabled by command and back
        assert rpc(proxy, "rtpengine.ping") == {rtpe.url: True}
        assert rpc(proxy, "rtpengine.enable", rtpe.url, 0)["state"] == "disabled"
        assert rpc(proxy, "rtpengine.list")[0]["state"] == "disabled"
        assert rpc(proxy, "rtpengine.enable", rtpe.url, 1)["state"] == "active"
        listed = rpc(proxy, "rtpengine.list")[0]
        assert listed["requests"] >= 3 and listed["last_pong"] is not None, listed
        # SIGHUP: retransmission settings apply at once, a new socket list needs a restart
        cfg = yaml.safe_load(proxy.config_path.read_text())
        cfg["rtpengine"].update(timeout=0.5, retries=1, sockets=rtpe.url + " udp:127.0.0.1:9")
        proxy.config_path.write_text(yaml.safe_dump(cfg))
        proxy.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload:" in proxy.log_text(), 10)
        line = [x for x in proxy.log_text().splitlines() if "reload:" in x][0]
        assert "needs a restart, not applied: rtpengine.sockets" in line, line
        stats = rpc(proxy, "rtpengine.stats")
        assert (stats["timeout"], stats["retries"]) == (0.5, 1), stats
        assert len(rpc(proxy, "rtpengine.list")) == 1
        assert "Traceback" not in log


def _callees(tmp_path, **extra):
    """The three callees (answering, busy, ringing) on free ports, started."""
    ports = {"default": free_port(), "busy": free_port(), "ring": free_port()}
    uas = [Sipp(tmp_path, "uas", "rtp_uas.xml", ports["default"], extra=extra.get("uas", ())),
           Sipp(tmp_path, "uas_busy", "rtp_uas_busy.xml", ports["busy"]),
           Sipp(tmp_path, "uas_ring", "rtp_uas_ring.xml", ports["ring"])]
    for u in uas:
        u.start()
    return ports, uas


def test_a_cancelled_call_and_a_busy_callee_leave_no_session(tmp_path):
    """CANCEL after early media (183 answered through rtpengine) and a 486 both delete the session."""
    with RtpengineDaemon(tmp_path) as rtpe:
        ports, uas = _callees(tmp_path)
        try:
            with Sipdisp(tmp_path, {"routing": media_routing(ports),
                                    "rtpengine": {"sockets": rtpe.url}}) as proxy:
                target = f"127.0.0.1:{proxy.port('udp')}"
                cancel = Sipp(tmp_path, "uac_cancel", "rtp_uac_cancel.xml", free_port(),
                              target=target, extra=["-s", "ring", "-m", 3, "-r", 3,
                                                    "-timeout", 30, "-timeout_error"]).start()
                busy = Sipp(tmp_path, "uac_busy", "rtp_uac_busy.xml", free_port(),
                            target=target, extra=["-s", "busy", "-m", 3, "-r", 3,
                                                  "-timeout", 30, "-timeout_error"]).start()
                rc_cancel, rc_busy = cancel.wait(45), busy.wait(45)
                log = proxy.log_text()
                assert cancel.stats()["ok"] == 3 and rc_cancel == 0, (
                    cancel.stats(), cancel.errors()[-2000:], log[-3000:])
                assert busy.stats()["ok"] == 3 and rc_busy == 0, (busy.stats(), busy.errors()[-2000:])
                stats = rpc(proxy, "rtpengine.stats")
                assert stats["offer"] == 6 and stats["answer"] == 3, stats  # 183s answered
                assert wait_until(lambda: rtpe.calls() == [], 10), rtpe.calls()
                assert rpc(proxy, "rtpengine.stats")["sessions"] == 0
                assert "Traceback" not in log
        finally:
            for u in uas:
                u.stop()


def test_200_mixed_calls_at_20_per_second_leave_rtpengine_empty(tmp_path):
    """140 answered calls, 30 cancelled and 30 busy at 20 calls/s in all: every
    call completes and rtpengine has no session afterwards."""
    with RtpengineDaemon(tmp_path) as rtpe:
        ports, uas = _callees(tmp_path)
        try:
            with Sipdisp(tmp_path, {"routing": media_routing(ports),
                                    "rtpengine": {"sockets": rtpe.url}}) as proxy:
                target = f"127.0.0.1:{proxy.port('udp')}"
                common = ["-timeout", 90, "-timeout_error", "-max_socket", 50]
                runs = [
                    Sipp(tmp_path, "uac", "rtp_uac.xml", free_port(), target=target,
                         extra=["-m", 140, "-r", 14, "-d", 500, *common]),
                    Sipp(tmp_path, "uac_cancel", "rtp_uac_cancel.xml", free_port(),
                         target=target, extra=["-s", "ring", "-m", 30, "-r", 3, *common]),
                    Sipp(tmp_path, "uac_busy", "rtp_uac_busy.xml", free_port(),
                         target=target, extra=["-s", "busy", "-m", 30, "-r", 3, *common]),
                ]
                for run in runs:
                    run.start()
                codes = [run.wait(120) for run in runs]
                log = proxy.log_text()
                oks = [run.stats()["ok"] for run in runs]
                assert oks == [140, 30, 30] and codes == [0, 0, 0], (
                    oks, [r.stats() for r in runs], runs[0].errors()[-1500:], log[-2000:])
                assert wait_until(lambda: rtpe.calls() == [], 15), len(rtpe.calls())
                stats = rpc(proxy, "rtpengine.stats")
                assert stats["offer"] == 200 and stats["sessions"] == 0, stats
                assert stats.get("failed", 0) == 0, stats
                assert "Traceback" not in log
        finally:
            for u in uas:
                u.stop()


def test_calls_fail_over_to_the_second_instance_when_the_first_is_killed(tmp_path):
    """Two instances; the first killed mid-run: it turns inactive, the calls after
    go to the second and succeed, nothing is left on it; started again, the
    first answers a ping and is active again."""
    uas_port = free_port()
    with RtpengineDaemon(tmp_path, "rtpe_a") as a, RtpengineDaemon(tmp_path, "rtpe_b") as b:
        config = {"routing": media_routing({"default": uas_port}),
                  "rtpengine": {"sockets": f"{a.url}=1 {b.url}=1", "timeout": 0.3,
                                "retries": 2, "ping_interval": 1.0}}
        uas = Sipp(tmp_path, "uas", "rtp_uas.xml", uas_port).start()
        try:
            with Sipdisp(tmp_path, config) as proxy:
                uac = Sipp(tmp_path, "uac", "rtp_uac.xml", free_port(),
                           target=f"127.0.0.1:{proxy.port('udp')}",
                           extra=["-m", 40, "-r", 5, "-d", 300, "-timeout", 90,
                                  "-timeout_error"]).start()
                assert wait_until(lambda: a.calls() and b.calls(), 20), "both instances used"
                a.kill()
                before = rpc(proxy, "rtpengine.stats")["offer"]
                rc = uac.wait(120)
                stats = uac.stats()
                log = proxy.log_text()
                assert stats["ok"] == 40 and rc == 0, (stats, uac.errors()[-2000:], log[-3000:])
                states = {i["url"]: i["state"] for i in rpc(proxy, "rtpengine.list")}
                assert states == {a.url: "inactive", b.url: "active"}, states
                after = rpc(proxy, "rtpengine.stats")
                assert after["offer"] == 40 and before < 40, (before, after)
                assert "stopped answering" in log
                assert wait_until(lambda: b.calls() == [], 10), b.calls()
                # the same instance back on its port: the next ping enables it
                again = RtpengineDaemon(tmp_path, "rtpe_a2")
                again.ng_port = a.ng_port
                with again:
                    assert wait_until(lambda: {i["url"]: i["state"] for i in
                                               rpc(proxy, "rtpengine.list")}[a.url] == "active",
                                      10)
                assert "Traceback" not in log
        finally:
            uas.stop()


def test_a_call_ended_by_the_dialog_timeout_leaves_no_session(tmp_path):
    """Nobody hangs up: the dialog module's timeout sends the BYEs and its
    ended callback deletes the rtpengine session."""
    uas_port = free_port()
    with RtpengineDaemon(tmp_path) as rtpe, \
            Sipdisp(tmp_path, {"routing": media_routing({"default": uas_port}, dialog=True),
                               "dialog": {"default_timeout": 2.0},
                               "rtpengine": {"sockets": rtpe.url}}) as proxy:
        uas = Sipp(tmp_path, "uas", "rtp_uas.xml", uas_port).start()
        try:
            uac = Sipp(tmp_path, "uac", "rtp_uac_timeout.xml", free_port(),
                       target=f"127.0.0.1:{proxy.port('udp')}",
                       extra=["-m", 1, "-timeout", 30, "-timeout_error"]).start()
            assert wait_until(lambda: len(rtpe.calls()) == 1, 10), proxy.log_text()[-2000:]
            rc = uac.wait(30)
        finally:
            uas.stop()
        log = proxy.log_text()
        assert rc == 0 and uac.stats()["ok"] == 1, (uac.errors()[-1500:], log[-2000:])
        assert wait_until(lambda: rtpe.calls() == [], 10), rtpe.calls()
        stats = rpc(proxy, "rtpengine.stats")
        assert stats["deleted_dialog"] == 1 and stats["sessions"] == 0, stats
        assert "Traceback" not in log
