"""Dialog takeover by a surviving cluster node (issue 16): node A on
127.0.0.2 and node B on 127.0.0.3 share the machine's Redis (a key prefix of
the test alone) and PostgreSQL's dialog table (db_mode 1); SIPp plays the
callees, a raw UDP socket and SIPp the callers.

Two calls go through A: a long one and one whose dialog times out after
SHORT seconds. A is killed (SIGKILL); B takes both dialogs over once A's
liveness lapses (cluster.node_ttl) and re-owns their rows; the short one
times out on B, which sends BYEs to both parties; A restarted (same
node_id) leaves the re-owned call alone; a BYE sent to B with A's signed
Route is relayed to the callee and answered 200, the CDR is written and
the dialog and its profile count are gone from B.

Every wait polls with a generous deadline; nothing asserts on timing.
"""

import json
import shutil
import uuid

import pytest

from sipdisp.storage.testing import PG_URL
from tests.support.calls import rpc, wait_until
from tests.support.cluster import Cluster, ClusterRedis, HostUdpEndpoint, kill9, \
    postgres_with_schema, redis_up
from tests.support.processes import Sipp, free_port, sipp_available

pytestmark = [
    pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed"),
    pytest.mark.skipif(not (shutil.which("redis-cli") and redis_up()),
                       reason="needs redis-cli and Redis on 127.0.0.1:6379"),
]

NODE_TTL = 3.0
#: the short call's dialog timeout (counted from its answer): longer than
#: the kill and the takeover take on an idle machine; on a loaded one a
#: deadline already past fires as soon as B has taken the dialog over
SHORT = 12
PROFILE = "takeover_calls"


def route(uas_long, uas_short):
    """Both nodes' route: in-dialog requests follow the signed route set (BYE
    accounted), INVITEs are record-routed, tracked (user "short": with a
    SHORT s timeout), counted in PROFILE, accounted and sent to a SIPp UAS."""
    return [
        {"if": "has_totag", "then": [
            {"if": "loose_route", "then": [
                {"if": {"is_method": "BYE"}, "then": [{"do_accounting": ["db", "failed"]}]},
                {"if": {"not": "t_relay"}, "then": ["sl_reply_error"]}, "exit"]},
            {"if": {"is_method": "ACK"}, "then": ["exit"]},
            {"sl_send_reply": [404, "Not here"]}, "exit"]},
        {"if": {"not": {"is_method": "INVITE"}},
         "then": [{"sl_send_reply": [405, "Method Not Allowed"]}, "exit"]},
        "record_route",
        {"if": {"eq": ["$rU", "short"]},
         "then": [{"create_dialog": ["B", SHORT]},
                  {"set": {"$du": f"sip:127.0.0.1:{uas_short}"}}],
         "else": [{"create_dialog": "B"},
                  {"set": {"$du": f"sip:127.0.0.1:{uas_long}"}}]},
        {"set_dlg_profile": PROFILE},
        {"do_accounting": ["db", "missed"]},
        {"if": {"not": "t_relay"}, "then": ["sl_reply_error"]},
    ]


def node_config(redis, uas_long, uas_short):
    """What every node shares: PostgreSQL (dialogs in db_mode 1), the
    test's Redis prefix with a short node_ttl, the route."""
    return {"storage": {"url": PG_URL}, "console": {"enabled": False},
            "dialog": {"db_mode": 1, "default_timeout": 300, "profiles_no_value": [PROFILE]},
            "cluster": {"redis": redis.url, "key_prefix": redis.prefix, "sync_interval": 0.2,
                        "node_ttl": NODE_TTL},
            "routing": {"request_route": route(uas_long, uas_short)}}


def forget(db, callids):
    """Delete the test's calls from the dialog, accounting and CDR tables."""
    db.execute("DELETE FROM dialog_vars WHERE (hash_entry, hash_id) IN (SELECT "
               "hash_entry, hash_id FROM dialog WHERE callid = ANY(%s))", (callids,))
    for table in ("dialog", "cdrs", "acc", "missed_calls"):
        db.execute(f"DELETE FROM {table} WHERE callid = ANY(%s)", (callids,))


def owners(db, callids):
    """``{callid: owner node}`` of the dialog table's rows of ``callids``."""
    rows = db.execute("SELECT callid, xdata FROM dialog WHERE callid = ANY(%s)", (callids,))
    return {callid: json.loads(xdata or "{}").get("n") for callid, xdata in rows}


def cdr_vars(db, callids):
    """How many dialogs of ``callids`` have their accounting variables stored."""
    return db.execute("SELECT count(*) FROM dialog d JOIN dialog_vars v ON "
                      "d.hash_entry = v.hash_entry AND d.hash_id = v.hash_id "
                      "WHERE d.callid = ANY(%s) AND v.dialog_key = 'acc.cdr'", (callids,))[0][0]


def cdrs(db, callids):
    """``{callid: duration}`` of the CDRs of ``callids``."""
    return dict(db.execute("SELECT callid, duration FROM cdrs WHERE callid = ANY(%s)",
                           (callids,)))


def listed(node, callid):
    """The dialogs ``node`` tracks for ``callid`` (dlg.list)."""
    return rpc(node, "dlg.list", callid)


def answer(uas, request, status=200, reason="OK", extra=()):
    """The raw UAS answers ``request`` (parsed) where it came from, Record-Route copied."""
    from sipdisp.sip import make_response
    resp = make_response(request, status, reason, to_tag="uas1", record_route=True)
    for name, value in extra:
        resp.add(name, value)
    uas.send(resp.to_bytes(), *uas.last_source)


def invite(ua, uas, node, call_id, tag):
    """INVITE sip:long@A from the raw UA, answered 200 by the raw UAS; the
    200's (Record-Route values, Contact URI, To tag)."""
    ua.send(f"INVITE sip:long@{node.host}:{node.port('udp')} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bKi{tag}\r\n"
            f"From: <sip:caller@example.com>;tag={tag}\r\nTo: <sip:long@example.com>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:caller@127.0.0.1:{ua.port}>\r\nContent-Length: 0\r\n\r\n",
            node.host, node.port("udp"))
    request = uas.recv(15, match=lambda m: m.is_request and m.method == "INVITE")
    answer(uas, request, extra=[("Contact", f"<sip:callee@127.0.0.1:{uas.port}>")])
    ok = ua.recv(15, match=lambda m: not m.is_request and m.status >= 200)
    assert ok.status == 200, ok.status
    return ok.values("record-route"), str(ok.addresses("contact")[0].uri), ok.to_tag


def in_dialog(ua, method, cseq, call_id, tag, to_tag, contact, routes, host, port):
    """Send an in-dialog request of the raw UA's call to ``host``:``port``."""
    lines = [f"{method} {contact} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bK{method.lower()}{tag}",
             *[f"Route: {r}" for r in routes],
             f"From: <sip:caller@example.com>;tag={tag}",
             f"To: <sip:long@example.com>;tag={to_tag}",
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}", "Max-Forwards: 70",
             "Content-Length: 0"]
    ua.send("\r\n".join(lines) + "\r\n\r\n", host, port)


def test_a_survivor_takes_over_a_killed_nodes_dialogs_ends_them_and_the_node_back_leaves_them(
        tmp_path):
    db = postgres_with_schema()
    # the long call's callee is a raw socket: it answers where a request came
    # from (SIPp answers the address of the call's first message: dead A)
    callee = HostUdpEndpoint("127.0.0.1")
    ua = HostUdpEndpoint("127.0.0.1")  # the long call's caller
    uas_long, uas_short = callee.port, free_port()
    ids = {"a": f"A-{uuid.uuid4().hex[:8]}", "b": f"B-{uuid.uuid4().hex[:8]}"}
    call_id = f"takeover-long-{uuid.uuid4().hex[:10]}"
    tag = uuid.uuid4().hex[:8]
    procs = []
    with ClusterRedis() as redis:
        cluster = Cluster(tmp_path, node_config(redis, uas_long, uas_short),
                          per_node=[{"cluster": {"node_id": ids["a"]}},
                                    {"cluster": {"node_id": ids["b"]}}])
        a, b = cluster.nodes
        callids = [call_id]
        try:
            cluster.start()
            # the callees, then the two calls through A
            short_uas = Sipp(tmp_path, "uas_short", "uas.xml", uas_short, "u1",
                             extra=["-m", 1, "-timeout", 240]).start()
            procs.append(short_uas)
            rr, contact, to_tag = invite(ua, callee, a, call_id, tag)
            routes = list(reversed(rr))
            assert len(routes) == 1 and "127.0.0.2" in routes[0], routes
            in_dialog(ua, "ACK", 1, call_id, tag, to_tag, contact, routes, a.host,
                      a.port("udp"))
            callee.recv(15, match=lambda m: m.is_request and m.method == "ACK")
            short_uac = Sipp(tmp_path, "uac_short", "dlg_takeover_uac.xml", free_port(), "u1",
                             target=f"{a.host}:{a.port('udp')}",
                             extra=["-s", "short", "-m", 1, "-timeout", 240,
                                    "-timeout_error"]).start()
            procs.append(short_uac)
            assert wait_until(lambda: rpc(a, "dlg.profile_get_size", PROFILE)["size"] == 2, 30)
            short_id = [d["call-id"] for d in rpc(a, "dlg.list")
                        if d["call-id"] != call_id and d["lifetime"] == SHORT][0]
            callids.append(short_id)
            # both rows written with A as their owner, then A dies at once
            assert wait_until(lambda: owners(db, callids) == dict.fromkeys(callids, ids["a"]),
                              30), owners(db, callids)
            # and their variables (the CDR's data), a write of their own
            assert wait_until(lambda: cdr_vars(db, callids) == 2, 30)
            kill9(a)

            # B takes both over once A's liveness lapsed, and re-owns their rows
            assert wait_until(lambda: listed(b, call_id), NODE_TTL + 60), b.log_text()[-3000:]
            assert f"dialog: took over 2 dialogs of node {ids['a']}" in b.log_text()
            assert wait_until(lambda: owners(db, callids).get(call_id) == ids["b"], 30), \
                owners(db, callids)
            taken = listed(b, call_id)[0]
            assert taken["state_name"] == "confirmed" and taken["profiles"] == [PROFILE]
            status = rpc(b, "cluster.status")
            assert status["stats"]["dialogs_taken_over"] == 2, status
            assert rpc(b, "dlg.profile_get_size", PROFILE)["size"] == 2

            # the short call times out on B: a BYE to each party, both answer
            assert short_uac.wait(120) == 0, short_uac.errors()[-1500:]
            assert short_uas.wait(60) == 0, short_uas.errors()[-1500:]
            assert wait_until(lambda: not listed(b, short_id), 30)
            assert f"({short_id}) timed out after {SHORT} s; BYE to both parties" in b.log_text()
            assert wait_until(lambda: short_id not in owners(db, callids), 30)

            # A back with its node id: the re-owned call is B's, not restored at A
            a.start()
            assert wait_until(lambda: "left 1 answered call" in a.log_text()
                              or "restored" in a.log_text(), 30)
            assert listed(a, call_id) == []
            assert ids["b"] in a.log_text()

            # the caller's BYE with A's Route reaches B: relayed to the callee, 200
            in_dialog(ua, "BYE", 2, call_id, tag, to_tag, contact, routes, b.host,
                      b.port("udp"))
            bye = callee.recv(20, match=lambda m: m.is_request and m.method == "BYE")
            assert callee.last_source[0] == b.host  # relayed by B
            assert not bye.has("route")
            answer(callee, bye)
            reply = ua.recv(20, match=lambda m: not m.is_request and m.cseq_method == "BYE"
                            and m.status >= 200)
            assert reply.status == 200, reply.status
            assert wait_until(lambda: not listed(b, call_id), 30)
            assert wait_until(lambda: rpc(b, "dlg.profile_get_size", PROFILE)["size"] == 0, 30)
            assert wait_until(lambda: len(cdrs(db, callids)) == 2, 30), \
                (cdrs(db, callids), callids, b.log_text()[-4000:])
            assert wait_until(lambda: owners(db, callids) == {}, 30)
            counters = rpc(b, "dlg.stats")["counters"]
            assert counters["taken_over"] == 2 and counters["ended_bye"] >= 1, counters
            assert "Traceback" not in b.log_text()
        finally:
            for proc in procs:
                proc.stop()
            callee.close()
            ua.close()
            cluster.stop()
            forget(db, callids)


def test_two_survivors_race_for_a_dead_node_and_only_one_takes_its_dialog(tmp_path):
    """Three nodes: A is killed with a call up; B and C both see it die and
    race for its lock: exactly one takes the call over, the other logs who
    holds it; the BYE with A's Route sent to the winner ends the call."""
    db = postgres_with_schema()
    callee = HostUdpEndpoint("127.0.0.1")
    ua = HostUdpEndpoint("127.0.0.1")
    names = [f"{n}-{uuid.uuid4().hex[:8]}" for n in "ABC"]
    call_id = f"takeover-race-{uuid.uuid4().hex[:10]}"
    tag = uuid.uuid4().hex[:8]
    with ClusterRedis() as redis:
        cluster = Cluster(tmp_path, node_config(redis, callee.port, free_port()), n=3,
                          per_node=[{"cluster": {"node_id": n}} for n in names])
        a, b, c = cluster.nodes
        try:
            cluster.start()
            rr, contact, to_tag = invite(ua, callee, a, call_id, tag)
            routes = list(reversed(rr))
            in_dialog(ua, "ACK", 1, call_id, tag, to_tag, contact, routes, a.host,
                      a.port("udp"))
            callee.recv(15, match=lambda m: m.is_request and m.method == "ACK")
            # both survivors saw A alive before it dies
            assert wait_until(lambda: all(names[0] in rpc(n, "cluster.status")["peers"]
                                          for n in (b, c)), 30)
            assert wait_until(lambda: owners(db, [call_id]) == {call_id: names[0]}, 30)
            assert wait_until(lambda: cdr_vars(db, [call_id]) == 1, 30)
            kill9(a)

            def holders():
                return [n for n in (b, c) if listed(n, call_id)]
            assert wait_until(holders, NODE_TTL + 60), (b.log_text()[-2000:], c.log_text()[-2000:])
            # the loser tried too (both saw A die) and found the lock taken
            winner = holders()[0]
            loser = c if winner is b else b
            won_by = names[1] if winner is b else names[2]
            assert wait_until(lambda: f"dialog: node {names[0]} is being taken over by node "
                                      f"{won_by}" in loser.log_text(), 30), loser.log_text()[-3000:]
            assert holders() == [winner]
            assert rpc(loser, "cluster.status")["stats"]["dialogs_taken_over"] == 0
            assert rpc(winner, "cluster.status")["stats"]["dialogs_taken_over"] == 1
            assert f"took over 1 dialogs of node {names[0]}" in winner.log_text()
            assert owners(db, [call_id]) == {call_id: won_by}

            in_dialog(ua, "BYE", 2, call_id, tag, to_tag, contact, routes, winner.host,
                      winner.port("udp"))
            bye = callee.recv(20, match=lambda m: m.is_request and m.method == "BYE")
            assert callee.last_source[0] == winner.host
            answer(callee, bye)
            reply = ua.recv(20, match=lambda m: not m.is_request and m.cseq_method == "BYE"
                            and m.status >= 200)
            assert reply.status == 200
            assert wait_until(lambda: not listed(winner, call_id), 30)
            assert wait_until(lambda: owners(db, [call_id]) == {}, 30)
        finally:
            cluster.stop()
            callee.close()
            ua.close()
            forget(db, [call_id])
