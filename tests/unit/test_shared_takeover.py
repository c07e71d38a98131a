"""The sans-IO part of the cluster's dialog takeover (sipdisp/shared/takeover.py):
which dead nodes a survivor claims and when, and the addresses it adopts."""

from sipdisp.shared.sync import ADDR_FIELD, ClusterSync
from sipdisp.shared.takeover import (TakeoverPlanner, decode_addresses, encode_addresses,
                                     socket_address)
from sipdisp.dialog.profiles import Profiles

LOCK = 30.0


def live(*nodes, addr=None):
    """The peers view of a round: ``{node: fields}``."""
    return {n: ({ADDR_FIELD: addr} if addr else {"": "1"}) for n in nodes}


def test_a_node_seen_alive_is_claimed_once_when_it_lapses_and_forgotten_when_won():
    planner = TakeoverPlanner("B", LOCK)
    assert planner.observe(live("A", "C"), 0.0) == []
    assert planner.observe(live("C"), 1.0) == ["A"]
    # a claim in progress is not started again by the next rounds
    assert planner.observe(live("C"), 1.2) == []
    planner.won("A")
    assert planner.observe(live("C"), 100.0) == []
    # back and dead again: claimed again
    planner.observe(live("A", "C"), 101.0)
    assert planner.observe(live("C"), 102.0) == ["A"]


def test_this_node_is_never_claimed():
    planner = TakeoverPlanner("B", LOCK)
    planner.watch("B")
    assert planner.observe(live("B"), 0.0) == []
    assert planner.observe({}, 1.0) == []


def test_a_lost_lock_is_looked_at_again_only_if_its_holder_died():
    planner = TakeoverPlanner("B", LOCK)
    planner.observe(live("A", "C"), 0.0)
    assert planner.observe(live("C"), 1.0) == ["A"]
    planner.lost("A", "C", 1.0)
    assert planner.observe(live("C"), 10.0) == []     # the lock still holds
    assert planner.observe(live("C"), 31.5) == []     # C is alive: it did the job
    assert "A" not in planner.watched
    # the holder died before finishing: claimed again after the lock's time
    planner.observe(live("A", "C"), 40.0)
    assert planner.observe(live("C"), 41.0) == ["A"]
    planner.lost("A", "C", 41.0)
    assert planner.observe({}, 60.0) == ["C"]        # the holder itself is due now
    planner.won("C")
    assert planner.observe({}, 71.5) == ["A"]


def test_a_failed_claim_is_tried_again_after_the_lock_time():
    planner = TakeoverPlanner("B", LOCK)
    planner.observe(live("A"), 0.0)
    assert planner.observe({}, 1.0) == ["A"]
    planner.failed("A", 1.0)
    assert planner.observe({}, 30.0) == []
    assert planner.observe({}, 31.5) == ["A"]


def test_an_owner_of_rows_is_claimed_only_after_the_grace_time():
    """A node found owning rows at start may be starting itself: claimed only
    if it is still not live ``not_before``."""
    planner = TakeoverPlanner("B", LOCK)
    planner.watch("A", not_before=10.0)
    planner.watch("D", not_before=10.0)
    assert planner.observe({}, 5.0) == []
    assert planner.observe(live("D"), 10.5) == ["A"]


def test_published_addresses_are_remembered_past_the_nodes_death():
    planner = TakeoverPlanner("B", LOCK)
    text = encode_addresses([("127.0.0.2", 5060), ("10.0.0.2", 5061), ("127.0.0.2", 5060)])
    planner.observe(live("A", addr=text), 0.0)
    assert planner.observe({}, 1.0) == ["A"]
    assert planner.addresses("A") == {("127.0.0.2", 5060), ("10.0.0.2", 5061)}
    assert planner.addresses("never-seen") == set()
    assert decode_addresses("not json") == set()


def test_socket_address_of_a_dialog_socket():
    assert socket_address("udp:127.0.0.2:5060") == ("127.0.0.2", 5060)
    assert socket_address("tcp:[::1]:5080") == ("::1", 5080)
    assert socket_address("udp:::1:5060") == ("::1", 5060)
    assert socket_address("") is None and socket_address("udp:host") is None


def test_the_sync_writes_the_addresses_with_the_counts_and_again_when_they_change():
    addr = ["[[\"127.0.0.2\",5060]]"]
    sync = ClusterSync("A", "p:", 10.0, profiles=Profiles([], ["calls"]),
                       addresses=lambda: addr[0])
    request = sync.request()
    args = request[3:]
    assert args[3] == "1" and ADDR_FIELD in args and addr[0] in args
    # Redis' answer: no loss, no secret, no states, its time, nothing else
    sync.answered([0, None, [], "1000", [], [], [], 0, "1000"], 0.0)
    assert sync.request()[3:][3] == "0"          # unchanged: keep-alive only
    addr[0] = "[[\"127.0.0.2\",5070]]"
    again = sync.request()[3:]
    assert again[3] == "1" and addr[0] in again   # changed: written whole
