"""The shared prober (sipdisp/probing): the state machine as pure functions,
and pings through a real core with an explicit clock, observed as target
states and StateChange events."""

import random

import pytest

from sipdisp.config.values import ReplyCodes
from sipdisp.probing import (DISABLED, INACTIVE, NOPING, PROBING, TRYING, Prober, ProbeTarget,
                             StateChange, after_mark, after_ping, ping_wanted)
from sipdisp.proxy import ProxyCore
from sipdisp.proxy.target import Listener
from sipdisp.sip import parse_message
from tests.support.harness import Link
from tests.support.sipmsg import response_to

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


# -- the prober through the core --------------------------------------------------------

def probed(ports=(5081, 5082), *, reply_codes="", timeout=1.0, **settings):
    """A prober on a core with UDP peers at 127.0.0.1:``ports``, pinging every 5 s all
    of its targets; returns ``(link, prober, targets, peers, events)``."""
    listener = Listener("udp0", "udp", "127.0.0.1", 5060)
    link = Link(ProxyCore([listener], None))
    targets = [ProbeTarget(f"sip:127.0.0.1:{port}") for port in ports]
    peers = [link.add_peer(f"node{port}", "udp", "127.0.0.1", port, listener) for port in ports]
    settings.setdefault("mode", 1)
    prober = Prober(lambda: targets, interval=5.0, timeout=timeout, method="options",
                    from_uri="sip:probe@sipdisp.test", reply_codes=ReplyCodes(reply_codes),
                    call_id_prefix="pt", rng=random.Random(7), **settings)
    prober.core = link.core
    events = []
    prober.listeners.append(events.append)
    prober.start(link.now)
    return link, prober, targets, peers, events


def pings(peer):
    """The pings ``peer`` got since the last look (retransmissions included)."""
    return [m for m in (parse_message(raw) for raw in peer.take()) if m.is_request]


def answer(peer, ping, status, reason="OK"):
    peer.send(response_to(ping.to_bytes(), status, reason))


def moves(events):
    """StateChange events as ``(port, old, new, reason)``."""
    return [(e.target.port, e.old, e.new, e.reason) for e in events]


def test_a_round_pings_every_target_with_the_method_and_from_and_its_own_call_id():
    """After one interval each target gets one request of the (upper-cased) method from
    from_uri, with a Call-ID made of the prefix, the prober's tag and a counter."""
    link, prober, _, peers, _ = probed()
    link.advance(4.9)
    assert [pings(p) for p in peers] == [[], []]
    link.advance(0.1)
    got = [pings(p) for p in peers]
    assert [len(g) for g in got] == [1, 1]
    ping = got[0][0]
    assert ping.method == "OPTIONS" and ping.cseq_method == "OPTIONS"
    assert ping.get("from").startswith("<sip:probe@sipdisp.test>;tag=")
    assert ping.call_id.startswith("pt-") and got[1][0].call_id != ping.call_id
    assert prober.stats == {"pings_sent": 2, "pings_ok": 0, "pings_failed": 0}


def test_failures_reach_inactive_at_the_probing_threshold_one_event_per_change():
    """With probing_threshold 3 a silent target goes AX -> TP on the first timeout and
    TP -> IP on the third; the answering one moves once, to AP (mode 1 keeps probing)."""
    link, prober, targets, peers, events = probed(probing_threshold=3)
    for round_at in (5.0, 10.0, 15.0):
        link.advance_to(round_at)
        answer(peers[1], pings(peers[1])[0], 200)  # [1:]: Timer E's retransmission
    link.advance_to(16.0)
    assert [t.letters for t in targets] == ["IP", "AP"]
    assert targets[0].failures == 3
    assert moves(events) == [
        (5082, "AX", "AP", "OPTIONS answered 200 OK"),
        (5081, "AX", "TP", "no reply to OPTIONS in 1 s"),
        (5081, "TP", "IP", "no reply to OPTIONS in 1 s")]
    assert all(isinstance(e, StateChange) for e in events)


def test_the_inactive_threshold_counts_good_replies_in_a_row():
    """With inactive_threshold 2 an inactive target needs two good replies to be active."""
    link, prober, targets, peers, events = probed((5081,), inactive_threshold=2)
    prober.set_state(targets[0], INACTIVE | PROBING, "test")
    del events[:]
    link.advance(5.0)
    answer(peers[0], pings(peers[0])[0], 200)
    assert targets[0].letters == "IP" and targets[0].successes == 1 and events == []
    link.advance(5.0)
    answer(peers[0], pings(peers[0])[0], 200)
    assert moves(events) == [(5081, "IP", "AP", "OPTIONS answered 200 OK")]


def test_reply_codes_decide_up_and_a_timeout_is_down_even_if_408_is_accepted():
    """A 404 accepted by code=404 is up, a 500 is down, and a ping nobody answers is down
    although class=4 accepts a received 408."""
    link, prober, targets, peers, events = probed((5081, 5082, 5083),
                                                  reply_codes="code=404;class=4")
    link.advance(5.0)
    answer(peers[0], pings(peers[0])[0], 404, "Not Found")
    answer(peers[1], pings(peers[1])[0], 500, "Server Error")
    link.advance(1.0)
    assert [t.letters for t in targets] == ["AP", "IP", "IP"]
    assert moves(events)[1:] == [(5082, "AX", "IP", "OPTIONS answered 500 Server Error"),
                                 (5083, "AX", "IP", "no reply to OPTIONS in 1 s")]
    assert targets[2].last_ping == (6.0, "no reply to OPTIONS in 1 s")


def test_one_ping_in_flight_per_target():
    """A target whose ping is pending (timeout 8 s > interval 5 s) is not pinged again."""
    link, prober, targets, peers, _ = probed((5081,), timeout=8.0)
    link.advance(5.0)
    assert targets[0].pinging
    first = {m.call_id for m in pings(peers[0])}
    link.advance(5.0)
    assert {m.call_id for m in pings(peers[0])} <= first
    assert prober.stats["pings_sent"] == 1


def test_a_new_interval_counts_from_now_and_zero_stops_the_rounds():
    """set_interval re-arms the round from now; 0 disarms it; stop forgets it."""
    link, prober, _, peers, _ = probed((5081,), timeout=0.4)  # under T1: no retransmission
    prober.set_interval(2.0, link.now)
    link.advance(2.0)
    assert len(pings(peers[0])) == 1
    prober.set_interval(0, link.now)
    link.advance(20.0)
    assert pings(peers[0]) == []
    prober.set_interval(5.0, link.now)
    prober.stop()
    link.advance(20.0)
    assert pings(peers[0]) == []


def test_set_state_and_mark_tell_listeners_only_when_the_letters_change():
    """A change of bits that keeps the letters (DX stays DX) is no event; marks follow
    ds_mark_dst; the listener sees the new bits already on the target."""
    _, prober, targets, _, events = probed((5081,), probing_threshold=2)
    target = targets[0]
    seen_state = []
    prober.listeners.append(lambda change: seen_state.append(change.target.state))
    prober.set_state(target, DISABLED, "operator")
    prober.set_state(target, DISABLED | INACTIVE, "operator again")
    prober.mark(target, "a", False, "back")
    prober.mark(target, "t", True, "one failure")
    prober.mark(target, "t", True, "another failure")
    assert moves(events) == [(5081, "AX", "DX", "operator"), (5081, "DX", "AX", "back"),
                             (5081, "AX", "TP", "one failure"),
                             (5081, "TP", "IP", "another failure")]
    assert seen_state == [DISABLED, 0, TRYING | PROBING, INACTIVE | PROBING]


def test_a_target_no_listener_can_reach_fails_at_once():
    """A TCP target with only a UDP listener is a failed ping, no message sent."""
    link, prober, _, _, events = probed(())
    tcp = ProbeTarget("sip:127.0.0.1:5090;transport=tcp")
    prober.targets = lambda: [tcp]
    link.advance(5.0)
    assert tcp.letters == "IP" and not tcp.pinging
    assert moves(events) == [(5090, "AX", "IP", "no tcp listener to ping from")]
    assert prober.stats == {"pings_sent": 0, "pings_ok": 0, "pings_failed": 1}


def test_a_target_must_be_a_sip_uri():
    """ProbeTarget refuses what it could not ping."""
    with pytest.raises(ValueError):
        ProbeTarget("tel:+4930123")
