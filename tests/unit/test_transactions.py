"""RFC 3261 section 17 transactions (with RFC 6026) on an explicit clock.

Times are in seconds from 0.0 with T1 = 0.5, T2 = 4, T4 = 5: Timer A/E/G
fire at 0.5, 1.5, 3.5, 7.5 ... and 64*T1 = 32.
"""

import itertools

import pytest

from sipdisp.sip import parse_message
from sipdisp.transaction import (
    ClientTransaction, ServerTransaction, TimerHeap, TransactionLayer, server_key,
)
from sipdisp.transaction import client as C
from sipdisp.transaction import server as S
from tests.support import sipmsg

T1, T2, T4 = 0.5, 4.0, 5.0
TARGET = ("udp", "192.0.2.20", 5060)  # any value: the layer only passes it through


class Owner:
    """A transaction user that records what its client transactions tell it."""

    def __init__(self):
        self.responses = []
        self.timeouts = []
        self.server_timeouts = []
        self.server_ends = []

    def on_branch_response(self, txn, response, now):
        self.responses.append((now, response.status))

    def on_branch_timeout(self, txn, now):
        self.timeouts.append(now)

    def on_server_timeout(self, txn, now):
        self.server_timeouts.append(now)

    def on_server_terminated(self, txn):
        self.server_ends.append(txn)


class Clock:
    """Runs a layer's timers as the edge would: one wake-up per deadline."""

    def __init__(self, layer):
        self.layer = layer
        self.now = 0.0
        self.sent = []  # (time, first line, data)

    def collect(self):
        for data, _target in self.layer.drain():
            self.sent.append((self.now, data.split(b"\r\n", 1)[0].decode(), data))

    def run_until(self, end):
        while True:
            deadline = self.layer.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = deadline
            self.layer.on_timers(deadline)
            self.collect()
        self.now = end

    def times(self, startswith):
        return [t for t, line, _ in self.sent if line.startswith(startswith)]

    def take(self):
        out, self.sent = self.sent, []
        return out


# the bytes each client transaction of these tests sent (the transaction drops its
# own copy once it has a final response), by id(txn)
_SENT_REQUEST = {}


def new_client(method="INVITE", reliable=False, fr=30.0, fr_inv=120.0, layer=None,
               extra=()):
    layer = layer or TransactionLayer(T1, T2, T4)
    owner = Owner()
    raw = sipmsg.request(method, branch="z9hG4bKclient1", extra=extra)
    request = parse_message(raw)
    txn = layer.new_client(request, raw, TARGET, reliable, "z9hG4bKclient1", fr, fr_inv, owner)
    _SENT_REQUEST[id(txn)] = raw
    clock = Clock(layer)
    txn.start(0.0)
    clock.collect()
    return txn, owner, clock


def reply(txn, status, reason="X", to_tag="uas1", extra=()):
    return parse_message(sipmsg.response_to(_SENT_REQUEST[id(txn)], status, reason,
                                            to_tag=to_tag, extra=extra))


def new_server(method="INVITE", reliable=False):
    layer = TransactionLayer(T1, T2, T4)
    request = parse_message(sipmsg.request(method, branch="z9hG4bKserver1"))
    txn = layer.create_server(request, TARGET, reliable)
    txn.owner = Owner()
    return txn, Clock(layer)


def response_bytes(status):
    return f"SIP/2.0 {status} X\r\n\r\n".encode()


# -- INVITE client -----------------------------------------------------------------

def test_invite_client_retransmits_with_timer_a_doubling_until_timer_b():
    """Over UDP the INVITE is re-sent at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 and Timer B
    (64*T1) ends the branch at 32 s even though fr is longer."""
    txn, owner, clock = new_client(fr=100.0)
    clock.run_until(200.0)
    assert clock.times("INVITE") == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert owner.timeouts == [32.0]
    assert txn.state == C.TERMINATED and txn.final_status == 408
    assert txn.layer.find_client(reply(txn, 180)) is None
    assert txn.layer.next_deadline() is None


def test_provisional_stops_invite_retransmissions():
    """A provisional moves Calling to Proceeding and no retransmission follows."""
    txn, owner, clock = new_client(fr=100.0)
    clock.run_until(2.0)
    txn.on_response(reply(txn, 100, "Trying"), 2.0)
    clock.run_until(40.0)
    assert clock.times("INVITE") == [0.0, 0.5, 1.5]
    assert txn.state == C.PROCEEDING
    assert owner.timeouts == []  # Timer B applies only to Calling


def test_branch_timeout_without_any_reply_tells_the_owner():
    """The per-branch fr timer fires on_branch_timeout and ends the branch, no CANCEL."""
    txn, owner, clock = new_client(fr=2.0)
    clock.run_until(10.0)
    assert owner.timeouts == [2.0]
    assert clock.times("CANCEL") == []
    assert clock.times("INVITE") == [0.0, 0.5, 1.5]
    assert txn.state == C.TERMINATED and txn.local_reply


def test_ringing_switches_to_fr_inv_and_its_timeout_cancels_the_branch():
    """After a 180 the branch waits fr_inv; on timeout it sends CANCEL on the same branch,
    then ACKs the 487 hop by hop without telling the owner twice."""
    txn, owner, clock = new_client(fr=2.0, fr_inv=5.0)
    txn.on_response(reply(txn, 180, "Ringing"), 1.0)
    clock.run_until(5.9)
    assert owner.timeouts == []
    clock.run_until(6.0)
    assert owner.timeouts == [6.0]
    cancel = parse_message(clock.sent[-1][2])
    assert cancel.method == "CANCEL" and cancel.via.branch == txn.branch
    assert len(cancel.values("via")) == 1 and cancel.cseq == txn.request.cseq
    clock.take()
    txn.on_response(reply(txn, 487, "Request Terminated"), 6.1)
    ack = parse_message(clock.layer.drain()[0][0])
    assert ack.method == "ACK" and ack.via.branch == txn.branch
    assert owner.responses == [(1.0, 180)] and owner.timeouts == [6.0]


def test_2xx_crossing_a_timeout_cancel_still_reaches_the_owner():
    """A 2xx that arrives after the branch timed out and sent CANCEL is still handed to the
    owner, since a proxy must forward every 2xx (RFC 3261 16.7 step 5)."""
    txn, owner, clock = new_client(fr=2.0, fr_inv=5.0)
    txn.on_response(reply(txn, 180, "Ringing"), 1.0)
    clock.run_until(6.0)
    txn.on_response(reply(txn, 200, "OK"), 6.05)
    assert owner.responses == [(1.0, 180), (6.05, 200)]
    assert not clock.layer.drain()  # the proxy never ACKs a 2xx itself


def test_non_2xx_final_to_invite_is_acked_hop_by_hop_and_again_on_retransmission():
    """A 3xx-6xx is ACKed with the INVITE's branch, single Via, Route and the reply's To;
    a retransmitted final gets the same ACK and the owner hears of it once."""
    txn, owner, clock = new_client(extra=["Route: <sip:p2.example.com;lr>"])
    sent = txn.request
    txn.on_response(reply(txn, 180, "Ringing"), 0.2)
    busy = reply(txn, 486, "Busy Here")
    txn.on_response(busy, 1.0)
    clock.collect()
    acks = [d for _, line, d in clock.take() if line.startswith("ACK")]
    assert len(acks) == 1
    ack = parse_message(acks[0])
    assert str(ack.uri) == str(sent.uri)
    assert ack.values("via") == [sent.values("via")[0]]
    assert ack.get("to") == busy.get("to") and ack.to_tag == "uas1"
    assert ack.get("cseq") == f"{sent.cseq} ACK"
    assert ack.get("route") == "<sip:p2.example.com;lr>"
    assert txn.state == C.COMPLETED
    txn.on_response(reply(txn, 486, "Busy Here"), 1.6)
    clock.collect()
    assert [d for _, _, d in clock.take()] == acks
    assert owner.responses == [(0.2, 180), (1.0, 486)]
    clock.run_until(1.0 + 31.9)
    assert txn.state == C.COMPLETED
    clock.run_until(1.0 + 32.0)  # Timer D
    assert txn.state == C.TERMINATED and clock.layer.clients == {}


def test_2xx_to_invite_enters_accepted_and_passes_retransmissions_to_the_owner():
    """RFC 6026: a 2xx moves to Accepted, every 2xx retransmission goes to the owner,
    no ACK is generated, and Timer M (64*T1) ends the transaction."""
    txn, owner, clock = new_client()
    txn.on_response(reply(txn, 200, "OK"), 1.0)
    assert txn.state == C.ACCEPTED
    # answered: the request is let go, not kept for Timer M's 32 s
    assert txn.request is None and txn.data is None
    txn.on_response(reply(txn, 200, "OK"), 1.5)
    txn.on_response(reply(txn, 486, "Busy"), 1.6)  # not a 2xx: ignored in Accepted
    clock.collect()
    assert owner.responses == [(1.0, 200), (1.5, 200)]
    assert clock.times("ACK") == []
    clock.run_until(32.9)
    assert txn.state == C.ACCEPTED
    clock.run_until(33.0)
    assert txn.state == C.TERMINATED


def test_reliable_invite_client_has_no_retransmissions_and_no_timer_d():
    """Over TCP nothing is retransmitted and a non-2xx final ends the transaction at once."""
    txn, owner, clock = new_client(reliable=True, fr=10.0)
    clock.run_until(5.0)
    assert clock.times("INVITE") == [0.0]
    txn.on_response(reply(txn, 503, "Unavailable"), 5.0)
    clock.collect()
    assert clock.times("ACK") == [5.0]
    assert txn.state == C.TERMINATED and clock.layer.next_deadline() is None


def test_cancel_before_any_provisional_waits_for_one():
    """RFC 3261 9.1: a CANCEL is held back until a provisional reply arrives."""
    txn, owner, clock = new_client()
    txn.cancel(0.2)
    clock.collect()
    assert clock.times("CANCEL") == []
    txn.on_response(reply(txn, 100, "Trying"), 0.4)
    clock.collect()
    assert clock.times("CANCEL") == [0.0]  # the clock did not move: collected at 0.0
    cancel_txn = clock.layer.clients[(txn.branch, "CANCEL")]
    assert cancel_txn.state == C.TRYING
    txn.cancel(0.5)  # a second cancel does nothing
    clock.collect()
    assert len(clock.times("CANCEL")) == 1


# -- non-INVITE client -----------------------------------------------------------------

def test_non_invite_timer_e_doubles_up_to_t2_until_timer_f():
    """Timer E re-sends at 0.5, 1.5, 3.5, then every T2 = 4 s; Timer F times out at 32."""
    txn, owner, clock = new_client("OPTIONS", fr=100.0)
    clock.run_until(100.0)
    assert clock.times("OPTIONS") == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5,
                                      27.5, 31.5]
    assert owner.timeouts == [32.0]
    assert txn.state == C.TERMINATED


def test_non_invite_provisional_sets_retransmission_interval_to_t2():
    """After a provisional, Timer E fires every T2."""
    txn, owner, clock = new_client("OPTIONS", fr=100.0)
    clock.run_until(0.6)
    txn.on_response(reply(txn, 100, "Trying"), 0.6)
    clock.run_until(14.0)
    assert clock.times("OPTIONS") == [0.0, 0.5, 1.5, 5.5, 9.5, 13.5]
    assert txn.state == C.PROCEEDING


def test_non_invite_final_absorbs_retransmissions_and_lingers_t4():
    """A final goes to the owner once; Timer K (T4) then ends the transaction."""
    txn, owner, clock = new_client("BYE")
    clock.run_until(1.0)
    txn.on_response(reply(txn, 200, "OK"), 1.0)
    txn.on_response(reply(txn, 200, "OK"), 1.2)
    assert owner.responses == [(1.0, 200)]
    assert txn.state == C.COMPLETED
    clock.run_until(1.0 + T4)
    assert txn.state == C.TERMINATED
    assert clock.times("BYE") == [0.0, 0.5]


def test_reliable_non_invite_client_is_done_at_the_final():
    """Over TCP, no Timer E and no Timer K."""
    txn, owner, clock = new_client("BYE", reliable=True)
    clock.run_until(3.0)
    assert clock.times("BYE") == [0.0]
    txn.on_response(reply(txn, 200, "OK"), 3.0)
    assert txn.state == C.TERMINATED and clock.layer.next_deadline() is None


# -- INVITE server -------------------------------------------------------------------

def test_invite_server_resends_last_provisional_on_retransmission():
    """A retransmitted INVITE re-sends the last provisional response."""
    txn, clock = new_server()
    txn.on_request(0.1)
    assert clock.layer.drain() == []  # nothing to re-send yet
    assert txn.respond(response_bytes(100), 100, 0.1)
    assert txn.respond(response_bytes(180), 180, 0.2)
    clock.layer.drain()
    txn.on_request(0.6)
    assert clock.layer.drain() == [(response_bytes(180), TARGET)]


def test_invite_server_non_2xx_final_is_retransmitted_by_timer_g_until_timer_h():
    """Without an ACK the final is re-sent at 0.5, 1.5, 3.5, 7.5, then every T2, and
    Timer H (64*T1) tells the owner and ends the transaction."""
    txn, clock = new_server()
    owner = txn.owner
    txn.respond(response_bytes(486), 486, 0.0)
    clock.collect()
    clock.run_until(40.0)
    assert clock.times("SIP/2.0 486") == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5,
                                          27.5, 31.5]
    assert owner.server_timeouts == [32.0]
    assert txn.state == S.TERMINATED and clock.layer.servers == {}
    # the owner heard of the end and the transaction let go of it (no cycle left)
    assert owner.server_ends == [txn] and txn.owner is None


def test_invite_server_ack_stops_timer_g_and_timer_i_ends_it():
    """The ACK moves Completed to Confirmed (no more re-sends); Timer I = T4 ends it."""
    txn, clock = new_server()
    owner = txn.owner
    txn.respond(response_bytes(486), 486, 0.0)
    clock.collect()
    clock.run_until(2.0)
    txn.on_request(2.0)  # a retransmitted INVITE re-sends the final
    clock.collect()
    txn.on_ack(2.1)
    assert txn.state == S.CONFIRMED
    txn.on_request(2.2)  # absorbed in Confirmed
    clock.collect()
    clock.run_until(2.1 + T4 - 0.01)
    assert txn.state == S.CONFIRMED
    clock.run_until(2.1 + T4)
    assert txn.state == S.TERMINATED
    assert clock.times("SIP/2.0 486") == [0.0, 0.5, 1.5, 2.0]
    assert owner.server_timeouts == []


def test_invite_server_2xx_enters_accepted_and_absorbs_retransmitted_invites():
    """RFC 6026: after a 2xx, retransmitted INVITEs are absorbed, further 2xx pass, late
    non-2xx are refused, and Timer L ends the transaction."""
    txn, clock = new_server()
    txn.respond(response_bytes(100), 100, 0.0)
    assert txn.respond(response_bytes(200), 200, 1.0)
    assert txn.state == S.ACCEPTED
    clock.collect()
    txn.on_request(1.2)
    assert txn.respond(response_bytes(200), 200, 1.5)
    assert not txn.respond(response_bytes(486), 486, 1.6)
    clock.collect()
    assert clock.times("SIP/2.0 100") == [0.0]
    assert clock.times("SIP/2.0 200") == [0.0, 0.0]
    clock.run_until(1.0 + 32.0)
    assert txn.state == S.TERMINATED


def test_invite_server_refuses_a_second_final():
    """Once Completed, another final is refused (returns False, nothing sent)."""
    txn, clock = new_server()
    txn.respond(response_bytes(486), 486, 0.0)
    clock.layer.drain()
    assert not txn.respond(response_bytes(487), 487, 0.1)
    assert not txn.respond(response_bytes(180), 180, 0.1)
    assert clock.layer.drain() == []


def test_reliable_invite_server_skips_timer_g_and_timer_i():
    """Over TCP the final is not retransmitted and the ACK ends the transaction at once."""
    txn, clock = new_server(reliable=True)
    txn.respond(response_bytes(486), 486, 0.0)
    clock.collect()
    clock.run_until(10.0)
    assert clock.times("SIP/2.0 486") == [0.0]
    txn.on_ack(10.0)
    assert txn.state == S.TERMINATED and clock.layer.servers == {}


def test_reliable_invite_server_still_has_timer_h():
    """Timer H applies on every transport: no ACK in 64*T1 over TCP ends it too."""
    txn, clock = new_server(reliable=True)
    owner = txn.owner
    txn.respond(response_bytes(500), 500, 0.0)
    clock.run_until(40.0)
    assert owner.server_timeouts == [32.0] and txn.state == S.TERMINATED


# -- non-INVITE server --------------------------------------------------------------------

def test_non_invite_server_absorbs_in_trying_and_resends_later():
    """Retransmissions are ignored in Trying, answered with the last 1xx in Proceeding and
    with the final in Completed; Timer J (64*T1) ends the transaction."""
    txn, clock = new_server("OPTIONS")
    txn.on_request(0.1)
    assert clock.layer.drain() == []
    txn.respond(response_bytes(100), 100, 0.2)
    txn.on_request(0.3)
    txn.respond(response_bytes(200), 200, 0.4)
    assert txn.state == S.COMPLETED
    txn.on_request(0.5)
    clock.collect()
    assert [line for _, line, _ in clock.take()] == [
        "SIP/2.0 100 X", "SIP/2.0 100 X", "SIP/2.0 200 X", "SIP/2.0 200 X"]
    assert not txn.respond(response_bytes(404), 404, 0.6)
    layer = clock.layer
    held = layer.servers[txn.key]  # a compact record waits out Timer J
    assert isinstance(held, S.Completed) and held.state == S.COMPLETED
    assert held.method == "OPTIONS" and held.call_id == txn.call_id
    assert not held.respond(response_bytes(404), 404, 0.7)
    held.on_request(0.8)
    clock.collect()
    assert [line for _, line, _ in clock.take()] == ["SIP/2.0 200 X"]
    owner = held.owner
    assert txn.owner is None and owner.server_ends == []
    clock.run_until(0.4 + 31.9)
    assert layer.servers[txn.key] is held and layer.next_deadline() == 0.4 + 32.0
    clock.run_until(0.4 + 32.0)
    assert layer.servers == {} and clock.take() == [] and layer.next_deadline() is None
    assert owner.server_ends == [held] and held.owner is None  # told when Timer J ran out


def test_reliable_non_invite_server_ends_at_the_final():
    """Over TCP there is no Timer J."""
    txn, clock = new_server("OPTIONS", reliable=True)
    txn.respond(response_bytes(200), 200, 0.0)
    assert txn.state == S.TERMINATED and clock.layer.next_deadline() is None


# -- matching and the timer heap ----------------------------------------------------------

def test_server_matching_by_branch_and_ack_to_its_invite():
    """ACK matches its INVITE's server transaction, CANCEL gets its own but finds the INVITE."""
    layer = TransactionLayer()
    invite = parse_message(sipmsg.request("INVITE", branch="z9hG4bKm1", call_id="m@x"))
    txn = layer.create_server(invite, TARGET, False)
    ack = parse_message(sipmsg.request("ACK", branch="z9hG4bKm1", call_id="m@x"))
    cancel = parse_message(sipmsg.request("CANCEL", branch="z9hG4bKm1", call_id="m@x"))
    other = parse_message(sipmsg.request("INVITE", branch="z9hG4bKm2", call_id="m@x"))
    assert layer.find_server(ack) is txn
    assert layer.find_server(cancel) is None
    assert layer.find_invite_for_cancel(cancel) is txn
    assert layer.find_server(other) is None


def test_rfc2543_requests_match_without_a_magic_cookie():
    """Without z9hG4bK, Call-ID, From tag, CSeq and the top Via identify the transaction."""
    layer = TransactionLayer()
    raw = sipmsg.request("INVITE", branch="oldstyle1", call_id="old@x")
    txn = layer.create_server(parse_message(raw), TARGET, False)
    assert server_key(parse_message(raw))[0] == "2543"
    assert layer.find_server(parse_message(raw)) is txn
    ack = parse_message(sipmsg.request("ACK", branch="oldstyle1", call_id="old@x"))
    assert layer.find_server(ack) is txn
    cancel = parse_message(sipmsg.request("CANCEL", branch="oldstyle1", call_id="old@x"))
    assert layer.find_invite_for_cancel(cancel) is txn
    other = parse_message(sipmsg.request("INVITE", branch="oldstyle1", call_id="old@x",
                                         cseq=2))
    assert layer.find_server(other) is None


def test_client_matching_uses_branch_and_cseq_method():
    """A response to the CANCEL does not reach the INVITE transaction on the same branch."""
    txn, owner, clock = new_client()
    txn.on_response(reply(txn, 180, "Ringing"), 0.1)
    txn.cancel(0.2)
    cancel_ok = parse_message(sipmsg.response_to(clock.layer.drain()[-1][0], 200, "OK"))
    assert clock.layer.find_client(cancel_ok) is not txn
    assert clock.layer.find_client(cancel_ok).method == "CANCEL"
    assert clock.layer.find_client(reply(txn, 487)) is txn


def test_timer_heap_rearm_cancel_and_order():
    """Re-arming supersedes, cancelling removes, and due timers come out in time order."""
    class Owner_:
        def __init__(self):
            self.timers = {}
    heap = TimerHeap()
    a, b = Owner_(), Owner_()
    heap.arm(a, "X", 5.0)
    heap.arm(a, "X", 2.0)   # supersedes 5.0
    heap.arm(b, "Y", 1.0)
    heap.arm(b, "Z", 3.0)
    heap.cancel(b, "Z")
    assert heap.next_deadline() == 1.0
    assert heap.pop_due(2.0) == [(b, "Y"), (a, "X")]
    assert heap.next_deadline() is None
    assert heap.pop_due(10.0) == []
    assert a.timers == {} and b.timers == {}


# -- every (state, input) pair ---------------------------------------------------------------
#
# Each machine is a table: the state a transaction is in, an input the public API allows
# in that state, and the state it must end in. Timers are driven only through the layer
# ("timer": the clock runs until one of this transaction's own timers fires), since the
# public API cannot fire an unarmed timer. The table gives the effect of the first timer
# due in the state; TIMER_LATER lists where a later one (Timer B/F/H after retransmission
# timers) leads, which the random walk below may also reach.

CLIENT_INVITE = {
    (C.CALLING, "1xx"): C.PROCEEDING, (C.CALLING, "2xx"): C.ACCEPTED,
    (C.CALLING, "final"): C.COMPLETED, (C.CALLING, "timer"): C.CALLING,  # Timer A
    (C.CALLING, "cancel"): C.CALLING,
    (C.PROCEEDING, "1xx"): C.PROCEEDING, (C.PROCEEDING, "2xx"): C.ACCEPTED,
    (C.PROCEEDING, "final"): C.COMPLETED, (C.PROCEEDING, "timer"): C.TERMINATED,  # fr_inv
    (C.PROCEEDING, "cancel"): C.PROCEEDING,
    (C.COMPLETED, "1xx"): C.COMPLETED, (C.COMPLETED, "2xx"): C.COMPLETED,
    (C.COMPLETED, "final"): C.COMPLETED, (C.COMPLETED, "timer"): C.TERMINATED,  # D
    (C.COMPLETED, "cancel"): C.COMPLETED,
    (C.ACCEPTED, "1xx"): C.ACCEPTED, (C.ACCEPTED, "2xx"): C.ACCEPTED,
    (C.ACCEPTED, "final"): C.ACCEPTED, (C.ACCEPTED, "timer"): C.TERMINATED,  # M
    (C.ACCEPTED, "cancel"): C.ACCEPTED,
    (C.TERMINATED, "1xx"): C.TERMINATED, (C.TERMINATED, "2xx"): C.TERMINATED,
    (C.TERMINATED, "final"): C.TERMINATED, (C.TERMINATED, "timer"): C.TERMINATED,
    (C.TERMINATED, "cancel"): C.TERMINATED,
}
CLIENT_NON_INVITE = {
    (C.TRYING, "1xx"): C.PROCEEDING, (C.TRYING, "2xx"): C.COMPLETED,
    (C.TRYING, "final"): C.COMPLETED, (C.TRYING, "timer"): C.TRYING,  # Timer E
    (C.TRYING, "cancel"): C.TRYING,
    (C.PROCEEDING, "1xx"): C.PROCEEDING, (C.PROCEEDING, "2xx"): C.COMPLETED,
    (C.PROCEEDING, "final"): C.COMPLETED, (C.PROCEEDING, "timer"): C.PROCEEDING,
    (C.PROCEEDING, "cancel"): C.PROCEEDING,
    (C.COMPLETED, "1xx"): C.COMPLETED, (C.COMPLETED, "2xx"): C.COMPLETED,
    (C.COMPLETED, "final"): C.COMPLETED, (C.COMPLETED, "timer"): C.TERMINATED,  # K
    (C.COMPLETED, "cancel"): C.COMPLETED,
    (C.TERMINATED, "1xx"): C.TERMINATED, (C.TERMINATED, "2xx"): C.TERMINATED,
    (C.TERMINATED, "final"): C.TERMINATED, (C.TERMINATED, "timer"): C.TERMINATED,
    (C.TERMINATED, "cancel"): C.TERMINATED,
}
SERVER_INVITE = {
    (S.PROCEEDING, "request"): S.PROCEEDING, (S.PROCEEDING, "ack"): S.PROCEEDING,
    (S.PROCEEDING, "send-1xx"): S.PROCEEDING, (S.PROCEEDING, "send-2xx"): S.ACCEPTED,
    (S.PROCEEDING, "send-final"): S.COMPLETED, (S.PROCEEDING, "timer"): S.PROCEEDING,
    (S.COMPLETED, "request"): S.COMPLETED, (S.COMPLETED, "ack"): S.CONFIRMED,
    (S.COMPLETED, "send-1xx"): S.COMPLETED, (S.COMPLETED, "send-2xx"): S.COMPLETED,
    (S.COMPLETED, "send-final"): S.COMPLETED, (S.COMPLETED, "timer"): S.COMPLETED,  # G
    (S.CONFIRMED, "request"): S.CONFIRMED, (S.CONFIRMED, "ack"): S.CONFIRMED,
    (S.CONFIRMED, "send-1xx"): S.CONFIRMED, (S.CONFIRMED, "send-2xx"): S.CONFIRMED,
    (S.CONFIRMED, "send-final"): S.CONFIRMED, (S.CONFIRMED, "timer"): S.TERMINATED,  # I
    (S.ACCEPTED, "request"): S.ACCEPTED, (S.ACCEPTED, "ack"): S.ACCEPTED,
    (S.ACCEPTED, "send-1xx"): S.ACCEPTED, (S.ACCEPTED, "send-2xx"): S.ACCEPTED,
    (S.ACCEPTED, "send-final"): S.ACCEPTED, (S.ACCEPTED, "timer"): S.TERMINATED,  # L
    (S.TERMINATED, "request"): S.TERMINATED, (S.TERMINATED, "ack"): S.TERMINATED,
    (S.TERMINATED, "send-1xx"): S.TERMINATED, (S.TERMINATED, "send-2xx"): S.TERMINATED,
    (S.TERMINATED, "send-final"): S.TERMINATED, (S.TERMINATED, "timer"): S.TERMINATED,
}
SERVER_NON_INVITE = {
    (S.TRYING, "request"): S.TRYING, (S.TRYING, "send-1xx"): S.PROCEEDING,
    (S.TRYING, "send-2xx"): S.COMPLETED, (S.TRYING, "send-final"): S.COMPLETED,
    (S.TRYING, "timer"): S.TRYING,
    (S.PROCEEDING, "request"): S.PROCEEDING, (S.PROCEEDING, "send-1xx"): S.PROCEEDING,
    (S.PROCEEDING, "send-2xx"): S.COMPLETED, (S.PROCEEDING, "send-final"): S.COMPLETED,
    (S.PROCEEDING, "timer"): S.PROCEEDING,
    (S.COMPLETED, "request"): S.COMPLETED, (S.COMPLETED, "send-1xx"): S.COMPLETED,
    (S.COMPLETED, "send-2xx"): S.COMPLETED, (S.COMPLETED, "send-final"): S.COMPLETED,
    (S.COMPLETED, "timer"): S.TERMINATED,  # J
    (S.TERMINATED, "request"): S.TERMINATED, (S.TERMINATED, "send-1xx"): S.TERMINATED,
    (S.TERMINATED, "send-2xx"): S.TERMINATED, (S.TERMINATED, "send-final"): S.TERMINATED,
    (S.TERMINATED, "timer"): S.TERMINATED,
}

TIMER_LATER = {
    ("client-invite", C.CALLING): C.TERMINATED,         # fr / Timer B after Timer A
    ("client-non-invite", C.TRYING): C.TERMINATED,      # Timer F after Timer E
    ("client-non-invite", C.PROCEEDING): C.TERMINATED,  # Timer F after Timer E
    ("server-invite", C.COMPLETED): S.TERMINATED,       # Timer H after Timer G
}

STATUS = {"1xx": 180, "2xx": 200, "final": 486, "send-1xx": 180, "send-2xx": 200,
          "send-final": 486}


class Machine:
    """One transaction under test plus its clock; ``apply(input)`` feeds one input.

    A server transaction is what the layer holds for its key: a completed
    non-INVITE one over UDP is a :class:`~sipdisp.transaction.server.Completed`
    record there until Timer J, and none at all (terminated) after it."""

    def __init__(self, kind):
        self.kind = kind
        self.now = 0.0
        if kind in ("client-invite", "client-non-invite"):
            method = "INVITE" if kind == "client-invite" else "OPTIONS"
            self.first, self.owner, self.clock = new_client(method, fr=2.0, fr_inv=4.0)
        else:
            self.first, self.clock = new_server("INVITE" if kind == "server-invite" else "BYE")
        self.layer = self.clock.layer

    @property
    def txn(self):
        """The transaction object that takes the inputs now."""
        if self.kind.startswith("client"):
            return self.first
        return self.layer.servers.get(self.first.key, self.first)

    @property
    def state(self):
        """The transaction's state; a server one out of the table has ended."""
        if self.kind.startswith("client") or self.first.key in self.layer.servers:
            return self.txn.state
        return S.TERMINATED

    def _timers(self):
        txn = self.txn
        if isinstance(txn, S.Completed):
            return {"J": txn.deadline}
        return dict(txn.timers)

    def apply(self, what):
        self.now += 0.01
        txn = self.txn
        if what == "timer":
            before = (self.state, self._timers())
            while self._timers():  # other transactions' timers (our CANCEL's) may come first
                self.now = max(self.now, self.layer.next_deadline())
                self.layer.on_timers(self.now)
                if (self.state, self._timers()) != before:
                    break
        elif what == "cancel":
            txn.cancel(self.now)
        elif what == "request":
            txn.on_request(self.now)
        elif what == "ack":
            txn.on_ack(self.now)
        elif what.startswith("send-"):
            txn.respond(response_bytes(STATUS[what]), STATUS[what], self.now)
        else:
            txn.on_response(reply(txn, STATUS[what]), self.now)
        for data, _ in self.layer.drain():
            assert isinstance(data, bytes)


TABLES = {"client-invite": CLIENT_INVITE, "client-non-invite": CLIENT_NON_INVITE,
          "server-invite": SERVER_INVITE, "server-non-invite": SERVER_NON_INVITE}

#: inputs that bring a fresh transaction to each state
RECIPES = {
    "client-invite": {C.CALLING: [], C.PROCEEDING: ["1xx"], C.COMPLETED: ["final"],
                      C.ACCEPTED: ["2xx"], C.TERMINATED: ["final", "timer"]},
    "client-non-invite": {C.TRYING: [], C.PROCEEDING: ["1xx"], C.COMPLETED: ["2xx"],
                          C.TERMINATED: ["2xx", "timer"]},
    "server-invite": {S.PROCEEDING: [], S.COMPLETED: ["send-final"],
                      S.CONFIRMED: ["send-final", "ack"], S.ACCEPTED: ["send-2xx"],
                      S.TERMINATED: ["send-2xx", "timer"]},
    "server-non-invite": {S.TRYING: [], S.PROCEEDING: ["send-1xx"],
                          S.COMPLETED: ["send-final"], S.TERMINATED: ["send-final", "timer"]},
}


def _pairs():
    for kind, table in TABLES.items():
        for (state, what), expected in table.items():
            yield pytest.param(kind, state, what, expected, id=f"{kind}-{state}-{what}")


def test_tables_cover_every_state_and_input():
    """Each table lists every (state, input) combination of its machine."""
    for kind, table in TABLES.items():
        states = {s for s, _ in table}
        inputs = {i for _, i in table}
        assert set(itertools.product(states, inputs)) == set(table), kind
        assert states == set(RECIPES[kind]), kind


@pytest.mark.parametrize("kind,state,what,expected", list(_pairs()))
def test_state_table(kind, state, what, expected):
    """Every (state, input) pair the public API allows ends in the state the table says."""
    m = Machine(kind)
    for step in RECIPES[kind][state]:
        m.apply(step)
    assert m.state == state
    m.apply(what)
    assert m.state == expected
    if expected == "terminated":
        table = m.layer.clients if kind.startswith("client") else m.layer.servers
        if (kind, state, what) == ("client-invite", C.PROCEEDING, "timer"):
            # gave up after a provisional: CANCEL sent, lingers for Timer D to ACK the 487
            assert set(m.txn.timers) == {"D"} and m.txn in table.values()
        else:
            assert m.txn not in table.values()
            assert m.txn.timers == {}


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402


@pytest.mark.parametrize("kind", sorted(TABLES))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_input_sequences_follow_the_table(kind, data):
    """Any sequence of allowed inputs never raises and every step follows the table, so
    the state never leaves the known set."""
    table = TABLES[kind]
    inputs = sorted({i for _, i in table})
    steps = data.draw(st.lists(st.sampled_from(inputs), max_size=12))
    m = Machine(kind)
    for what in steps:
        before = m.state
        m.apply(what)
        allowed = {table[(before, what)]}
        if what == "timer" and (kind, before) in TIMER_LATER:
            allowed.add(TIMER_LATER[(kind, before)])
        assert m.state in allowed, (before, what)
    m.clock.run_until(m.now + 1000.0)
    if kind.startswith("client"):
        assert m.state == "terminated"  # a client transaction always ends by itself
    else:  # a server transaction waits for its TU's answer, and ends once it has one
        assert m.state in ("terminated", "trying", "proceeding")
    if m.state == "terminated":
        assert m.layer.next_deadline() is None
        assert m.layer.clients == {} and m.layer.servers == {}


def test_late_wake_up_fires_each_live_timer_once():
    """When the edge wakes late and Timer B and fr are both overdue, the branch times out
    once: a timer cancelled by an earlier one in the same wake-up does not fire."""
    txn, owner, clock = new_client(reliable=True, fr=40.0)
    clock.layer.on_timers(50.0)
    assert owner.timeouts == [50.0]
    assert clock.layer.next_deadline() is None


def test_timer_heap_pop_next_skips_cancelled_and_stops_at_now():
    """pop_next returns the earliest live due timer, skipping cancelled ones."""
    class Owner_:
        def __init__(self):
            self.timers = {}
    heap = TimerHeap()
    a = Owner_()
    heap.arm(a, "X", 1.0)
    heap.arm(a, "Y", 2.0)
    heap.arm(a, "Z", 3.0)
    heap.cancel(a, "X")
    assert heap.pop_next(2.5) == (a, "Y")
    assert heap.pop_next(2.5) is None
    assert heap.pop_next(3.0) == (a, "Z")
