"""Registrations shared by two nodes (sipdisp/registrar/shared.py, issue 16),
sans-IO: two in-memory proxies (node A on 127.0.0.2, node B on 127.0.0.3)
running the built-in route over one store that answers Redis' hash commands
the way Redis does (the real server: tests/integration/test_cluster_usrloc.py).

A UDP user registered at A is reached by B directly; a WebSocket user
registered at A is reached by B through A (the stored route with a signed
flow token), A relays over the connection or answers 430 when it is gone;
without Redis each node routes on what it knows and writes again afterwards."""

import json

from twisted.internet import defer

from sipdisp.proxy import ProxyCore
from sipdisp.proxy.routeset import FLOW_INVALID
from sipdisp.proxy.target import Listener
from sipdisp.registrar.shared import SAVE_SCRIPT, SharedLocation, binding_from_json, \
    binding_to_json
from sipdisp.registrar.usrloc import Binding
from tests.support.registrar import Stack, final, invite, requests, responses
from tests.support.sipmsg import response_to

NODE = ("127.0.0.1", 5080)
NODES = [(0, "sip:127.0.0.1:5090"), (1, "sip:127.0.0.1:5080")]
SECRET = b"the cluster's secret"


class HashStore:
    """Redis' hash commands as the shared location uses them (HGETALL, HDEL,
    TTL, EVAL of SAVE_SCRIPT), answering at once; ``connected`` can be
    switched off to play an outage (commands then raise, as RedisEngine's)."""

    def __init__(self):
        self.hashes = {}
        self.ttl = {}
        self.connected = True
        self.disconnects = 0
        self.commands = []

    def command(self, *args):
        if not self.connected:
            raise ConnectionError("not connected")
        self.commands.append(args[0])
        op = args[0]
        if op == "HGETALL":
            h = self.hashes.get(args[1], {})
            out = []
            for k, v in h.items():
                out += [k, v]
            return defer.succeed(out)
        if op == "HDEL":
            h = self.hashes.get(args[1], {})
            n = sum(1 for f in args[2:] if h.pop(f, None) is not None)
            if not h:
                self.hashes.pop(args[1], None)
            return defer.succeed(n)
        if op == "EVAL":
            assert args[1] == SAVE_SCRIPT
            _, _, _, key, field, value, ttl, modified = args
            old = self.hashes.get(key, {}).get(field)
            if old is not None and json.loads(old)["modified"] > float(modified):
                return defer.succeed(0)  # a newer version wins, as the script decides
            self.hashes.setdefault(key, {})[field] = value
            self.ttl[key] = max(self.ttl.get(key, -1), int(ttl))
            return defer.succeed(1)
        raise AssertionError(f"unexpected command {args}")

    def go_down(self):
        self.connected = False
        self.disconnects += 1


def node(host, store):
    """A proxy with the built-in route whose listeners are on ``host``,
    sharing registrations through ``store``."""
    s = Stack({"proxy": {"domains": ["example.com"]}}, rows=NODES)
    udp = Listener(1, "udp", host, 5060)
    ws = Listener(3, "ws", host, 5062)
    s.udp, s.ws = udp, ws
    s.listeners.update(udp=udp, ws=ws)
    s.core.set_listeners([udp, s.tcp, ws])
    # the same secret on both nodes (proxy.secret): rebuild the route set's key
    key_core = ProxyCore([], None, secret=SECRET)
    s.core.routeset._key = key_core.routeset._key
    s.shared = SharedLocation(s.location, store, s.clock.seconds, prefix="t:",
                              node_id=s.service._node_id, relay_route=s.service._relay_route,
                              counters=s.core.stats)
    s.service.shared = s.shared
    s.shared.start(s.now, s.core.timer)
    return s


def pair():
    store = HashStore()
    return store, node("127.0.0.2", store), node("127.0.0.3", store)


def stored(store, aor):
    return {k: json.loads(v) for k, v in store.hashes.get(f"t:ul:{aor}", {}).items()}


def test_a_udp_user_registered_at_a_is_reached_by_b_directly():
    """The REGISTER at A lands in the AOR's hash with its expiry as TTL; an
    INVITE arriving at B goes straight to the UDP contact (no relay through A)."""
    store, a, b = pair()
    assert a.ua("alice", host="10.0.0.1", port=5070).register(expires=600).status == 200
    (entry,) = stored(store, "alice").values()
    assert entry["contact"] == "sip:alice@10.0.0.1:5070" and entry["node"] == "127.0.0.2:5060"
    assert entry["relay"] is None and store.ttl["t:ul:alice"] == 600
    out = b.send(invite("sip:alice@example.com"), source=NODE)
    (fwd, target), = requests(out, "INVITE")
    assert (target.host, target.port) == ("10.0.0.1", 5070)
    assert str(fwd.uri) == "sip:alice@10.0.0.1:5070"
    assert not fwd.has("route")
    assert b.shared.stats["shared_reads"] >= 1


def test_unknown_at_both_nodes_is_404_and_a_deregistration_at_b_removes_it_for_a():
    """A user nobody registered is 404 at B; a REGISTER with Expires: 0 at B
    for A's binding deletes it from Redis, so a lookup at A finds nobody either."""
    store, a, b = pair()
    assert final(b.send(invite("sip:carol@example.com"), source=NODE)).status == 404
    ua = a.ua("alice", host="10.0.0.1", port=5070)
    assert ua.register(expires=600).status == 200
    ua.stack = b  # the same phone, now registering through B
    resp = ua.register(expires=0)
    assert resp.status == 200 and not resp.has("contact")
    assert stored(store, "alice") == {}
    assert final(a.send(invite("sip:alice@example.com"), source=NODE)).status == 404


def test_a_refresh_at_b_updates_the_binding_a_saved():
    """The same contact re-registered through B updates A's binding (one
    binding, the same ruid) instead of adding a second one."""
    store, a, b = pair()
    ua = a.ua("alice", host="10.0.0.1", port=5070)
    ua.register(expires=600)
    (ruid,) = stored(store, "alice")
    b.advance(100)
    ua.stack = b
    resp = ua.register(expires=900)
    assert resp.status == 200 and len(resp.values("contact")) == 1
    entries = stored(store, "alice")
    assert list(entries) == [ruid] and entries[ruid]["node"] == "127.0.0.3:5060"


def register_ws(stack, user="alice"):
    conn = stack.open_conn("ws", "127.0.0.1", 51000)
    ua = stack.ua(user, host="df7jal23ls0d.invalid", port=0, proto="ws", conn=conn,
                  contact="<sip:h7kjh@df7jal23ls0d.invalid;transport=ws>")
    ua.host, ua.port = "127.0.0.1", 51000
    assert ua.register(expires=600).status == 200
    return conn


def test_a_websocket_user_at_a_is_reached_from_b_through_a_over_her_connection():
    """B's INVITE goes to A's UDP address with A's flow Route; A takes its
    Route, relays over the WebSocket with Record-Route, and in-dialog BYEs
    go both ways through both nodes."""
    store, a, b = pair()
    conn = register_ws(a)
    (entry,) = stored(store, "alice").values()
    assert entry["relay"].startswith("<sip:127.0.0.2:5060;transport=udp;lr;ob;flow=")
    out = b.send(invite("sip:alice@example.com"), source=NODE)
    (to_a, target), = requests(out, "INVITE")
    assert (target.proto, target.host, target.port) == ("udp", "127.0.0.2", 5060)
    assert to_a.values("route") == [entry["relay"]]
    assert str(to_a.uri) == "sip:h7kjh@df7jal23ls0d.invalid;transport=ws"
    # A receives it from B
    out = a.send(to_a.to_bytes(), source=("127.0.0.3", 5060))
    (to_ws, wt), = requests(out, "INVITE")
    assert wt.conn == conn and wt.proto == "ws"
    assert not to_ws.has("route")
    rr = to_ws.values("record-route")
    assert rr[0].startswith(f"<sip:sdf-{conn}@127.0.0.2:5062;transport=ws")
    assert rr[1].startswith("<sip:127.0.0.2:5060;r2=on") or "127.0.0.2:5060" in rr[1]
    assert any("127.0.0.3" in r for r in rr)
    assert a.core.stats["flow_relayed"] == 1
    # she answers: the 200 goes back through A to B to the caller
    ok = response_to(to_ws.to_bytes(), 200, "OK")
    back = responses(a.send(ok, source=("127.0.0.1", 51000), proto="ws", conn=conn), 200)
    assert back
    caller_ok = responses(b.send(back[0].to_bytes(), source=("127.0.0.2", 5060)), 200)[0]
    routes = list(reversed(caller_ok.values("record-route")))
    # the caller's BYE: B, then A, then her connection
    bye = invite("sip:h7kjh@df7jal23ls0d.invalid;transport=ws", method="BYE", to_tag="uastag",
                 call_id=to_ws.call_id, from_tag=to_ws.from_tag,
                 extra=[f"Route: {r}" for r in routes])
    (bye_a, t), = requests(b.send(bye, source=NODE), "BYE")
    assert (t.host, t.port) == ("127.0.0.2", 5060)
    (_, t), = requests(a.send(bye_a.to_bytes(), source=("127.0.0.3", 5060)), "BYE")
    assert t.conn == conn
    # her BYE: A, then B, then the caller
    bye2 = invite("sip:bob@127.0.0.1:5080", method="BYE", to_tag=to_ws.from_tag,
                  from_tag="uastag", call_id=to_ws.call_id, via=("127.0.0.1", 51000),
                  extra=[f"Route: {r}" for r in rr])
    (bye2_b, t2), = requests(a.send(bye2, source=("127.0.0.1", 51000), proto="ws", conn=conn),
                             "BYE")
    assert (t2.host, t2.port) == ("127.0.0.3", 5060)
    (_, t3), = requests(b.send(bye2_b.to_bytes(), source=("127.0.0.2", 5060)), "BYE")
    assert (t3.proto, t3.host, t3.port) == ("udp", "127.0.0.1", 5080)


def test_a_closed_connection_is_430_flow_failed_and_a_forged_token_403():
    """When her WebSocket is gone A answers B 430 Flow Failed; a flow token
    that A did not sign (or of another run) gets 403 and is never relayed;
    Max-Forwards 0 gets 483 (the route's check does not run for these)."""
    store, a, b = pair()
    conn = register_ws(a)
    (to_a, _), = requests(b.send(invite("sip:alice@example.com"), source=NODE), "INVITE")
    looping = to_a.to_bytes().replace(b"Max-Forwards: 69", b"Max-Forwards: 0")
    assert b"Max-Forwards: 0" in looping
    assert final(a.send(looping, source=("127.0.0.3", 5060))).status == 483
    a.close_conn(conn)
    fresh = to_a.to_bytes().replace(b"branch=z9hG4bK", b"branch=z9hG4bKy")
    assert final(a.send(fresh, source=("127.0.0.3", 5060))).status == 430
    assert a.core.stats["flow_failed"] == 1
    forged = to_a.to_bytes().replace(b"flow=", b"flow=0")
    resp = final(a.send(forged.replace(b"branch=z9hG4bK", b"branch=z9hG4bKx"),
                        source=("127.0.0.3", 5060)))
    assert resp.status == 403 and a.core.stats["flow_token_invalid"] == 1


def test_flow_tokens_name_one_run_and_connection_and_cannot_be_forged():
    """A token reads back to its connection on the same run only; a changed
    connection id or signature, or another run's token, is refused."""
    one = ProxyCore([], None, secret=SECRET).routeset
    two = ProxyCore([], None, secret=SECRET).routeset
    token = one.flow_token(17)
    assert one.flow_of_token(token) == 17
    boot, conn, sig = token.split(".")
    assert one.flow_of_token(f"{boot}.18.{sig}") is None
    assert one.flow_of_token(f"{boot}.17.{'0' * len(sig)}") is None
    assert two.flow_of_token(token) is None
    assert one.flow_of_token("junk") is None and one.flow_of_token("") is None
    assert FLOW_INVALID < 0


def test_the_stored_form_round_trips_and_marks_stream_bindings():
    """A binding's JSON gives it back; another node's stream binding gets the
    relay route first in its Path, this node's own (from an earlier run) is unreachable."""
    b = Binding("r1", "alice", "alice", "example.com", "sip:a@x.invalid;transport=ws", 1600.0,
                q=0.5, callid="c", cseq=3, path=("<sip:edge;lr>",), conn_id=7, proto="ws",
                instance="<urn:uuid:1>", reg_id=1, last_modified=1000.0)
    text = binding_to_json(b, "127.0.0.2:5060", "<sip:127.0.0.2:5060;transport=udp;lr;ob;flow=T>")
    other = binding_from_json("r1", "alice", text, "127.0.0.3:5060")
    assert other.path == ("<sip:127.0.0.2:5060;transport=udp;lr;ob;flow=T>", "<sip:edge;lr>")
    assert other.conn_id is None and other.q == 0.5 and other.cseq == 3
    assert (other.instance, other.reg_id, other.expires) == ("<urn:uuid:1>", 1, 1600.0)
    same = binding_from_json("r1", "alice", text, "127.0.0.2:5060")
    assert same.conn_id == -1 and same.path == ("<sip:edge;lr>",)
    udp = binding_from_json("r2", "bob", binding_to_json(
        Binding("r2", "bob", "bob", None, "sip:bob@10.0.0.1", 2000.0), "n", None), "m")
    assert udp.conn_id is None and udp.path == ()
    for junk in ("{", "[]", '{"expires": 1}'):
        try:
            binding_from_json("r", "a", junk, "n")
        except ValueError:
            continue
        raise AssertionError(f"{junk!r} accepted")


def test_without_redis_each_node_routes_on_what_it_knows_and_writes_again_after():
    """Redis goes away: A still reaches her own user, B the user it last read
    from Redis; a REGISTER at A meanwhile is kept and written when Redis is
    back (after a lost connection every binding of A is written again)."""
    store, a, b = pair()
    a.ua("alice", host="10.0.0.1", port=5070).register(expires=600)
    requests(b.send(invite("sip:alice@example.com"), source=NODE), "INVITE")  # B reads her
    store.go_down()
    (_, t), = requests(b.send(invite("sip:alice@example.com"), source=NODE), "INVITE")
    assert (t.host, t.port) == ("10.0.0.1", 5070)
    assert a.ua("bob", host="10.0.0.2", port=5070).register(expires=600).status == 200
    assert a.shared.pending == 1 and a.shared.down
    assert a.core.stats["usrloc_shared_outages"] == 1
    (_, t), = requests(a.send(invite("sip:bob@example.com"), source=NODE), "INVITE")
    assert (t.host, t.port) == ("10.0.0.2", 5070)
    # Redis comes back empty (a restart without persistence)
    store.hashes.clear()
    store.connected = True
    a.advance(2)
    assert a.shared.pending == 0 and not a.shared.down
    assert set(stored(store, "alice")) and set(stored(store, "bob"))
    (_, t), = requests(b.send(invite("sip:bob@example.com"), source=NODE), "INVITE")
    assert (t.host, t.port) == ("10.0.0.2", 5070)


def test_expired_entries_of_a_dead_node_are_skipped_and_deleted():
    """A binding past its expiry in the hash (its node died before its TTL
    ran out) is not used and the reader deletes it."""
    store, a, b = pair()
    a.ua("alice", host="10.0.0.1", port=5070).register(expires=600)
    b.advance(601)
    assert final(b.send(invite("sip:alice@example.com"), source=NODE)).status == 404
    assert stored(store, "alice") == {}


def test_after_a_lost_connection_the_bindings_go_back_in_batches():
    """With shared_resync_batch 2, five bindings saved during an outage go
    back to Redis two per timer round; an entry that is not a binding is
    skipped and counted."""
    store, a, b = pair()
    a.shared.resync_batch = 2
    store.go_down()
    for i in range(5):
        a.ua(f"u{i}", host=f"10.0.1.{i}", port=5070).register(expires=600)
    assert a.shared.pending == 5
    store.connected = True
    a.advance(1.0)
    assert a.shared.pending == 3 and len(store.hashes) == 2
    a.advance(1.0)
    a.advance(1.0)
    assert a.shared.pending == 0 and len(store.hashes) == 5
    assert a.shared.stats["shared_resynced"] == 5
    store.hashes["t:ul:u0"]["junk"] = "{not json"
    (_, t), = requests(b.send(invite("sip:u0@example.com"), source=NODE), "INVITE")
    assert t.host == "10.0.1.0" and b.shared.stats["shared_bad_entries"] == 1


def test_a_cancel_follows_the_invite_through_both_nodes_to_her_connection():
    """The caller's CANCEL at B goes to A (B's branch), and A sends its own
    CANCEL over her WebSocket; her 487 ends the call at the caller."""
    store, a, b = pair()
    conn = register_ws(a)
    original = invite("sip:alice@example.com")
    (to_a, _), = requests(b.send(original, source=NODE), "INVITE")
    out = a.send(to_a.to_bytes(), source=("127.0.0.3", 5060))
    (to_ws, _), = requests(out, "INVITE")
    (trying,) = responses(out, 100)  # a branch is cancelled once it has a 1xx
    b.send(trying.to_bytes(), source=("127.0.0.2", 5060))
    ringing = response_to(to_ws.to_bytes(), 180, "Ringing")
    (ringing,) = responses(a.send(ringing, source=("127.0.0.1", 51000), proto="ws", conn=conn),
                           180)
    assert responses(b.send(ringing.to_bytes(), source=("127.0.0.2", 5060)), 180)
    cancel = original.replace(b"INVITE sip:", b"CANCEL sip:").replace(b"1 INVITE", b"1 CANCEL")
    out = b.send(cancel, source=NODE)
    assert responses(out, 200)
    (cancel_a, t), = requests(out, "CANCEL")
    assert (t.host, t.port) == ("127.0.0.2", 5060)
    out = a.send(cancel_a.to_bytes(), source=("127.0.0.3", 5060))
    (cancel_ws, t), = requests(out, "CANCEL")
    assert t.conn == conn and cancel_ws.call_id == to_ws.call_id
    gone = response_to(to_ws.to_bytes(), 487, "Request Terminated")
    (r487,) = responses(a.send(gone, source=("127.0.0.1", 51000), proto="ws", conn=conn), 487)
    (r487,) = responses(b.send(r487.to_bytes(), source=("127.0.0.2", 5060)), 487)
    assert r487.call_id == to_ws.call_id


def test_no_outage_is_logged_while_the_first_connection_is_being_made():
    """Before Redis ever answered, within the connect grace, a REGISTER is
    kept for later without counting an outage; past the grace it is one."""
    store = HashStore()
    store.connected = False
    a = node("127.0.0.2", store)
    assert a.ua("alice", host="10.0.0.1", port=5070).register(expires=600).status == 200
    assert a.shared.pending == 1 and not a.shared.down
    assert a.shared.stats["shared_outages"] == 0
    a.advance(a.shared.connect_grace + 0.5)
    assert a.ua("bob", host="10.0.0.2", port=5070).register(expires=600).status == 200
    assert a.shared.down and a.shared.stats["shared_outages"] == 1
    store.connected = True
    a.advance(1.0)
    assert set(stored(store, "alice")) and set(stored(store, "bob")) and not a.shared.down


def test_ul_lookup_shows_every_nodes_bindings_and_ul_stats_the_sharing():
    """ul.lookup at B lists the binding A saved (with its relay Path for a
    WebSocket user); ul.stats counts the shared reads and writes."""
    store, a, b = pair()
    register_ws(a)
    result = []
    b.registry.call("ul.lookup", "location", "alice").addCallback(result.append)
    (contact,) = result[0]["Contacts"]
    assert contact["Contact"] == "sip:h7kjh@df7jal23ls0d.invalid;transport=ws"
    assert contact["Path"].startswith("<sip:127.0.0.2:5060;transport=udp;lr;ob;flow=")
    got = []
    a.registry.call("ul.stats").addCallback(got.append)
    stats = got[0]
    assert stats["shared_writes"] == 1 and stats["shared_connected"] is True


def test_a_node_writing_its_copy_again_does_not_undo_a_newer_refresh():
    """After a lost connection A writes its bindings again; the one B has
    refreshed since keeps B's newer version."""
    store, a, b = pair()
    ua = a.ua("alice", host="10.0.0.1", port=5070)
    ua.register(expires=600)
    b.advance(100)
    ua.stack = b
    assert ua.register(expires=900).status == 200
    (newer,) = stored(store, "alice").values()
    store.go_down()
    store.connected = True
    a.advance(1.5)  # A's resync of everything it holds
    assert a.shared.stats["shared_resynced"] >= 1
    (after,) = stored(store, "alice").values()
    assert after == newer and after["node"] == "127.0.0.3:5060"


def test_past_the_queue_limit_changes_wait_for_the_resync():
    """With writes unanswered up to cache.redis_queue_max, a further change
    is kept (counted in shared_queue_full) and written by the next resync."""
    store, a, b = pair()
    held = []
    answer_now = store.command

    def slow(*args):  # Redis answering writes late: they stay in flight
        if args[0] != "EVAL":
            return answer_now(*args)
        d = defer.Deferred()
        held.append((d, answer_now(*args)))
        return d
    store.command = slow
    a.shared.queue_max = 1
    a.ua("alice", host="10.0.0.1", port=5070).register(expires=600)
    a.ua("bob", host="10.0.0.2", port=5070).register(expires=600)
    assert a.shared.in_flight == 1 and a.shared.pending == 1
    assert a.core.stats["usrloc_shared_queue_full"] == 1
    store.command = answer_now
    for d, result in held:
        result.addCallback(d.callback)
    assert a.shared.in_flight == 0
    a.advance(1.0)
    assert a.shared.pending == 0 and set(stored(store, "bob"))


def test_shared_url_must_be_redis_and_not_with_db_mode_3():
    """usrloc.shared_url: a redis:// URL gives an engine; local://, junk and
    db_mode 3 stop the start with a line naming the key."""
    import pytest

    from sipdisp.config import ConfigError
    from sipdisp.schema import config_from_dict
    from sipdisp.service import usrloc_engine

    def cfg(**usrloc):
        return config_from_dict({"usrloc": usrloc, "console": {"enabled": False},
                                 "http": {"enabled": False}})
    assert usrloc_engine(cfg(), None) is None
    engine = usrloc_engine(cfg(shared_url="redis://127.0.0.1:6379/3"), None)
    assert (engine.url.host, engine.url.port, engine.url.database) == ("127.0.0.1", 6379, 3)
    for bad, why in (("local://", "through Redis"), ("nonsense", "not a cachedb URL")):
        with pytest.raises(ConfigError, match=why) as err:
            usrloc_engine(cfg(shared_url=bad), None)
        assert "usrloc.shared_url" in str(err.value)
    with pytest.raises(ConfigError, match="db_mode 3"):
        usrloc_engine(cfg(shared_url="redis://127.0.0.1:6379/0", db_mode=3), None)
