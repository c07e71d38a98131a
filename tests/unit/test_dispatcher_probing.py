"""Dispatcher health probing: Kamailio's reply-code syntax, and pings through
the real core with an explicit clock, observed as destination states and the
prober's StateChange events (the state machine itself: test_probing.py)."""

import pytest

from sipdisp.config.values import ReplyCodes
from tests.support.dispatch import Proxy, requests
from tests.support.sipmsg import response_to

NODE1 = ("127.0.0.1", 5081)
NODE2 = ("127.0.0.1", 5082)


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


def changes(p):
    """The prober's StateChange events from now on, as ``(uri, old, new, reason)``."""
    seen = []
    p.dispatcher.prober.listeners.append(
        lambda change: seen.append((change.target.uri, change.old, change.new, change.reason)))
    return seen


def test_dead_node_is_inactive_within_interval_times_threshold_plus_timeout():
    """Unanswered pings (own 1 s timeout, not 32 s) mark a node inactive at 3 x 5 + 1 s, one event per change."""
    p = proxy()
    seen = changes(p)
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
    node1_changes = [c for c in seen if c[0] == "sip:127.0.0.1:5081"]
    assert node1_changes == [
        ("sip:127.0.0.1:5081", "AP", "TP", "no reply to OPTIONS in 1 s"),
        ("sip:127.0.0.1:5081", "TP", "IP", "no reply to OPTIONS in 1 s")]
    assert p.dispatcher.stats["state_changes"] == len(seen)


def test_node_comes_back_when_it_answers_again():
    """An inactive node answering its next ping is active again (inactive_threshold 1)."""
    p = proxy(probing_threshold=1)
    seen = changes(p)
    p.advance(6.0)
    assert letters(p) == ["IP", "IP"]
    out = p.advance(4.0)
    answer(p, out, 200, NODE1)
    assert letters(p) == ["AP", "IP"]
    assert seen[-1] == ("sip:127.0.0.1:5081", "IP", "AP", "OPTIONS answered 200 OK")


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
    assert p.dispatcher.prober.stats["pings_sent"] == 2


def test_state_changes_become_the_documented_log_lines():
    """Each StateChange is one dispatcher log line in docs/dispatcher.md's words: a warning
    when the node is not active, info when it is back."""
    p = proxy(probing_threshold=1)
    p.log.warn = lambda fmt, **kw: p.log.lines.append("warn " + fmt.format(**kw))
    p.log.info = lambda fmt, **kw: p.log.lines.append("info " + fmt.format(**kw))
    p.advance(6.0)
    out = p.advance(4.0)
    answer(p, out, 200, NODE1)
    node1_lines = [line for line in p.log.lines if "5081" in line]
    assert node1_lines == [
        "warn dispatcher: sip:127.0.0.1:5081 (set 0) AP -> IP: no reply to OPTIONS in 1 s",
        "info dispatcher: sip:127.0.0.1:5081 (set 0) IP -> AP: OPTIONS answered 200 OK"]
