"""The presence server, sans-IO, through the built-in route on a real
ProxyCore (tests/support/registrar.py's Stack, memory storage, a
task.Clock): PUBLISH as RFC 3903's compositor, SUBSCRIBE dialogs and their
NOTIFYs (RFC 6665) over UDP, TCP and WebSocket flows, expiry by the core's
timers, a watcher's failure answers, limits, presence_xml authorization,
publish_internal, and the state read back by a new server after a restart."""

import itertools
import re

import pytest

from sipdisp.presence.service import PresenceService
from tests.support.registrar import Stack, final, requests, responses
from tests.support.sipmsg import response_to

_n = itertools.count(1)
ALICE = ("10.0.0.1", 5070)
BOB = ("10.0.0.2", 5072)
PIDF = ('<?xml version="1.0" encoding="UTF-8"?>\n'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@example.com">'
        '<tuple id="t1"><status><basic>{basic}</basic></status><note>{note}</note></tuple>'
        '</presence>')


def pidf(basic="open", note="online"):
    """A PIDF document of bob's."""
    return PIDF.format(basic=basic, note=note).encode()


def make_stack(**presence):
    """The built-in route with presence enabled (and ``presence`` keys)."""
    stack = Stack({"presence": dict({"enabled": True}, **presence)})
    stack.presence = PresenceService(stack.root, stack.clock)
    stack.presence.startService()
    stack.server = stack.presence.server
    stack.clock.advance(0)
    return stack


def publish(body=b"", etag=None, expires=600, event="presence", ctype="application/pidf+xml",
            user="bob"):
    """A PUBLISH for ``user``@example.com as bytes."""
    n = next(_n)
    lines = [f"PUBLISH sip:{user}@example.com SIP/2.0",
             f"Via: SIP/2.0/UDP {BOB[0]}:{BOB[1]};branch=z9hG4bKpub{n}",
             f"From: <sip:{user}@example.com>;tag=p{n}", f"To: <sip:{user}@example.com>",
             f"Call-ID: pub-{n}@test", "CSeq: 1 PUBLISH", "Max-Forwards: 70"]
    if event is not None:
        lines.append(f"Event: {event}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if etag is not None:
        lines.append(f"SIP-If-Match: {etag}")
    if body:
        lines.append(f"Content-Type: {ctype}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Watcher:
    """alice subscribing to bob's ``event``: builds the SUBSCRIBEs of one dialog."""

    def __init__(self, stack, event="presence", source=ALICE, proto="udp", conn=None,
                 contact=None, user="alice", call_id=None, rr=()):
        self.stack, self.event, self.source = stack, event, source
        self.proto, self.conn, self.user = proto, conn, user
        tp = "" if proto == "udp" else f";transport={proto}"
        self.contact = contact or f"<sip:{user}@{source[0]}:{source[1]}{tp}>"
        self.call_id = call_id or f"sub-{next(_n)}@test"
        self.from_tag = f"w{next(_n)}"
        self.to_tag = None
        self.cseq = 0
        self.rr = list(rr)

    def subscribe_bytes(self, expires=600, event=None, to_tag=None, target="sip:bob@example.com"):
        """One SUBSCRIBE of this dialog."""
        self.cseq += 1
        tag = to_tag if to_tag is not None else self.to_tag
        ruri = target if tag is None else "sip:127.0.0.1:5060"
        lines = [f"SUBSCRIBE {ruri} SIP/2.0",
                 f"Via: SIP/2.0/{self.proto.upper()} {self.source[0]}:{self.source[1]};"
                 f"branch=z9hG4bKsub{next(_n)}",
                 f"From: <sip:{self.user}@example.com>;tag={self.from_tag}",
                 "To: <sip:bob@example.com>" + (f";tag={tag}" if tag else ""),
                 f"Call-ID: {self.call_id}", f"CSeq: {self.cseq} SUBSCRIBE",
                 "Max-Forwards: 70", f"Contact: {self.contact}"]
        lines += [f"Record-Route: {r}" for r in self.rr]
        ev = self.event if event is None else event
        if ev:
            lines.append(f"Event: {ev}")
        if expires is not None:
            lines.append(f"Expires: {expires}")
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    def subscribe(self, **kw):
        """Send a SUBSCRIBE; returns (its final response, [(NOTIFY, Target)])."""
        out = self.stack.send(self.subscribe_bytes(**kw), source=self.source, proto=self.proto,
                              conn=self.conn)
        resp = final(out)
        if resp.status == 200 and self.to_tag is None:
            self.to_tag = resp.to_tag
        return resp, requests(out, "NOTIFY")

    def answer(self, notify, status=200, reason="OK"):
        """Answer one NOTIFY; returns what sipdisp sent then."""
        return self.stack.send(response_to(notify.to_bytes(), status, reason), source=self.source,
                               proto=self.proto, conn=self.conn)


def distinct(out):
    """The NOTIFYs in ``out`` without their retransmissions."""
    seen, notifies = set(), []
    for notify, target in requests(out, "NOTIFY"):
        if (notify.call_id, notify.cseq) not in seen:
            seen.add((notify.call_id, notify.cseq))
            notifies.append((notify, target))
    return notifies


def send_publish(stack, data):
    """Send a PUBLISH from bob; returns (final response, [(NOTIFY, Target)])."""
    out = stack.send(data, source=BOB)
    return final(out), requests(out, "NOTIFY")


def body_of(notify):
    """A NOTIFY's body as text."""
    return bytes(notify.body).decode()


def test_publish_subscribe_and_notify_end_to_end():
    """bob publishes, alice subscribes: 200 with To tag, Contact and Expires, then a
    NOTIFY in her dialog with bob's PIDF and Subscription-State active."""
    stack = make_stack()
    resp, notifies = send_publish(stack, publish(pidf(note="at lunch")))
    assert resp.status == 200 and resp.get("sip-etag") and resp.get("expires") == "600"
    assert notifies == []
    alice = Watcher(stack)
    resp, [(notify, target)] = alice.subscribe()
    assert (resp.status, resp.get("expires"), resp.get("contact")) == (
        200, "600", "<sip:127.0.0.1:5060>")
    assert resp.to_tag
    assert (target.proto, target.host, target.port) == ("udp", "10.0.0.1", 5070)
    assert str(notify.uri) == "sip:alice@10.0.0.1:5070"
    assert (notify.call_id, notify.from_tag, notify.to_tag) == (
        alice.call_id, resp.to_tag, alice.from_tag)
    assert notify.cseq == 1 and notify.get("event") == "presence"
    assert notify.get("subscription-state") == "active;expires=600"
    assert notify.get("content-type") == "application/pidf+xml"
    assert "at lunch" in body_of(notify)
    assert stack.server.snapshot()["subscriptions"] == 1


def test_modify_notifies_refresh_does_not_and_remove_notifies_the_empty_state():
    """A modify sends the new PIDF (next CSeq), a refresh sends nothing, a
    removal sends the package's 'nothing known' body."""
    stack = make_stack()
    alice = Watcher(stack)
    _, [(first, _)] = alice.subscribe()
    alice.answer(first)
    resp, [(n1, _)] = send_publish(stack, publish(pidf(note="away")))
    assert "away" in body_of(n1) and n1.cseq == 2
    alice.answer(n1)
    etag = resp.get("sip-etag")
    resp, none = send_publish(stack, publish(etag=etag))
    assert resp.status == 200 and none == [] and resp.get("sip-etag") != etag
    etag = resp.get("sip-etag")
    resp, [(n2, _)] = send_publish(stack, publish(pidf(note="online"), etag=etag))
    assert "online" in body_of(n2) and "away" not in body_of(n2) and n2.cseq == 3
    alice.answer(n2)
    resp, [(n3, _)] = send_publish(stack, publish(etag=resp.get("sip-etag"), expires=0))
    assert resp.status == 200 and resp.get("expires") == "0" and resp.get("sip-etag") is None
    assert "online" not in body_of(n3) and n3.cseq == 4
    assert stack.server.compositor.presentities() == 0


def test_publish_rows_follow_the_compositor():
    """The presentity table holds one row per live publication, its ETag the latest."""
    stack = make_stack()
    resp, _ = send_publish(stack, publish(pidf()))
    etag = resp.get("sip-etag")
    [row] = _rows(stack, "presentity")
    assert (row["username"], row["domain"], row["event"], row["etag"]) == (
        "bob", "example.com", "presence", etag)
    assert row["expires"] == int(stack.now) + 600 and bytes(row["body"]) == pidf()
    resp, _ = send_publish(stack, publish(etag=etag))
    [row] = _rows(stack, "presentity")
    assert row["etag"] == resp.get("sip-etag")
    send_publish(stack, publish(etag=row["etag"], expires=0))
    assert _rows(stack, "presentity") == []


def _rows(stack, table):
    d = stack.storage.select(table, order_by=["id"])
    stack.clock.advance(0)
    return d.result


def test_unknown_etag_is_412_and_stores_nothing():
    """SIP-If-Match with an ETag the compositor does not hold is 412 Conditional Request Failed."""
    stack = make_stack()
    resp, _ = send_publish(stack, publish(etag="no-such-etag"))
    assert (resp.status, resp.reason) == (412, "Conditional Request Failed")
    assert _rows(stack, "presentity") == []


@pytest.mark.parametrize("event", ["foo", None])
def test_publish_of_an_unknown_or_missing_event_is_489_with_allow_events(event):
    """RFC 3903 section 6 step 2: a missing or unknown Event is 489 Bad Event with Allow-Events."""
    stack = make_stack()
    resp, _ = send_publish(stack, publish(pidf(), event=event))
    assert (resp.status, resp.reason) == (489, "Bad Event")
    assert "presence" in resp.get("allow-events")
    assert _rows(stack, "presentity") == []


def test_subscribe_bad_event_missing_event_and_too_brief():
    """SUBSCRIBE: unknown Event 489 with Allow-Events, none at all 400, Expires 10 is 423."""
    stack = make_stack()
    resp, notifies = Watcher(stack, event="foo").subscribe()
    assert resp.status == 489 and "presence.winfo" in resp.get("allow-events") and not notifies
    resp, _ = Watcher(stack, event="").subscribe()
    assert (resp.status, resp.reason) == (400, "Missing Event header")
    resp, _ = Watcher(stack).subscribe(expires=10)
    assert (resp.status, resp.get("min-expires")) == (423, "60")
    assert stack.server.subs == {} and _rows(stack, "active_watchers") == []


def test_malformed_pidf_is_400_and_a_huge_body_413():
    """A PIDF that does not parse is 400 with the package's reason; a body over
    presence.max_body_size is 413, counted; neither is stored."""
    stack = make_stack(max_body_size=1000)
    resp, _ = send_publish(stack, publish(b"<presence><tuple>"))
    assert resp.status == 400 and resp.reason
    resp, _ = send_publish(stack, publish(b"<a>" + b"x" * 2000 + b"</a>"))
    assert resp.status == 413
    assert stack.core.stats["presence_limit_body"] == 1
    resp, _ = send_publish(stack, publish(b"hello", ctype="text/plain"))
    assert resp.status == 415 and "application/pidf+xml" in resp.get("accept")
    assert _rows(stack, "presentity") == [] and stack.server.compositor.presentities() == 0


def test_in_dialog_refresh_notifies_and_unsubscribe_terminates():
    """A refresh in the dialog is 200 and a NOTIFY with the new expiry; Expires 0
    ends it with a final NOTIFY 'terminated;reason=timeout', and its row goes."""
    stack = make_stack()
    alice = Watcher(stack)
    _, [(n1, _)] = alice.subscribe()
    alice.answer(n1)
    assert len(_rows(stack, "active_watchers")) == 1
    stack.advance(100)
    resp, [(n2, _)] = alice.subscribe(expires=1200)
    assert resp.status == 200 and resp.get("expires") == "1200"
    assert n2.get("subscription-state") == "active;expires=1200" and n2.cseq == 2
    alice.answer(n2)
    resp, [(n3, _)] = alice.subscribe(expires=0)
    assert resp.status == 200
    assert n3.get("subscription-state") == "terminated;reason=timeout" and n3.cseq == 3
    assert stack.server.subs == {} and _rows(stack, "active_watchers") == []
    resp, notifies = alice.subscribe()
    assert (resp.status, notifies) == (481, [])


def test_in_dialog_subscribe_of_an_unknown_subscription_is_481():
    """A SUBSCRIBE with a To tag no subscription has is 481."""
    stack = make_stack()
    resp, _ = Watcher(stack).subscribe(to_tag="nosuchtag")
    assert (resp.status, resp.reason) == (481, "Subscription does not exist")


def test_subscription_expires_by_timer_with_a_final_notify():
    """At its expiry the subscription ends with NOTIFY terminated;reason=timeout."""
    stack = make_stack()
    alice = Watcher(stack)
    _, [(n1, _)] = alice.subscribe(expires=120)
    alice.answer(n1)
    out = stack.advance(121)
    [(final_notify, _)] = distinct(out)
    assert final_notify.get("subscription-state") == "terminated;reason=timeout"
    assert stack.server.subs == {} and stack.server.stats["subscription_expired"] == 1


def test_publication_expiry_notifies_the_watchers():
    """A publication not refreshed goes at its expiry and the watcher hears the empty state."""
    stack = make_stack()
    send_publish(stack, publish(pidf(note="short"), expires=120))
    alice = Watcher(stack)
    _, [(n1, _)] = alice.subscribe()
    assert "short" in body_of(n1)
    alice.answer(n1)
    out = stack.advance(121)
    [(n2, _)] = distinct(out)
    assert "short" not in body_of(n2) and n2.get("subscription-state").startswith("active")
    assert stack.server.compositor.presentities() == 0 and _rows(stack, "presentity") == []


@pytest.mark.parametrize("status", [481, 408])
def test_a_watcher_answering_481_or_408_ends_the_subscription(status):
    """RFC 6665 4.2.2: a NOTIFY answered 481 (or 408) removes the subscription, no final NOTIFY."""
    stack = make_stack()
    alice = Watcher(stack)
    _, [(n1, _)] = alice.subscribe()
    out = alice.answer(n1, status, "Gone")
    assert requests(out, "NOTIFY") == []
    assert stack.server.subs == {} and _rows(stack, "active_watchers") == []
    _, notifies = send_publish(stack, publish(pidf()))
    assert notifies == []


def test_an_unanswered_notify_ends_the_subscription():
    """A NOTIFY without any answer (Timer F) ends the subscription; it was retransmitted first."""
    stack = make_stack()
    alice = Watcher(stack)
    alice.subscribe()
    out = stack.advance(40)
    assert len(requests(out, "NOTIFY")) >= 3  # retransmissions by the transaction layer
    assert stack.server.subs == {} and stack.server.stats["notify_failed"] == 1


def test_a_new_subscribe_without_to_tag_is_a_new_subscription():
    """Forking-safe: two SUBSCRIBEs of one Call-ID without To tag are two dialogs."""
    stack = make_stack()
    a = Watcher(stack)
    r1, [(n1, _)] = a.subscribe()
    b = Watcher(stack, call_id=a.call_id)
    b.from_tag = a.from_tag
    r2, [(n2, _)] = b.subscribe()
    assert r1.to_tag != r2.to_tag and n1.from_tag != n2.from_tag
    assert len(stack.server.subs) == 2


def test_a_change_while_a_notify_is_in_flight_waits_for_its_answer():
    """One NOTIFY per dialog in flight: a change meanwhile goes out once it is answered."""
    stack = make_stack()
    alice = Watcher(stack)
    _, [(n1, _)] = alice.subscribe()
    _, notifies = send_publish(stack, publish(pidf(note="busy")))
    assert notifies == []
    out = alice.answer(n1)
    [(n2, _)] = requests(out, "NOTIFY")
    assert n2.cseq == 2 and "busy" in body_of(n2)


def test_record_route_becomes_the_notify_route_set():
    """RFC 3261 12.1.1: the SUBSCRIBE's Record-Route is the NOTIFY's Route, the
    Contact its Request-URI, and it goes to the first route."""
    stack = make_stack()
    rr = ["<sip:10.0.0.9:5080;lr>", "<sip:10.0.0.8;lr>"]
    alice = Watcher(stack, rr=rr)
    _, [(notify, target)] = alice.subscribe()
    assert notify.values("route") == rr
    assert str(notify.uri) == "sip:alice@10.0.0.1:5070"
    assert (target.host, target.port) == ("10.0.0.9", 5080)


@pytest.mark.parametrize("proto", ["tcp", "ws"])
def test_notify_goes_on_the_connection_the_subscribe_came_on(proto):
    """Over TCP and WebSocket the NOTIFY uses the SUBSCRIBE's connection (a WS
    client's Contact is *.invalid); once that connection is gone a WS
    watcher cannot be reached and the subscription ends."""
    stack = make_stack()
    conn = stack.open_conn(proto, "10.0.0.1", 40000)
    contact = "<sip:x7@df7jal23ls0d.invalid;transport=ws>" if proto == "ws" else None
    alice = Watcher(stack, source=("10.0.0.1", 40000), proto=proto, conn=conn,
                    contact=contact)
    resp, [(notify, target)] = alice.subscribe()
    assert (target.proto, target.conn) == (proto, conn)
    assert resp.get("contact") == f"<sip:127.0.0.1:{5062 if proto == 'ws' else 5060};transport={proto}>"
    alice.answer(notify)
    if proto == "ws":
        stack.close_conn(conn)
        _, notifies = send_publish(stack, publish(pidf()))
        assert notifies == [] and stack.server.subs == {}
        assert stack.server.stats["notify_unreachable"] == 1


def test_subscribe_flood_from_one_source_is_capped_with_503():
    """Past max_subscriptions_per_source new SUBSCRIBEs get 503 with Retry-After, counted, not kept."""
    stack = make_stack(max_subscriptions_per_source=3, retry_after=11)
    for _ in range(3):
        assert Watcher(stack).subscribe()[0].status == 200
    resp, notifies = Watcher(stack).subscribe()
    assert (resp.status, resp.get("retry-after"), notifies) == (503, "11", [])
    assert stack.core.stats["presence_limit_source"] == 1
    assert len(stack.server.subs) == 3 and len(_rows(stack, "active_watchers")) == 3
    other = Watcher(stack, source=("10.0.0.3", 5070))
    assert other.subscribe()[0].status == 200


def test_max_watchers_per_presentity_is_a_503():
    """Past max_watchers_per_presentity one more watcher of bob is refused 503."""
    stack = make_stack(max_watchers_per_presentity=2)
    for i in range(2):
        assert Watcher(stack, source=(f"10.0.1.{i}", 5070)).subscribe()[0].status == 200
    assert Watcher(stack, source=("10.0.1.9", 5070)).subscribe()[0].status == 503
    assert stack.core.stats["presence_limit_watchers"] == 1


def test_fetch_sends_the_state_once_and_keeps_nothing():
    """An initial SUBSCRIBE with Expires 0 is a fetch: 200, one terminated NOTIFY with the state."""
    stack = make_stack()
    send_publish(stack, publish(pidf(note="fetched")))
    resp, [(notify, _)] = Watcher(stack).subscribe(expires=0)
    assert resp.status == 200 and "fetched" in body_of(notify)
    assert notify.get("subscription-state") == "terminated;reason=timeout"
    assert stack.server.subs == {} and _rows(stack, "active_watchers") == []


def test_state_survives_a_restart_and_the_next_notify_is_in_the_same_dialog():
    """A new server over the same tables reads publications and subscriptions
    back; bob's next PUBLISH reaches alice with her Call-ID, tags and the next CSeq."""
    stack = make_stack()
    resp, _ = send_publish(stack, publish(pidf(note="before")))
    alice = Watcher(stack, rr=["<sip:10.0.0.9:5080;lr>"])
    _, [(n1, _)] = alice.subscribe()
    alice.answer(n1)
    _, [(n2, _)] = send_publish(stack, publish(pidf(note="second")))
    alice.answer(n2)
    etag = None
    for (ev, who), pubs in stack.server.compositor.state.items():
        etag = list(pubs)[-1]
    stack.presence.stopService()
    # the restart: a new service over the same storage and core
    stack.presence = PresenceService(stack.root, stack.clock)
    stack.presence.startService()
    stack.clock.advance(0)
    server = stack.server = stack.presence.server
    assert len(server.subs) == 1 and server.compositor.publication_count() == 2
    resp, [(n3, target)] = send_publish(stack, publish(pidf(note="after"), etag=etag))
    assert resp.status == 200
    assert (n3.call_id, n3.from_tag, n3.to_tag, n3.cseq) == (
        alice.call_id, n1.from_tag, alice.from_tag, 3)
    assert n3.values("route") == ["<sip:10.0.0.9:5080;lr>"]
    assert "after" in body_of(n3) and (target.host, target.port) == ("10.0.0.9", 5080)
    alice.answer(n3)
    resp, [(n4, _)] = alice.subscribe(expires=0)
    assert resp.status == 200 and n4.get("subscription-state").startswith("terminated")


def test_pending_watchers_and_watcherinfo_without_force_active():
    """force_active false: a watcher without a watchers row is pending (NOTIFY with no
    body, a pending row stored), bob's presence.winfo subscription hears of
    her, and allowing her makes her NOTIFY active with bob's state."""
    stack = make_stack(force_active=False)
    send_publish(stack, publish(pidf(note="secret")))
    bob = Watcher(stack, event="presence.winfo", source=BOB, user="bob")
    _, [(w1, _)] = bob.subscribe()
    bob.answer(w1)
    assert w1.get("content-type") == "application/watcherinfo+xml"
    alice = Watcher(stack)
    out = stack.send(alice.subscribe_bytes(), source=ALICE)
    notifies = requests(out, "NOTIFY")
    [mine] = [n for n, _ in notifies if n.call_id == alice.call_id]
    [winfo] = [n for n, _ in notifies if n.call_id == bob.call_id]
    assert mine.get("subscription-state").startswith("pending") and bytes(mine.body) == b""
    assert "sip:alice@example.com" in body_of(winfo) and "pending" in body_of(winfo)
    [rule] = _rows(stack, "watchers")
    assert (rule["presentity_uri"], rule["watcher_username"], rule["status"]) == (
        "sip:bob@example.com", "alice", 0)
    alice.to_tag = final(out).to_tag
    alice.answer(mine)
    bob.answer(winfo)
    d = stack.storage.update("watchers", {"status": 1}, {"watcher_username": "alice"})
    stack.clock.advance(0)
    assert d.result == 1
    changed = stack.registry.call("presence.update_watchers", "sip:bob@example.com")
    stack.clock.advance(0)
    assert changed.result == 1
    out = stack.take()
    [mine] = [n for n, _ in requests(out, "NOTIFY") if n.call_id == alice.call_id]
    assert mine.get("subscription-state").startswith("active") and "secret" in body_of(mine)


def test_publish_internal_replaces_by_source_and_removes_with_expires_0():
    """The dialog feed's entry point: one publication per source_id, replaced in place,
    removed with expires 0, each change notified."""
    stack = make_stack()
    alice = Watcher(stack, event="dialog")
    _, [(n1, _)] = alice.subscribe()
    alice.answer(n1)
    server = stack.server
    ctype = server.packages["dialog"].content_types[0]

    def info(state):
        return (f'<?xml version="1.0"?>\n<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
                f'version="0" state="full" entity="sip:bob@example.com"><dialog id="d1">'
                f'<state>{state}</state></dialog></dialog-info>').encode()

    assert server.publish_internal("dialog", "sip:bob@example.com", "call1:callee", ctype,
                                   info("early"), 60, stack.now)
    [(n2, _)] = requests(stack.take(), "NOTIFY")
    assert "early" in body_of(n2)
    alice.answer(n2)
    server.publish_internal("dialog", "<sip:bob@example.com>", "call1:callee", ctype,
                            info("confirmed"), 3600, stack.now)
    [(n3, _)] = requests(stack.take(), "NOTIFY")
    assert "confirmed" in body_of(n3) and "early" not in body_of(n3)
    assert server.compositor.publication_count() == 1
    alice.answer(n3)
    server.publish_internal("dialog", "sip:bob@example.com", "call1:callee", ctype, b"", 0,
                            stack.now)
    [(n4, _)] = requests(stack.take(), "NOTIFY")
    assert "confirmed" not in body_of(n4)
    # RFC 4235 4.1: the document version counts the NOTIFYs of this subscription
    versions = [re.search(r'<dialog-info[^>]* version="(\d+)"', body_of(n)).group(1)
                for n in (n1, n2, n3, n4)]
    assert versions == ["0", "1", "2", "3"]
    assert server.compositor.publication_count() == 0 and _rows(stack, "presentity") == []


def test_commands_and_metrics_show_presentities_and_watchers():
    """presence.list, presence.watchers, presence.stats and the metrics hook report the tables."""
    stack = make_stack()
    send_publish(stack, publish(pidf()))
    Watcher(stack).subscribe()
    registry = stack.registry
    [listed] = registry.call("presence.list").result
    assert (listed["presentity"], listed["event"], listed["watchers"]) == (
        "sip:bob@example.com", "presence", 1)
    [watcher] = registry.call("presence.watchers", presentity="sip:bob@example.com").result
    assert watcher["watcher"] == "sip:alice@example.com" and watcher["status"] == "active"
    stats = registry.call("presence.stats").result
    assert (stats["presentities"], stats["subscriptions"], stats["notify_sent"]) == (1, 1, 1)
    metrics = {name: samples for name, _, _, samples in stack.server.metrics()}
    assert metrics["sipdisp_presence_presentities"] == 1
    assert metrics["sipdisp_presence_subscriptions"] == [({"event": "presence"}, 1)]
    assert metrics["sipdisp_presence_notify_sent_total"] == 1


def test_presence_disabled_keeps_the_404():
    """With presence.enabled false the built-in route still answers 404 Not here."""
    stack = Stack()
    out = stack.send(publish(pidf()), source=BOB)
    assert (final(out).status, final(out).reason) == (404, "Not here")
    assert responses(out, 200) == []


def test_requests_during_the_read_back_wait_for_it():
    """After a restart, a refresh arriving while the tables are still being read
    is held (not 481) and answered once the subscription is back, its NOTIFY next in CSeq."""
    from tests.support.registrar import SlowStorage
    stack = make_stack()
    alice = Watcher(stack)
    _, [(n1, _)] = alice.subscribe()
    alice.answer(n1)
    stack.presence.stopService()
    stack.root.modules.storage = SlowStorage(stack.storage, stack.clock, delay=0.5)
    stack.presence = PresenceService(stack.root, stack.clock)
    stack.presence.startService()
    held = stack.send(alice.subscribe_bytes(expires=900), source=ALICE, settle=False)
    assert responses(held) == []
    out = stack.advance(1.0)
    assert final(out).status == 200
    [(n2, _)] = requests(out, "NOTIFY")
    assert (n2.call_id, n2.cseq) == (alice.call_id, 2)
    assert n2.get("subscription-state") == "active;expires=900"
    assert stack.presence.ready.called


def test_a_websocket_watcher_that_reconnected_gets_its_notify_on_the_new_flow():
    """The SUBSCRIBE's WebSocket closes; the phone reconnects and registers the same
    *.invalid Contact: the next NOTIFY goes on the connection it registered from."""
    stack = make_stack()
    contact = "<sip:x7@df7jal23ls0d.invalid;transport=ws>"
    first = stack.open_conn("ws", "10.0.0.1", 40001)
    alice = Watcher(stack, source=("10.0.0.1", 40001), proto="ws", conn=first, contact=contact)
    _, [(n1, t1)] = alice.subscribe()
    assert t1.conn == first
    alice.answer(n1)
    stack.close_conn(first)
    second = stack.open_conn("ws", "10.0.0.1", 40002)
    ua = stack.ua("alice", "10.0.0.1", 40002, proto="ws", conn=second, contact=contact)
    assert final(ua.send(ua.register_bytes())).status == 200
    _, [(n2, t2)] = send_publish(stack, publish(pidf(note="reconnected")))
    assert t2.conn == second and n2.call_id == alice.call_id and n2.cseq == 2
    assert "reconnected" in body_of(n2)


def test_a_denied_watcher_gets_terminated_rejected_and_no_state():
    """force_active false and a watchers row with status 2: 200, then a final NOTIFY
    'terminated;reason=rejected' without bob's state, and no subscription kept."""
    stack = make_stack(force_active=False)
    send_publish(stack, publish(pidf(note="private")))
    d = stack.storage.insert("watchers", {
        "presentity_uri": "sip:bob@example.com", "watcher_username": "alice",
        "watcher_domain": "example.com", "event": "presence", "status": 2,
        "inserted_time": int(stack.now)})
    stack.clock.advance(0)
    assert d.result == 1
    resp, [(notify, _)] = Watcher(stack).subscribe()
    assert resp.status == 200
    assert notify.get("subscription-state") == "terminated;reason=rejected"
    assert bytes(notify.body) == b""
    assert stack.server.subs == {} and _rows(stack, "active_watchers") == []
    assert stack.server.stats["subscribe_rejected"] == 1


def test_a_tcp_watcher_after_a_restart_is_reached_over_a_new_connection():
    """After a restart the SUBSCRIBE's TCP connection is not known: the NOTIFY goes to the
    Contact over TCP (the edge opens a connection), in the same dialog."""
    stack = make_stack()
    conn = stack.open_conn("tcp", "10.0.0.1", 40003)
    alice = Watcher(stack, source=("10.0.0.1", 40003), proto="tcp", conn=conn,
                    contact="<sip:alice@10.0.0.1:40003;transport=tcp>")
    _, [(n1, _)] = alice.subscribe()
    alice.answer(n1)
    stack.presence.stopService()
    stack.close_conn(conn)
    stack.presence = PresenceService(stack.root, stack.clock)
    stack.presence.startService()
    stack.clock.advance(0)
    _, [(n2, target)] = send_publish(stack, publish(pidf(note="after")))
    assert (target.proto, target.host, target.port, target.conn) == (
        "tcp", "10.0.0.1", 40003, None)
    assert (n2.call_id, n2.cseq) == (alice.call_id, 2)
