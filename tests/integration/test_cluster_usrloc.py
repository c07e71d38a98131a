"""Registrations shared by two real sipdisp nodes (issue 16): node A on
127.0.0.2 and node B on 127.0.0.3, one Redis (the machine's, under a key
prefix unique to the test; a private redis-server for the outage) and the
PostgreSQL location table as the system of record (db_mode 1).

- a UDP user registered at A receives SIPp calls that arrive at B, B
  sending to her directly; with A killed (kill -9) she still does;
- a WebSocket user registered at A receives a call arriving at B through A
  (the stored flow route), answers, and BYE works both ways;
- Redis stopped: calls route on what the nodes know; a REGISTER meanwhile
  reaches Redis once it is back, and B finds that user then.
"""

import shutil
import time
import uuid

import pytest

from sipdisp.storage.testing import PG_URL
from tests.support.cluster import Cluster, ClusterRedis, HostUdpEndpoint, PrivateRedis, \
    kill9, location_db, redis_up, register_udp, user_name, wait_shared
from tests.support.peers import WsPeer, answer, ensure_node_modules, node_available
from tests.support.processes import Sipp, free_port, sipp_available
from tests.support.registrar import rpc

pytestmark = [
    pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed"),
    pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("redis-cli")
                            and redis_up()),
                       reason="needs redis-server, redis-cli and Redis on 127.0.0.1:6379"),
]

#: the route of both nodes: in-dialog requests follow the route set, REGISTER
#: is saved, everything else goes to the registered contacts (record-routed)
ROUTE = [
    {"if": "has_totag",
     "then": [{"if": "loose_route",
               "then": [{"if": {"not": "t_relay"}, "then": ["sl_reply_error"]}, "exit"]},
              {"if": {"is_method": "ACK"}, "then": ["exit"]},
              {"sl_send_reply": [404, "Not here"]}, "exit"]},
    {"if": {"is_method": "REGISTER"}, "then": [{"save": "location"}, "exit"]},
    {"if": {"is_method": "INVITE"}, "then": ["record_route"]},
    {"if": {"not": {"lookup": "location"}},
     "then": [{"sl_send_reply": [404, "Not Found"]}, "exit"]},
    {"if": {"not": "t_relay"}, "then": ["sl_reply_error"]},
]


@pytest.fixture
def postgres():
    """The machine's PostgreSQL with sipdisp's tables (skipped when unreachable)."""
    with location_db() as db:
        yield db


def config(redis, storage_url):
    return {"storage": {"url": storage_url},
            "usrloc": {"db_mode": 1, "shared_url": redis.url, "shared_prefix": redis.prefix},
            "registrar": {"accept_any_domain": True},
            "cache": {"redis_reconnect_max": 1.0},
            "routing": {"request_route": ROUTE}}


def run_calls(tmp_path, name, node, user, uas, count=3):
    """``count`` SIPp calls to ``user`` arriving at ``node`` (answered by
    ``uas``, a SIPp UAS that is her registered contact): (exit code, stats, Sipp)."""
    uac = Sipp(tmp_path, f"{name}_uac", "uac.xml", free_port(), "u1",
               target=f"{node.host}:{node.port('udp')}",
               extra=["-s", user, "-m", count, "-r", 5, "-d", 100, "-timeout", 30])
    uac.start()
    code = uac.wait(60)
    return code, uac.stats(), uac


def test_a_udp_user_registered_at_a_is_called_through_b_even_after_a_is_killed(
        tmp_path, postgres):
    """She registers at A; calls arriving at B reach her contact straight
    from B (A's log never sees them); after kill -9 of A they still do."""
    db, users = postgres
    alice = user_name(users, "alice")
    with ClusterRedis() as redis, Cluster(tmp_path, config(redis, PG_URL)) as (a, b):
        uas_port = free_port()
        uas = Sipp(tmp_path, "uas", "uas.xml", uas_port, "u1", extra=["-m", 6]).start()
        try:
            wait_shared(a, b)
            assert register_udp(a, alice, uas_port).status == 200
            # the 200 goes out before Redis has answered the save
            deadline = time.monotonic() + 15
            while redis.keys() != [f"{redis.prefix}ul:{alice}"]:
                assert time.monotonic() < deadline, (redis.keys(), a.log_text()[-3000:])
                time.sleep(0.05)
            deadline = time.monotonic() + 15  # db_mode 1 queues the write at once
            while not db.execute("SELECT contact FROM location WHERE username = %s", (alice,)):
                assert time.monotonic() < deadline, a.log_text()[-3000:]
                time.sleep(0.1)
            rows = db.execute("SELECT contact FROM location WHERE username = %s", (alice,))
            assert [tuple(r) for r in rows] == [(f"sip:{alice}@127.0.0.1:{uas_port}",)]
            code, stats, uac = run_calls(tmp_path, "first", b, alice, uas)
            assert code == 0 and stats["ok"] == 3, uac.errors() or b.log_text()[-3000:]
            assert rpc(b, "ul.stats")["shared_reads"] >= 3
            # B relayed them itself (INVITE, ACK, BYE), A not one
            assert rpc(b, "stats.get", "fwd_requests")["fwd_requests"] >= 6
            assert rpc(a, "stats.get", "fwd_requests").get("fwd_requests", 0) == 0
            kill9(a)
            code, stats, uac = run_calls(tmp_path, "after_kill", b, alice, uas)
            assert code == 0 and stats["ok"] == 3, uac.errors() or b.log_text()[-3000:]
            assert uas.wait(30) == 0
        finally:
            uas.stop()


@pytest.mark.skipif(not node_available(), reason="node and npm are not installed")
def test_a_websocket_user_at_a_is_called_through_b_and_bye_works_both_ways(
        tmp_path, postgres):
    """She registers over WebSocket at A; a call arriving at B goes to A
    (the stored flow route) and over her WebSocket; she answers; the
    caller's BYE and, on a second call, hers go through both nodes."""
    ensure_node_modules()
    db, users = postgres
    alice = user_name(users, "wsalice")
    contact = f"sip:{alice}@df7jal23ls0d.invalid;transport=ws"
    with ClusterRedis() as redis, Cluster(tmp_path, config(redis, PG_URL)) as (a, b), \
            WsPeer(f"ws://{a.host}:{a.port('ws')}", lifetime=60) as peer, \
            HostUdpEndpoint("127.0.0.1") as caller:
        peer.open()
        wait_shared(a, b)
        n = uuid.uuid4().hex[:10]
        peer.send(f"REGISTER sip:example.com SIP/2.0\r\n"
                  f"Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKw{n}\r\n"
                  f"From: <sip:{alice}@example.com>;tag=w{n}\r\n"
                  f"To: <sip:{alice}@example.com>\r\nCall-ID: wsreg-{n}\r\n"
                  f"CSeq: 1 REGISTER\r\nMax-Forwards: 70\r\nContact: <{contact}>\r\n"
                  "Expires: 600\r\nContent-Length: 0\r\n\r\n")
        ok = peer.recv_sip(10, match=lambda m: not m.is_request and m.status >= 200)
        assert ok.status == 200
        (entry,) = redis.cli("HVALS", f"{redis.prefix}ul:{alice}").splitlines()
        assert f"<sip:{a.host}:{a.port('udp')};transport=udp;lr;ob;flow=" in entry
        for who_hangs_up in ("caller", "callee"):
            call_id = f"x{uuid.uuid4().hex}"
            ftag = f"c{uuid.uuid4().hex[:8]}"
            caller.send(
                f"INVITE sip:{alice}@example.com SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bKi{call_id}\r\n"
                f"From: <sip:bob@example.com>;tag={ftag}\r\nTo: <sip:{alice}@example.com>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
                f"Contact: <sip:bob@127.0.0.1:{caller.port}>\r\nContent-Length: 0\r\n\r\n",
                b.host, b.port("udp"))
            inv = peer.recv_sip(15, match=lambda m: m.is_request and m.method == "INVITE")
            assert inv.call_id == call_id and str(inv.uri) == contact
            rr = inv.values("record-route")
            assert any(f"{b.host}:{b.port('udp')}" in r for r in rr), rr
            assert any(f"{a.host}:{a.port('ws')}" in r for r in rr), rr
            peer.send(answer(inv, 200, "OK", to_tag="callee1", contact=contact))
            ok = caller.recv(15, match=lambda m: not m.is_request and m.status == 200)
            routes = list(reversed(ok.values("record-route")))
            assert caller.last_source == (b.host, b.port("udp"))
            in_dialog = (f"From: <sip:bob@example.com>;tag={ftag}\r\n"
                         f"To: <sip:{alice}@example.com>;tag=callee1\r\nCall-ID: {call_id}\r\n"
                         "Max-Forwards: 70\r\n" + "".join(f"Route: {r}\r\n" for r in routes))
            caller.send(f"ACK {contact} SIP/2.0\r\n"
                        f"Via: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bKa{call_id}\r\n"
                        f"{in_dialog}CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                        b.host, b.port("udp"))
            assert peer.recv_sip(10, match=lambda m: m.is_request and m.method == "ACK")
            if who_hangs_up == "caller":
                caller.send(f"BYE {contact} SIP/2.0\r\n"
                            f"Via: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bKb{call_id}\r\n"
                            f"{in_dialog}CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
                            b.host, b.port("udp"))
                bye = peer.recv_sip(10, match=lambda m: m.is_request and m.method == "BYE")
                peer.send(answer(bye, 200, "OK"))
                done = caller.recv(10, match=lambda m: not m.is_request and m.cseq_method == "BYE")
            else:
                peer.send(f"BYE sip:bob@127.0.0.1:{caller.port} SIP/2.0\r\n"
                          f"Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKc{call_id}\r\n"
                          f"From: <sip:{alice}@example.com>;tag=callee1\r\n"
                          f"To: <sip:bob@example.com>;tag={ftag}\r\nCall-ID: {call_id}\r\n"
                          "CSeq: 1 BYE\r\nMax-Forwards: 70\r\n"
                          + "".join(f"Route: {r}\r\n" for r in rr)
                          + "Content-Length: 0\r\n\r\n")
                bye = caller.recv(10, match=lambda m: m.is_request and m.method == "BYE")
                assert caller.last_source == (b.host, b.port("udp"))
                caller.send(answer(bye, 200, "OK"), b.host, b.port("udp"))
                done = peer.recv_sip(10, match=lambda m: not m.is_request and m.cseq_method == "BYE")
            assert done.status == 200
        assert rpc(a, "stats.get", "flow_relayed")["flow_relayed"] == 2


def test_without_redis_calls_route_on_the_local_copy_and_the_nodes_catch_up(
        tmp_path, postgres):
    """A private Redis stops: calls at B still reach the user B had read and
    calls at A the user A holds; a user registering at A meanwhile is written
    to Redis once it is back, and B then finds her."""
    db, users = postgres
    alice, carol = user_name(users, "alice"), user_name(users, "carol")
    with PrivateRedis(tmp_path) as server, ClusterRedis(port=server.port) as redis, \
            Cluster(tmp_path, config(redis, PG_URL)) as (a, b):
        uas_port = free_port()
        uas = Sipp(tmp_path, "uas", "uas.xml", uas_port, "u1", extra=["-m", 3]).start()
        carol_port = free_port()
        uas2 = Sipp(tmp_path, "uas2", "uas.xml", carol_port, "u1", extra=["-m", 1]).start()
        try:
            wait_shared(a, b)
            assert register_udp(a, alice, uas_port).status == 200
            code, stats, uac = run_calls(tmp_path, "before", b, alice, uas, count=1)
            assert code == 0 and stats["ok"] == 1, uac.errors() or b.log_text()[-3000:]
            server.stop()
            wait_shared(a, b, connected=False)
            code, stats, uac = run_calls(tmp_path, "outage_b", b, alice, uas, count=1)
            assert code == 0 and stats["ok"] == 1, uac.errors() or b.log_text()[-3000:]
            code, stats, uac = run_calls(tmp_path, "outage_a", a, alice, uas, count=1)
            assert code == 0 and stats["ok"] == 1, uac.errors() or a.log_text()[-3000:]
            assert register_udp(a, carol, carol_port).status == 200
            st = rpc(a, "ul.stats")
            assert st["shared_pending"] >= 1 and st["shared_outages"] == 1
            assert a.log_text().count("usrloc: Redis unreachable") == 1
            server.start()
            deadline = time.monotonic() + 30
            while rpc(a, "ul.stats")["shared_pending"] or not redis.keys():
                assert time.monotonic() < deadline, a.log_text()[-3000:]
                time.sleep(0.2)
            assert f"{redis.prefix}ul:{carol}" in redis.keys()
            assert f"{redis.prefix}ul:{alice}" in redis.keys()  # written again after the restart
            code, stats, uac = run_calls(tmp_path, "after", b, carol, uas2, count=1)
            assert code == 0 and stats["ok"] == 1, uac.errors() or b.log_text()[-3000:]
        finally:
            uas.stop()
            uas2.stop()


@pytest.mark.skipif(not node_available(), reason="node and npm are not installed")
def test_jssip_registered_at_a_receives_a_sipp_call_arriving_at_b(tmp_path, postgres):
    """A browser softphone's stack (JsSIP over WebSocket, with outbound's
    reg-id and a .invalid contact) registers at A; SIPp's INVITE at B reaches
    it through A on its WebSocket, and its 486 reaches SIPp through both nodes."""
    from tests.integration.test_jssip import JsSipPeer, ensure_jssip
    ensure_jssip()
    db, users = postgres
    alice = user_name(users, "jsalice")
    with ClusterRedis() as redis, Cluster(tmp_path, config(redis, PG_URL)) as (a, b):
        wait_shared(a, b)
        peer = JsSipPeer(f"ws://{a.host}:{a.port('ws')}", f"sip:{alice}@example.com", "unused")
        try:
            assert peer.expect("registered", 15)["status"] == 200
            caller = Sipp(tmp_path, "caller", "call_rejected_uac.xml", free_port(), "u1",
                          target=f"{b.host}:{b.port('udp')}",
                          extra=["-s", alice, "-key", "domain", "example.com", "-m", 1,
                                 "-timeout", 20, "-timeout_error"]).start()
            invite = peer.expect("invite", 15)
            assert invite["ruri"].endswith(".invalid;transport=ws")
            assert any(f"{b.host}:{b.port('udp')}" in rr for rr in invite["recordRoute"])
            rc = caller.wait(30)
            stats = caller.stats()
            assert rc == 0 and stats["ok"] == 1 and stats["failed"] == 0, (stats, caller.errors())
            assert rpc(a, "stats.get", "flow_relayed")["flow_relayed"] == 1
        finally:
            peer.close()


def test_the_save_script_keeps_the_newer_version_and_the_longest_ttl_in_redis():
    """The Lua call every save makes, against the real server: an older
    version of a binding does not replace a newer one, and the hash's TTL
    grows to the longest expiry it holds but never shrinks."""
    from sipdisp.registrar.shared import SAVE_SCRIPT
    with ClusterRedis() as redis:
        key = f"{redis.prefix}ul:alice"
        assert redis.cli("EVAL", SAVE_SCRIPT, 1, key, "r1", '{"modified":1100.0}', 600,
                         "1100.0") == "1"
        assert redis.cli("EVAL", SAVE_SCRIPT, 1, key, "r1", '{"modified":1000.0}', 900,
                         "1000.0") == "0"
        assert redis.cli("HGET", key, "r1") == '{"modified":1100.0}'
        assert 590 <= int(redis.cli("TTL", key)) <= 600
        assert redis.cli("EVAL", SAVE_SCRIPT, 1, key, "r2", '{"modified":1.0}', 60, "1.0") == "1"
        assert 590 <= int(redis.cli("TTL", key)) <= 600
        assert redis.cli("EVAL", SAVE_SCRIPT, 1, key, "r1", '{"modified":1200.0}', 900,
                         "1200.0") == "1"
        assert 890 <= int(redis.cli("TTL", key)) <= 900
        assert redis.cli("HLEN", key) == "2"
