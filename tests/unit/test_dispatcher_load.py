"""Call-load accounting (algorithm 10) never drifts, failover moves it, and a
503 with Retry-After takes a node out: through the real core, explicit clock."""

from tests.support.dispatch import Ctx, Proxy, requests, responses
from tests.support.sipmsg import request, response_to, signed_rr

NODE1 = ("127.0.0.1", 5081)
NODE2 = ("127.0.0.1", 5082)
RR = "sip:127.0.0.1:5060;lr"

DISPATCH10 = [
    {"if": {"not": {"ds_select_dst": [0, 10]}},
     "then": [{"send_reply": [404, "No destination"]}, "exit"]},
    {"t_set_fr": [0, 2000]},
    {"t_on_failure": "RTF_DISPATCH"},
    {"route": "RELAY"},
    "exit",
]


def proxy(rows=("sip:127.0.0.1:5081", "sip:127.0.0.1:5082"), **disp):
    cfg = {"dispatcher": dict({"list_file": "/nonexistent"}, **disp),
           "routing": {"routes": {"DISPATCH": DISPATCH10}}}
    return Proxy(cfg, rows=rows)


def loads(p):
    return [d.load for d in p.dispatcher.destinations()]


def invite(p, n):
    """Send INVITE number n; return (raw INVITE, the forwarded INVITE, node)."""
    raw = request("INVITE", "sip:1000@127.0.0.1:5060", call_id=f"c{n}@t", branch=f"z9hG4bKc{n}")
    fwd = requests(p.send(raw), "INVITE")
    assert len(fwd) == 1
    return raw, fwd[0][0], fwd[0][1]


def reply(p, fwd, node, status, reason="OK", extra=()):
    return p.send(response_to(fwd.to_bytes(), status, reason, extra=extra), source=node)


def bye(p, n, node):
    raw = request("BYE", f"sip:fs@{node[0]}:{node[1]}", call_id=f"c{n}@t", to_tag="uastag",
                  cseq=2, extra=[f"Route: {signed_rr(p.core, RR, f'c{n}@t')}"])
    fwd = requests(p.send(raw), "BYE")
    assert fwd and fwd[0][1] == node
    return reply(p, fwd[0][0], node, 200)


def test_answered_call_counts_until_its_bye():
    """An answered INVITE keeps one unit of load on its node until the BYE's final reply."""
    p = proxy()
    _, fwd, node = invite(p, 1)
    assert loads(p) == [1, 0]
    assert responses(reply(p, fwd, node, 200), 200)
    assert loads(p) == [1, 0] and p.dispatcher.active_calls == (0, 1)
    bye(p, 1, node)
    assert loads(p) == [0, 0] and p.dispatcher.active_calls == (0, 0)


def test_concurrent_calls_spread_by_load():
    """Algorithm 10 sends open calls to the least loaded node."""
    p = proxy()
    nodes = [invite(p, n)[2] for n in range(6)]
    assert nodes.count(NODE1) == 3 and loads(p) == [3, 3]


def test_cancelled_call_releases_its_load():
    """A CANCELled INVITE (487 from the node) leaves no load behind."""
    p = proxy()
    raw, fwd, node = invite(p, 2)
    reply(p, fwd, node, 180, "Ringing")
    cancel = request("CANCEL", "sip:1000@127.0.0.1:5060", call_id="c2@t", branch="z9hG4bKc2")
    out = p.send(cancel)
    assert responses(out, 200) and requests(out, "CANCEL")
    out = reply(p, fwd, node, 487, "Request Terminated")
    assert responses(out, 487)
    assert loads(p) == [0, 0]


def test_timed_out_branch_fails_over_and_moves_the_load():
    """A silent node times out after 2 s, the call moves to the other node with its load, and ends at 0."""
    p = proxy()
    _, fwd1, node1 = invite(p, 3)
    out = p.advance(2.01)
    second = [r for r in requests(out, "INVITE") if r[1] != node1]
    assert len(second) == 1
    assert sorted(loads(p)) == [0, 1] and loads(p)[0 if node1 == NODE1 else 1] == 0
    reply(p, second[0][0], second[0][1], 200)
    bye(p, 3, second[0][1])
    assert loads(p) == [0, 0]
    assert p.dispatcher.sets[0].find(f"sip:{node1[0]}:{node1[1]}").letters == "IP"


def test_all_nodes_failing_releases_the_load():
    """When every node answers 500 the caller gets the 500 and every load is back to 0."""
    p = proxy()
    _, fwd, node = invite(p, 4)
    out = reply(p, fwd, node, 500, "Server Error")
    second = requests(out, "INVITE")[0]
    out = reply(p, second[0], second[1], 500, "Server Error")
    assert responses(out, 500)
    assert loads(p) == [0, 0]
    assert [d.letters for d in p.dispatcher.destinations()] == ["IP", "IP"]


def test_mixed_traffic_leaves_no_drift():
    """Forty calls answered, cancelled, failed over or rejected leave every load at 0."""
    p = proxy(probing_mode=0)
    for n in range(40):
        raw, fwd, node = invite(p, 100 + n)
        kind = n % 4
        if kind == 0:
            reply(p, fwd, node, 200)
            bye(p, 100 + n, node)
        elif kind == 1:
            reply(p, fwd, node, 180, "Ringing")
            p.send(request("CANCEL", "sip:1000@127.0.0.1:5060", call_id=f"c{100 + n}@t",
                           branch=f"z9hG4bKc{100 + n}"))
            reply(p, fwd, node, 487, "Request Terminated")
        elif kind == 2:
            out = reply(p, fwd, node, 503, "Busy")
            nxt = requests(out, "INVITE")
            if nxt:
                reply(p, nxt[0][0], nxt[0][1], 486, "Busy Here")
        else:
            reply(p, fwd, node, 486, "Busy Here")
        p.dispatcher.set_state("a", 0, "all")  # keep both nodes selectable
    p.advance(40.0)
    assert loads(p) == [0, 0] and p.dispatcher.active_calls == (0, 0)


def test_retry_after_takes_a_node_out_for_that_long():
    """A 503 with Retry-After: 30 fails over and keeps the node unselected for 30 s even once it is active."""
    p = proxy()
    _, fwd, node = invite(p, 5)
    out = reply(p, fwd, node, 503, "Service Unavailable", extra=[("retry-after", "30")])
    assert requests(out, "INVITE")[0][1] != node
    dest = p.dispatcher.sets[0].find(f"sip:{node[0]}:{node[1]}")
    assert dest.out_until == p.now + 30
    assert any("out of service for 30 s" in line for line in p.log.lines)
    p.dispatcher.prober.ping_result(dest, True, p.now, "test")  # it answers pings: active again
    assert dest.letters == "AX"
    assert {invite(p, 50 + n)[2] for n in range(4)} == {NODE2 if node == NODE1 else NODE1}
    p.advance(30.0)
    assert node in {invite(p, 60 + n)[2] for n in range(4)}


def test_lost_bye_and_lost_end_expire():
    """An answered call without BYE expires after load_expire; a pending INVITE after load_init_expire."""
    p = proxy(load_expire=60, load_init_expire=45)
    _, fwd, node = invite(p, 6)
    reply(p, fwd, node, 200)
    orphan = Ctx(request("INVITE", "sip:1@h"), now=p.now)  # its end never comes
    assert p.dispatcher.select_dst(orphan, 0, 10)
    assert sum(loads(p)) == 2 and p.dispatcher.active_calls == (1, 1)
    p.advance(61.0)
    assert loads(p) == [0, 0] and p.dispatcher.stats["loads_expired"] == 2


def test_relay_failure_releases_the_load():
    """A destination that cannot be reached (no TCP listener) gets a 503 and keeps no load."""
    p = proxy(rows=["sip:127.0.0.1:5081;transport=tcp"])
    out = p.send(request("INVITE", "sip:1000@127.0.0.1:5060"))
    assert responses(out, 503)
    assert loads(p) == [0]


def test_a_reply_after_selection_releases_the_load():
    """A route that selects a node and then answers itself leaves no load behind."""
    route = [{"if": {"ds_select_dst": [0, 10]}, "then": [{"sl_send_reply": [480, "Closed"]}]},
             "exit"]
    p = Proxy({"dispatcher": {"list_file": "/nonexistent"},
               "routing": {"routes": {"DISPATCH": route}}},
              rows=["sip:127.0.0.1:5081", "sip:127.0.0.1:5082"])
    out = p.send(request("INVITE", "sip:1000@127.0.0.1:5060"))
    assert responses(out, 480)
    assert loads(p) == [0, 0] and p.dispatcher.active_calls == (0, 0)
