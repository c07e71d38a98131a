"""The dialog's pure parts: the state table, flags, route sets, deadlines and profiles."""

import itertools

import pytest

from sipdisp.dialog import Profiles
from sipdisp.dialog.deadlines import DeadlineQueue
from sipdisp.dialog.dialog import (bits_to_flags, flags_to_bits, parse_flags,
                                   split_route_set)
from sipdisp.dialog.states import (CONFIRMED, DELETED, EARLY, EVENTS, STATE_NAMES,
                                   TRANSITIONS, UNCONFIRMED, DialogStateError, transition)
from sipdisp.sip.uri import parse_uri

STATES = tuple(STATE_NAMES)


@pytest.mark.parametrize("state,event", list(itertools.product(STATES, EVENTS)))
def test_every_state_event_pair_is_in_the_table_or_refused(state, event):
    """Every (state, event) pair either moves as the table says or raises DialogStateError."""
    if (state, event) in TRANSITIONS:
        assert transition(state, event) == TRANSITIONS[state, event]
    else:
        with pytest.raises(DialogStateError):
            transition(state, event)


def test_deleted_is_terminal_and_every_ending_event_leads_there():
    """Nothing leaves the deleted state, and failure, bye, timeout, end and expire all end in it."""
    assert not [pair for pair in TRANSITIONS if pair[0] == DELETED]
    ends = {event for (state, event), new in TRANSITIONS.items() if new == DELETED}
    assert ends == {"failure", "bye", "timeout", "end", "expire"}


def test_a_call_walks_unconfirmed_early_confirmed_deleted():
    """The usual life of a call: 18x makes it early, 2xx confirmed, BYE deleted."""
    state = UNCONFIRMED
    for event, expected in (("provisional", EARLY), ("answer", CONFIRMED), ("bye", DELETED)):
        state = transition(state, event)
        assert state == expected


def test_an_unanswered_dialog_cannot_be_ended_with_bye():
    """A BYE before the 2xx is not a transition (only CANCEL ends an early call)."""
    with pytest.raises(DialogStateError, match="not allowed in state early"):
        transition(EARLY, "bye")


def test_flags_parse_and_round_trip_through_sflags():
    """create_dialog flags B, P, p map to sflags bits and back; unknown flags are refused."""
    flags = parse_flags("BPp")
    assert bits_to_flags(flags_to_bits(flags)) == flags == frozenset("BPp")
    assert parse_flags("") == frozenset()
    with pytest.raises(ValueError, match="unknown dialog flag"):
        parse_flags("Bx")


def _mine(uri):
    return uri.host == "127.0.0.1" and (uri.port or 5060) == 5060


def test_route_sets_split_around_our_record_route():
    """Entries above ours lead to the callee (reversed), those below to the caller (in order)."""
    rr = ["<sip:callee-side.example;lr>", "<sip:127.0.0.1:5060;lr>", "<sip:caller-side.example;lr>"]
    to_caller, to_callee = split_route_set(rr, lambda uri: _mine(uri))
    assert to_caller == ["<sip:caller-side.example;lr>"]
    assert to_callee == ["<sip:callee-side.example;lr>"]


def test_route_sets_skip_both_of_our_double_record_route_entries():
    """With two entries of ours (RFC 5658), both are left out of both route sets."""
    rr = ["<sip:near-callee.example;lr>", "<sip:127.0.0.1:5060;transport=tcp;r2=on;lr>",
          "<sip:127.0.0.1:5060;r2=on;lr>", "<sip:near-caller.example;lr>",
          "<sip:edge.example;lr>"]
    to_caller, to_callee = split_route_set(rr, _mine)
    assert to_caller == ["<sip:near-caller.example;lr>", "<sip:edge.example;lr>"]
    assert to_callee == ["<sip:near-callee.example;lr>"]


def test_without_our_record_route_everything_leads_to_the_callee():
    """No entry of ours: the caller side has no route set, the callee side all of it reversed."""
    assert split_route_set(["<sip:a;lr>", "<sip:b;lr>"], lambda uri: False) == \
        ([], ["<sip:b;lr>", "<sip:a;lr>"])


def test_deadline_queue_pops_due_keys_in_order_and_forgets_cancelled_ones():
    """Due keys come out earliest first; a cancelled or moved deadline fires only at its new time."""
    q = DeadlineQueue()
    q.schedule("a", 5.0)
    q.schedule("b", 3.0)
    q.schedule("c", 4.0)
    q.cancel("c")
    q.schedule("a", 10.0)
    assert q.next() == 3.0
    assert q.pop_due(6.0) == ["b"]
    assert q.next() == 10.0 and "a" in q and len(q) == 1
    assert q.pop_due(10.0) == ["a"] and q.next() is None


def test_deadline_queue_stays_small_when_deadlines_move_often():
    """Moving one key 10,000 times keeps the heap bounded (stale entries are compacted)."""
    q = DeadlineQueue()
    for i in range(10000):
        q.schedule("k", float(i))
    assert len(q._heap) <= 64 + 2 and q.next() == 9999.0


class _D:
    def __init__(self):
        self.profiles = []


def test_profiles_count_per_value_and_forget_ended_dialogs():
    """A profile with values counts per value; removing a dialog from all profiles releases its counts."""
    p = Profiles(with_value=["caller"], without_value=["inbound"])
    a, b = _D(), _D()
    assert p.add(a, "caller", "alice") and p.add(b, "caller", "alice")
    assert not p.add(a, "caller", "alice")  # once per pair
    p.add(b, "inbound")
    assert p.size("caller", "alice") == 2 and p.size("caller") == 2 and p.size("inbound") == 1
    assert p.contains(b, "caller", "alice") and not p.contains(a, "inbound")
    p.remove_all(b)
    assert p.size("caller", "alice") == 1 and p.size("inbound") == 0 and b.profiles == []
    assert p.remove(a, "caller") == 1 and p.snapshot() == {"caller": {}, "inbound": {}}


def test_profiles_refuse_unknown_names_missing_values_and_redefinitions():
    """Unknown profiles, a missing value and defining a name with the other kind are errors."""
    p = Profiles(with_value=["caller"])
    with pytest.raises(KeyError):
        p.add(_D(), "nope", "x")
    with pytest.raises(ValueError, match="needs a value"):
        p.add(_D(), "caller")
    with pytest.raises(ValueError, match="already defined"):
        p.define("caller", with_value=False)
    p.define("caller", with_value=True)  # the same again: fine
    assert p.size("caller") == 0


def test_parse_uri_of_routes_used_by_the_split():
    """A sanity check of the helper used above: loose-route URIs parse with their port."""
    assert _mine(parse_uri("sip:127.0.0.1:5060;lr")) and not _mine(parse_uri("sip:127.0.0.1:5070"))
