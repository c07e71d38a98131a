"""Health probing: the state machine as pure functions, Kamailio's reply-code
syntax, and pings through the real core with an explicit clock."""

import pytest

from sipdisp.dispatcher.destination import DISABLED, INACTIVE, NOPING, PROBING, TRYING
from sipdisp.dispatcher.probing import after_mark, after_ping, ping_wanted
from sipdisp.dispatcher.replycodes import ReplyCodes
from tests.support.dispatch import Proxy, requests
from tests.support.sipmsg import response_to

NODE1 = ("127.0.0.1", 5081)
NODE2 = ("127.0.0.1", 5082)


# -- pure functions -------------------------------------------------------------------

def test_failures_walk_active_through_trying_to_inactive():
    """With probing_threshold 3, two failed pings give trying, the third inactive."""
    state, f, s = 0, 0, 0
    seen = []
    for _ in range(3):
        state, f, s = after_ping(state, f, s, False, 1, 3, 1)
        seen.append(state)
    assert seen == [TRYING | PROBING, TRYING | PROBING, INACTIVE | PROBING]
    assert f == 3


def test_successes_bring_it_back_after_inactive_threshold():
    """With inactive_threshold 2 one good ping is not enough, two are; mode 1 keeps probing."""
    state, f, s = after_ping(INACTIVE | PROBING, 3, 0, True, 1, 3, 2)
    assert (state, f, s) == (INACTIVE | PROBING, 0, 1)
    state, f, s = after_ping(state, f, s, True, 1, 3, 2)
    assert (state, f, s) == (PROBING, 0, 0)
    assert after_ping(state, 0, 1, False, 1, 3, 2)[2] == 0


@pytest.mark.parametrize("mode, flag_after_success", [(0, 0), (1, PROBING), (2, 0), (3, PROBING)])
def test_probing_flag_after_a_successful_ping(mode, flag_after_success):
    """Modes 0 and 2 clear the probing flag on success; modes 1 and 3 keep it."""
    state, _, _ = after_ping(INACTIVE | PROBING, 1, 0, True, mode, 1, 1)
    assert state == flag_after_success


def test_a_failed_ping_keeps_the_probing_flag_and_disabled_is_frozen():
    """Failures keep (or set) probing so the node is pinged until it answers; disabled never moves."""
    assert after_ping(PROBING, 0, 0, False, 0, 1, 1)[0] == INACTIVE | PROBING
    assert after_ping(DISABLED, 0, 0, True, 1, 1, 1)[0] == DISABLED


@pytest.mark.parametrize("state, flags, mode, wanted", [
    (0, 0, 0, False), (PROBING, 0, 0, True),
    (0, 0, 1, True), (DISABLED, 0, 1, False), (0, NOPING, 1, False),
    (INACTIVE, 0, 2, False), (INACTIVE | PROBING, 0, 2, True), (TRYING | PROBING, 0, 2, False),
    (PROBING, 0, 3, True), (0, 0, 3, False),
])
def test_which_destinations_each_mode_pings(state, flags, mode, wanted):
    """Each probing mode pings exactly the destinations Kamailio's documentation says."""
    assert ping_wanted(state, flags, mode) is wanted


def test_marks_follow_ds_mark_dst():
    """a resets, i and d set, t counts towards the threshold, p adds probing (never to d)."""
    assert after_mark(INACTIVE | PROBING, 4, "a", False, 3) == (0, 0, 0)
    assert after_mark(0, 0, "i", True, 3) == (INACTIVE | PROBING, 0, 0)
    assert after_mark(0, 1, "t", False, 3) == (TRYING, 2, 0)
    assert after_mark(TRYING, 2, "t", True, 3) == (INACTIVE | PROBING, 3, 0)
    assert after_mark(0, 0, "d", True, 3) == (DISABLED, 0, 0)


# -- reply codes ----------------------------------------------------------------------

def test_reply_codes_in_kamailio_syntax():
    """class=N accepts a whole class, code=NNN one code, and 200 is always accepted."""
    codes = ReplyCodes("class=2;code=403;code=404;code=407;code=484;class=3")
    assert all(codes.accepts(s) for s in (200, 202, 302, 403, 404, 407, 484))
    assert not any(codes.accepts(s) for s in (400, 408, 486, 500, 503))
    assert ReplyCodes("").accepts(200) and not ReplyCodes("").accepts(202)


@pytest.mark.parametrize("text", ["class=7", "code=99", "klass=2", "code=abc", "class"])
def test_bad_reply_codes_are_refused(text):
    """Malformed ping_reply_codes raise ValueError."""
    with pytest.raises(ValueError):
        ReplyCodes(text)


# -- pings through the core ---------------------------------------------------------

def proxy(mode=1, **extra):
    disp = {"list_file": "/nonexistent", "probing_mode": mode, "ping_interval": 5,
            "ping_timeout": 1, "probing_threshold": 3}
    disp.update(extra)
    return Proxy({"dispatcher": disp}, rows=["sip:127.0.0.1:5081", "sip:127.0.0.1:5082"])


def answer(p, out, status, node=NODE1, reason="OK"):
    for msg, to in requests(out):
        if to == node:
            return p.send(response_to(msg.to_bytes(), status, reason), source=node)
    raise AssertionError(f"no ping to {node} in {out}")


def letters(p):
    return [d.letters for d in p.dispatcher.destinations()]


def test_dead_node_is_inactive_within_interval_times_threshold_plus_timeout():
    """Unanswered pings (own 1 s timeout, not 32 s) mark a node inactive at 3 x 5 + 1 s, one log line per change."""
    p = proxy()
    for round_at in (5.0, 10.0, 15.0):
        out = p.advance_to(round_at)
        pings = requests(out, "OPTIONS")
        assert sorted(to for _, to in pings) == [NODE1, NODE2]
        answer(p, out, 200, NODE2)  # node 2 is alive, node 1 is not
        p.advance(0.99)
        assert letters(p)[0] != "IP"
        p.advance(0.02)
    msg = pings[0][0]
    assert str(msg.uri) in ("sip:127.0.0.1:5081", "sip:127.0.0.1:5082")
    assert msg.get("from").startswith("<sip:dispatcher@localhost>;tag=")
    assert msg.via.host == "127.0.0.1" and msg.via.port == 5060
    assert p.now == pytest.approx(16.01)
    assert letters(p) == ["IP", "AP"]
    node1_lines = [line for line in p.log.lines if "5081" in line]
    assert node1_lines == [
        "dispatcher: sip:127.0.0.1:5081 (set 0) AP -> TP: no reply to OPTIONS in 1 s",
        "dispatcher: sip:127.0.0.1:5081 (set 0) TP -> IP: no reply to OPTIONS in 1 s"]


def test_node_comes_back_when_it_answers_again():
    """An inactive node answering its next ping is active again (inactive_threshold 1)."""
    p = proxy(probing_threshold=1)
    p.advance(6.0)
    assert letters(p) == ["IP", "IP"]
    out = p.advance(4.0)
    answer(p, out, 200, NODE1)
    assert letters(p) == ["AP", "IP"]
    assert p.log.lines[-1] == "dispatcher: sip:127.0.0.1:5081 (set 0) IP -> AP: OPTIONS answered 200 OK"


def test_accepted_reply_codes_count_as_up_and_others_as_down():
    """With code=404 a 404 keeps the node up; a 500 is a failure."""
    p = proxy(probing_threshold=1, ping_reply_codes="code=404")
    out = p.advance(5.0)
    answer(p, out, 404, NODE1, "Not Found")
    answer(p, out, 500, NODE2, "Server Error")
    assert letters(p) == ["AP", "IP"]


def test_a_local_timeout_never_counts_as_a_reply_even_if_408_is_accepted():
    """class=4 and code=408 accept a received 408, but a ping that times out still fails."""
    p = proxy(probing_threshold=1, ping_reply_codes="class=4;code=408")
    out = p.advance(5.0)
    answer(p, out, 408, NODE1, "Request Timeout")
    p.advance(1.5)
    assert letters(p) == ["AP", "IP"]


def test_a_ping_is_retransmitted_over_udp_within_its_timeout():
    """The ping is a client transaction: Timer E re-sends it at T1 before the 1 s timeout."""
    p = proxy()
    first = requests(p.advance(5.0), "OPTIONS")
    again = requests(p.advance(0.6), "OPTIONS")
    assert len(first) == 2 and len(again) == 2
    assert first[0][0].via.branch == again[0][0].via.branch


def test_mode_zero_pings_only_after_a_failure_marked_probing():
    """Mode 0 leaves healthy nodes alone, pings one marked ip until it answers, then stops."""
    p = proxy(mode=0, probing_threshold=1)
    assert requests(p.advance(10.0)) == []
    p.dispatcher.set_state("ip", 0, "sip:127.0.0.1:5081")
    out = p.advance(5.0)
    assert [to for _, to in requests(out)] == [NODE1]
    answer(p, out, 200, NODE1)
    assert letters(p) == ["AX", "AX"]
    assert requests(p.advance(10.0)) == []


def test_mode_two_pings_only_inactive_probing_nodes():
    """Mode 2 pings IP destinations, not TP or AX ones."""
    p = proxy(mode=2)
    p.dispatcher.set_state("ip", 0, "sip:127.0.0.1:5081")
    p.dispatcher.set_state("tp", 0, "sip:127.0.0.1:5082")
    assert [to for _, to in requests(p.advance(5.0))] == [NODE1]


def test_mode_three_keeps_probing_flagged_nodes():
    """Mode 3 pings flag-8 destinations and keeps their probing flag after success."""
    p = Proxy({"dispatcher": {"list_file": "/nonexistent", "probing_mode": 3,
                              "ping_interval": 5}},
              rows=[(0, "sip:127.0.0.1:5081", 8), (0, "sip:127.0.0.1:5082", 0)])
    out = p.advance(5.0)
    assert [to for _, to in requests(out)] == [NODE1]
    answer(p, out, 200, NODE1)
    assert letters(p) == ["AP", "AX"]
    assert [to for _, to in requests(p.advance(5.0))] == [NODE1]


def test_ping_active_off_sends_nothing_and_method_is_configurable():
    """dispatcher.ping_active 0 stops pings; ping_method INFO and ping_from are used."""
    p = proxy(ping_method="INFO", ping_from="sip:prober@sipdisp.test")
    p.dispatcher.ping_active = False
    assert requests(p.advance(10.0)) == []
    p.dispatcher.ping_active = True
    pings = requests(p.advance(5.0), "INFO")
    assert len(pings) == 2 and pings[0][0].get("from").startswith("<sip:prober@sipdisp.test>")


def test_one_ping_in_flight_per_destination():
    """A destination whose ping is still pending is not pinged again by the next round."""
    p = proxy(ping_timeout=8)
    first = {m.call_id for m, _ in requests(p.advance(5.0), "OPTIONS")}
    later = {m.call_id for m, _ in requests(p.advance(5.0), "OPTIONS")}
    assert len(first) == 2 and later <= first  # only retransmissions of the pending pings
    assert p.dispatcher.stats["pings_sent"] == 2
