"""msilo, sans-IO: m_store keeps a MESSAGE for an offline user and answers
202, m_dump sends it to her new contact at her next REGISTER, a 2xx deletes
it and a failure keeps it; the per-user limit, expiry on an explicit clock,
offline notices and the msilo.* commands. The built-in route runs with
msilo.enabled on a real ProxyCore (tests/support/registrar.py's Stack)."""

import itertools

import pytest

from sipdisp.msilo.service import MsiloService
from sipdisp.msilo.silo import LIMIT_STAT, bound_contacts, owner_of
from sipdisp.routing import RouteError, compile_routing
from sipdisp.routing.compiler import Env
from sipdisp.shipped import shipped_functions
from sipdisp.sip import parse_message
from tests.support.registrar import Stack, final, requests, responses
from tests.support.sipmsg import response_to

_n = itertools.count(1)
ALICE = ("10.0.0.1", 5070)
BOB = ("10.0.0.2", 5072)


def make_stack(slow=False, **msilo):
    """The built-in route with msilo enabled (and ``msilo`` keys), an MsiloService wired in."""
    stack = Stack({"msilo": dict({"enabled": True}, **msilo)}, slow=slow)
    stack.msilo = MsiloService(stack.root, stack.clock)
    stack.msilo.startService()
    stack.silo = stack.msilo.silo
    return stack


def message(to="bob", body="hello bob", ctype="text/plain", sender="alice", via=ALICE):
    """A MESSAGE from ``sender`` to ``to``@example.com as bytes."""
    n = next(_n)
    raw = body.encode()
    lines = [f"MESSAGE sip:{to}@example.com SIP/2.0",
             f"Via: SIP/2.0/UDP {via[0]}:{via[1]};branch=z9hG4bKmsg{n}",
             f"From: <sip:{sender}@example.com>;tag=m{n}", f"To: <sip:{to}@example.com>",
             f"Call-ID: msg-{n}@test", "CSeq: 1 MESSAGE", "Max-Forwards: 70",
             f"Content-Type: {ctype}", f"Content-Length: {len(raw)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw


def rows(stack):
    """The silo table's rows, oldest first."""
    d = stack.storage.select("silo", order_by=["id"])
    stack.clock.advance(0)
    return d.result


def register_bob(stack, expires=None):
    """Bob registers from BOB; returns (the REGISTER's final response, what was sent)."""
    ua = stack.ua("bob", *BOB)
    out = ua.send(ua.register_bytes(expires=expires))
    return final(out), out


def answer(stack, request, status, reason):
    """Bob's UA answers one MESSAGE sipdisp sent it; returns what sipdisp sent then."""
    return stack.send(response_to(request.to_bytes(), status, reason), source=BOB)


def test_message_for_an_offline_user_is_stored_and_answered_202():
    """A MESSAGE for a user with no contact gets 202 Accepted and one silo row with Kamailio's columns."""
    stack = make_stack()
    resp = final(stack.send(message(body="are you there?"), source=ALICE))
    assert (resp.status, resp.reason) == (202, "Accepted")
    [row] = rows(stack)
    assert (row["src_addr"], row["dst_addr"], row["username"], row["domain"]) == (
        "sip:alice@example.com", "sip:bob@example.com", "bob", "example.com")
    assert row["inc_time"] == int(stack.now)
    assert row["exp_time"] == int(stack.now) + 259200
    assert (row["ctype"], bytes(row["body"]), row["status"]) == ("text/plain", b"are you there?", 0)
    assert row["callid"].startswith("msg-")
    assert stack.silo.stats["stored"] == 1


def test_a_message_for_an_online_user_is_relayed_not_stored():
    """With a contact registered, the built-in route relays the MESSAGE and stores nothing."""
    stack = make_stack()
    register_bob(stack)
    out = stack.send(message(), source=ALICE)
    sent = requests(out, "MESSAGE")
    assert len(sent) == 1 and (sent[0][1].host, sent[0][1].port) == BOB
    assert not responses(out, 202) and rows(stack) == []


def test_store_waits_for_a_slow_database_read_then_answers_202():
    """When the count read is slow the route is suspended, then resumed: one row, one 202."""
    stack = make_stack(slow=True)
    out = stack.send(message(), source=ALICE)
    assert [r.status for r in responses(out)] == [202]
    assert len(rows(stack)) == 1 and stack.msilo.suspender.resumed == 1


def test_over_max_messages_store_returns_false_and_counts():
    """Past msilo.max_messages m_store is false (the built-in route answers 480), with a counter."""
    stack = make_stack(max_messages=2)
    for _ in range(2):
        assert final(stack.send(message(), source=ALICE)).status == 202
    resp = final(stack.send(message(), source=ALICE))
    assert resp.status == 480
    assert len(rows(stack)) == 2
    assert stack.core.stats[LIMIT_STAT] == 1 and stack.silo.stats["limit_refused"] == 1


def test_the_limit_is_per_user():
    """A user at her limit does not stop messages for another user."""
    stack = make_stack(max_messages=1)
    assert final(stack.send(message(to="bob"), source=ALICE)).status == 202
    assert final(stack.send(message(to="carol"), source=ALICE)).status == 202
    assert final(stack.send(message(to="bob"), source=ALICE)).status == 480


def test_a_message_without_body_is_not_stored():
    """An empty MESSAGE is refused by m_store (480 from the built-in route), nothing stored."""
    stack = make_stack()
    assert final(stack.send(message(body=""), source=ALICE)).status == 480
    assert rows(stack) == []


def test_expired_messages_are_swept_and_not_dumped():
    """On an explicit clock the sweep deletes a message past expire_time, and a later REGISTER gets none."""
    stack = make_stack(expire_time=100, clean_period=30)
    stack.send(message(), source=ALICE)
    stack.advance(60)
    assert len(rows(stack)) == 1
    stack.advance(60)   # 120 s after storing: past the 100 s, swept at the 90 s or 120 s round
    assert rows(stack) == [] and stack.silo.stats["expired"] == 1
    resp, out = register_bob(stack)
    assert resp.status == 200 and requests(out, "MESSAGE") == []


def test_an_expired_row_not_yet_swept_is_not_dumped():
    """A row whose exp_time passed is never delivered, even before the sweep deleted it."""
    stack = make_stack(expire_time=10, clean_period=3600)
    stack.send(message(), source=ALICE)
    stack.clock.advance(20)
    _, out = register_bob(stack)
    assert requests(out, "MESSAGE") == [] and len(rows(stack)) == 1


def test_register_dumps_stored_messages_to_the_new_contact():
    """Bob's REGISTER gets its 200, then each stored message reaches his contact as a MESSAGE."""
    stack = make_stack()
    stack.send(message(body="first"), source=ALICE)
    stack.send(message(body="second", ctype="text/html"), source=ALICE)
    resp, out = register_bob(stack)
    assert resp.status == 200
    sent = requests(out, "MESSAGE")
    assert [bytes(m.body) for m, _ in sent] == [b"first", b"second"]
    for m, target in sent:
        assert (target.host, target.port) == BOB
        assert str(m.uri) == "sip:bob@10.0.0.2:5072"
        assert "sip:alice@example.com" in m.get("from") and "sip:bob@example.com" in m.get("to")
        assert m.get("date", "").endswith("GMT")
    assert [m.get("content-type") for m, _ in sent] == ["text/plain", "text/html"]
    assert stack.silo.stats["sent"] == 2


def test_a_2xx_deletes_the_delivered_message():
    """Bob's 200 to a dumped MESSAGE deletes its row; nothing is sent again at the next REGISTER."""
    stack = make_stack()
    stack.send(message(), source=ALICE)
    _, out = register_bob(stack)
    [(msg, _)] = requests(out, "MESSAGE")
    answer(stack, msg, 200, "OK")
    assert rows(stack) == [] and stack.silo.stats["delivered"] == 1
    _, out = register_bob(stack)
    assert requests(out, "MESSAGE") == []


def test_a_4xx_keeps_the_message_for_the_next_register():
    """A 486 to a dumped MESSAGE keeps the row, and the next REGISTER sends it again."""
    stack = make_stack()
    stack.send(message(body="keep me"), source=ALICE)
    _, out = register_bob(stack)
    [(msg, _)] = requests(out, "MESSAGE")
    answer(stack, msg, 486, "Busy Here")
    assert len(rows(stack)) == 1 and stack.silo.stats["failed"] == 1
    _, out = register_bob(stack)
    [(again, _)] = requests(out, "MESSAGE")
    assert bytes(again.body) == b"keep me"


def test_a_message_in_flight_is_not_sent_twice():
    """A REGISTER refresh while a dumped MESSAGE is unanswered does not send it again."""
    stack = make_stack()
    stack.send(message(), source=ALICE)
    _, out = register_bob(stack)
    assert len(requests(out, "MESSAGE")) == 1
    _, out = register_bob(stack)
    assert requests(out, "MESSAGE") == []


def test_an_unanswered_message_is_kept():
    """A dumped MESSAGE that times out keeps its row for the next REGISTER."""
    stack = make_stack()
    stack.send(message(), source=ALICE)
    register_bob(stack)
    stack.advance(40)   # past Timer F (64 * T1 = 32 s)
    assert len(rows(stack)) == 1 and stack.silo.stats["failed"] == 1
    _, out = register_bob(stack)
    assert len(requests(out, "MESSAGE")) == 1


def test_a_deregistration_dumps_nothing():
    """A REGISTER with Expires 0 removes the binding and sends no stored message."""
    stack = make_stack()
    register_bob(stack)
    stack.send(message(), source=ALICE)   # bob is online: relayed, not stored
    stack.take()
    _, out = register_bob(stack, expires=0)
    assert requests(out, "MESSAGE") == []


def test_offline_notice_goes_back_to_the_sender():
    """With msilo.notify_offline the sender gets a MESSAGE from from_address saying the user is offline."""
    stack = make_stack(notify_offline=True, from_address="sip:silo@example.com",
                       offline_message="bob is offline")
    out = stack.send(message(), source=ALICE)
    assert final(out).status == 202
    [(notice, target)] = requests(out, "MESSAGE")
    assert (target.host, target.port) == ALICE
    assert str(notice.uri) == "sip:alice@example.com"
    assert "sip:silo@example.com" in notice.get("from")
    assert bytes(notice.body) == b"bob is offline"
    assert stack.silo.stats["notices_sent"] == 1


def test_no_notice_without_notify_offline():
    """By default a stored MESSAGE draws only its 202."""
    stack = make_stack()
    out = stack.send(message(), source=ALICE)
    assert requests(out, "MESSAGE") == []


def test_msilo_commands_list_and_stats():
    """msilo.list shows the stored messages of one user, msilo.stats the counters."""
    stack = make_stack()
    stack.send(message(to="bob", body="for bob"), source=ALICE)
    stack.send(message(to="carol", body="for carol"), source=ALICE)
    d = stack.registry.call("msilo.list", "bob@example.com")
    [entry] = d.result
    assert (entry["owner"], entry["body"], entry["sending"]) == ("bob@example.com", "for bob",
                                                                False)
    assert len(stack.registry.call("msilo.list").result) == 2
    stats = stack.registry.call("msilo.stats").result
    assert stats["stored"] == 2 and stats["in_flight"] == 0 and stats["max_messages"] == 100


def test_builtin_route_ignores_messages_when_msilo_is_disabled():
    """Without msilo.enabled the built-in route dispatches a MESSAGE as before and stores nothing."""
    stack = Stack({}, rows=[(0, "sip:127.0.0.1:5080")])
    MsiloService(stack.root, stack.clock).startService()
    out = stack.send(message(), source=ALICE)
    sent = requests(out, "MESSAGE")
    assert len(sent) == 1 and (sent[0][1].host, sent[0][1].port) == ("127.0.0.1", 5080)
    assert not responses(out, 202)


@pytest.mark.parametrize("text, expected", [
    ("sip:bob@Example.COM", ("bob", "example.com")),
    ("<sip:bob@example.com;transport=tcp>", ("bob", "example.com")),
    ("sip:example.com", None),
    ("tel:+123", None),
    ("sip:" + "u" * 65 + "@example.com", None),
])
def test_owner_of(text, expected):
    """An owner is a SIP URI with a user that fits the silo table's columns."""
    assert owner_of(text) == expected


def test_bound_contacts_skips_expires_zero_and_star():
    """The contacts a REGISTER binds exclude those with expires=0, and '*' binds none."""
    req = parse_message(
        b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1\r\n"
        b"From: <sip:bob@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c\r\n"
        b"CSeq: 1 REGISTER\r\nContact: <sip:bob@10.0.0.2:5072>, <sip:bob@10.0.0.3>;expires=0\r\n"
        b"Content-Length: 0\r\n\r\n")
    assert bound_contacts(req) == ["sip:bob@10.0.0.2:5072"]
    req.set("contact", "*")
    assert bound_contacts(req) == []


def test_route_arguments_are_checked_when_the_route_compiles():
    """m_store and m_dump take at most one owner; more is a RouteError naming the step."""
    spec = {"request_route": [{"m_store": ["$ru", "x"]}], "routes": {}, "failure_routes": {}}
    with pytest.raises(RouteError, match="m_store takes 0 to 1"):
        compile_routing(spec, Env(shipped_functions()))
    spec = {"request_route": [{"m_dump": "$tu"}, {"if": {"m_store": "$ru"}, "then": ["exit"]}],
            "routes": {}, "failure_routes": {}}
    compile_routing(spec, Env(shipped_functions()))


def test_silo_table_is_kamailios_version_8():
    """The silo table has Kamailio 5.x's columns in kamctl's order, nullable BLOB/TEXT, version 8."""
    from sipdisp.storage import schema as S
    table = S.SCHEMA["silo"]
    assert table.version == 8
    assert table.column_names == (
        "id", "src_addr", "dst_addr", "username", "domain", "inc_time", "exp_time",
        "snd_time", "ctype", "body", "extra_hdrs", "callid", "status")
    ddl = S.create_table("mysql", table)
    for line in ("`src_addr` VARCHAR(128) DEFAULT '' NOT NULL",
                 "`ctype` VARCHAR(32) DEFAULT 'text/plain' NOT NULL", "`body` BLOB,",
                 "`extra_hdrs` TEXT,", "KEY account_idx (`username`, `domain`)"):
        assert line in ddl
    assert '"body" BYTEA,' in S.create_table("postgres", table)
