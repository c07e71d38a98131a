"""The busy lamp fed by the proxy's calls: a real dialog table in a real proxy
core, fed INVITEs and replies in memory, drives DialogFeed, which publishes
into a recording stand-in for the presence server's ``publish_internal``."""

import xml.etree.ElementTree as ET

from sipdisp.presence.dialogfeed import DialogFeed, aor_of
from sipdisp.presence.packages import build_packages
from sipdisp.sip.uri import parse_uri
from tests.support import sipmsg
from tests.support.calls import FakeStorage, Switch

DI = "{urn:ietf:params:xml:ns:dialog-info}"
DINFO = "application/dialog-info+xml"
ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
PACKAGE = build_packages(True)["dialog"]


class RecordingServer:
    """Records every publish_internal call and keeps the live publications as the
    presence server would (expires 0 removes one), to read a presentity's lamp."""

    def __init__(self, fail_for=()):
        self.calls = []
        self.live = {}
        self.fail_for = set(fail_for)

    def publish_internal(self, event, presentity, source_id, content_type, body, expires, now):
        """Record the publication; raise for a presentity in ``fail_for``."""
        if presentity in self.fail_for:
            raise RuntimeError("storage down")
        PACKAGE.validate(content_type, body)  # every body the feed writes is valid dialog-info
        self.calls.append({"event": event, "aor": presentity, "source": source_id,
                           "type": content_type, "body": body, "expires": expires, "now": now})
        key = (presentity, source_id)
        if expires == 0:
            self.live.pop(key, None)
        else:
            self.live[key] = (source_id, content_type, body)

    def states(self, aor):
        """``[(state, expires)]`` published for ``aor``, in order."""
        return [(_dialog(c["body"]).find(f"{DI}state").text, c["expires"])
                for c in self.calls if c["aor"] == aor]

    def lamp(self, aor):
        """The dialog states a NOTIFY for ``aor`` would carry now."""
        pubs = [pub for (who, _), pub in self.live.items() if who == aor]
        root = ET.fromstring(PACKAGE.notify_body(aor, pubs)[1])
        return [d.find(f"{DI}state").text for d in root.findall(f"{DI}dialog")]


def _dialog(body):
    (dialog,) = ET.fromstring(body).findall(f"{DI}dialog")
    return dialog


def ours(sw, *domains):
    """Make ``domains`` the proxy's own (as proxy.domains does)."""
    identity = sw.core.identity
    identity.domains.update(domains)
    identity.set_listeners(identity.listeners)
    return sw


def setup(**kw):
    sw = ours(Switch(**kw), "example.com")
    server = RecordingServer()
    feed = DialogFeed(server, sw.dialogs)
    return sw, server, feed


def answer_ok(call):
    """The node answers 200 (no 180) and the caller ACKs."""
    peer = call.sw.nodes[call.node]
    peer.send(sipmsg.response_to(call.fwd, 200, "OK", to_tag=call.to_tag,
                                 extra=[("contact", f"<sip:fs@127.0.0.1:{peer.port}>")]))
    call.ok = [m for m in call.sw.uac.messages() if not m.is_request and m.status == 200][-1]
    call.caller_request("ACK", 1)
    peer.take()


def test_answered_call_lights_both_lamps_early_confirmed_terminated_then_dark():
    """180, 200, BYE: caller and callee each get early, confirmed, terminated, then the
    publication is removed (expires 0) and the lamp is dark."""
    sw, server, feed = setup()
    call = sw.call()
    call.start()
    assert server.calls == []  # nothing before the first provisional with a To tag
    call.ring()
    assert server.lamp(ALICE) == ["early"] and server.lamp(BOB) == ["early"]
    answer_ok(call)
    assert server.lamp(ALICE) == ["confirmed"] and server.lamp(BOB) == ["confirmed"]
    sw.advance(5)
    call.hangup()
    lifetime = int(sw.dialogs.default_timeout) + 60
    for aor in (ALICE, BOB):
        assert server.states(aor) == [("early", 300), ("confirmed", lifetime),
                                      ("terminated", 30), ("terminated", 0)]
        assert server.lamp(aor) == []
    assert {c["event"] for c in server.calls} == {"dialog"}
    assert {c["type"] for c in server.calls} == {DINFO}
    assert server.calls[-1]["now"] == sw.now and feed.lit == 0
    assert feed.stats["early"] == 2 and feed.stats["removed"] == 2


def test_each_side_is_its_own_publication_with_direction_tags_and_parties():
    """The caller's dialog is the initiator's (From tag local), the callee's the recipient's
    (To tag local once known); sources are "<dialog id>:caller" and ":callee"."""
    sw, server, feed = setup()
    call = sw.call()
    call.start()
    call.ring()
    answer_ok(call)
    dlg = next(iter(sw.dialogs.dialogs.values()))
    early_caller, early_callee, conf_caller, conf_callee = server.calls
    assert [c["source"] for c in server.calls] == [f"{dlg.id}:caller", f"{dlg.id}:callee"] * 2
    d = _dialog(conf_caller["body"])
    assert (d.get("direction"), d.get("call-id"), d.get("local-tag"), d.get("remote-tag")) == \
        ("initiator", call.call_id, call.from_tag, call.to_tag)
    assert d.find(f"{DI}local/{DI}identity").text == ALICE
    assert d.find(f"{DI}remote/{DI}identity").text == BOB
    assert d.find(f"{DI}local/{DI}target").get("uri") == "sip:alice@10.0.0.1:5070"
    assert d.find(f"{DI}remote/{DI}target").get("uri") == "sip:fs@127.0.0.1:5081"
    d = _dialog(conf_callee["body"])
    assert (d.get("direction"), d.get("local-tag"), d.get("remote-tag")) == \
        ("recipient", call.to_tag, call.from_tag)
    assert d.find(f"{DI}local/{DI}target").get("uri") == "sip:fs@127.0.0.1:5081"
    assert d.find(f"{DI}remote/{DI}target").get("uri") == "sip:alice@10.0.0.1:5070"
    # before the answer the callee's Contact is unknown: its target is its identity
    assert _dialog(early_callee["body"]).find(f"{DI}local/{DI}target").get("uri") == BOB
    assert _dialog(early_callee["body"]).get("local-tag") is None  # To tag not known yet
    versions = [ET.fromstring(c["body"]).get("version") for c in server.calls]
    assert versions == ["0", "0", "1", "1"]
    assert ET.fromstring(early_caller["body"]).get("entity") == ALICE


def test_cancelled_call_goes_early_then_terminated_without_confirmed():
    """The caller CANCELs a ringing call: early, then terminated and removed, for both sides."""
    sw, server, feed = setup()
    call = sw.call()
    call.start()
    got = call.cancel()
    assert 487 in [m.status for m in got if not m.is_request]
    for aor in (ALICE, BOB):
        assert server.states(aor) == [("early", 300), ("terminated", 30), ("terminated", 0)]
        assert server.lamp(aor) == []
    assert sw.dialogs.stats["ended_failure"] == 1 and feed.lit == 0


def test_rejected_call_after_ringing_goes_early_then_terminated():
    """180 then 486 Busy Here: early, then terminated, then dark."""
    sw, server, feed = setup()
    call = sw.call()
    call.start()
    got = call.answer(486, "Busy Here")
    assert [m.status for m in got][-1] == 486
    assert server.states(BOB) == [("early", 300), ("terminated", 30), ("terminated", 0)]
    assert server.lamp(BOB) == [] and server.lamp(ALICE) == []


def test_call_failing_before_any_ringing_publishes_nothing():
    """486 without a 180 first: no lamp was lit, so nothing is published at all."""
    sw, server, feed = setup()
    call = sw.call()
    call.start()
    peer = sw.nodes[call.node]
    peer.send(sipmsg.response_to(call.fwd, 486, "Busy Here", to_tag=call.to_tag))
    peer.take()
    assert sw.dialogs.stats["ended_failure"] == 1
    assert server.calls == [] and feed.lit == 0


def test_call_answered_without_ringing_goes_straight_to_confirmed():
    """A 200 with no 180 before it: confirmed is the first state published."""
    sw, server, feed = setup()
    call = sw.call()
    call.start()
    answer_ok(call)
    assert [s for s, _ in server.states(BOB)] == ["confirmed"]


def test_only_parties_in_our_domains_are_published():
    """Without example.com as ours, the caller (alice@example.com) gets no lamp and the
    callee is the Request-URI's user on our address (sip:1000@127.0.0.1)."""
    sw = Switch()
    server = RecordingServer()
    DialogFeed(server, sw.dialogs)
    call = sw.call()
    call.start()
    call.ring()
    assert {c["aor"] for c in server.calls} == {"sip:1000@127.0.0.1"}
    assert [c["source"].rsplit(":", 1)[1] for c in server.calls] == ["callee"]


def test_aor_of_keeps_user_and_host_of_our_uris_only():
    """aor_of drops port and parameters, lower-cases the host, and refuses foreign domains,
    URIs without a user, tel: URIs and garbage."""
    mine = {"example.com"}

    def is_myself(uri):
        return uri.host in mine

    assert aor_of("sip:Bob@EXAMPLE.com:5060;transport=tcp", is_myself) == "sip:Bob@example.com"
    assert aor_of("sips:bob@example.com", is_myself) == "sip:bob@example.com"
    assert aor_of("sip:bob@elsewhere.net", is_myself) is None
    assert aor_of("sip:example.com", is_myself) is None
    assert aor_of("tel:+4930123", is_myself) is None
    assert aor_of("not a uri", is_myself) is None
    assert is_myself(parse_uri("sip:x@example.com"))


def test_call_timeout_publishes_terminated_with_the_timeout_event():
    """At dialog.default_timeout the proxy hangs up; the lamp says terminated, event timeout."""
    sw, server, feed = setup(dialog={"default_timeout": 60.0})
    call = sw.call()
    call.start()
    call.answer()
    assert server.states(BOB)[-1] == ("confirmed", 120)
    sw.advance(61)
    terminated = [c for c in server.calls if c["aor"] == BOB][-2:]
    assert [c["expires"] for c in terminated] == [30, 0]
    state = _dialog(terminated[0]["body"]).find(f"{DI}state")
    assert (state.text, state.get("event")) == ("terminated", "timeout")
    assert server.lamp(BOB) == []


def test_unanswered_call_past_early_timeout_goes_dark():
    """A call still ringing at dialog.early_timeout: the early lamp (published for that
    long) turns terminated with event timeout and is removed."""
    sw, server, feed = setup(dialog={"early_timeout": 5.0})
    call = sw.call()
    call.start()
    call.ring()
    assert server.states(ALICE) == [("early", 5)]
    sw.advance(5.1)
    assert server.states(ALICE) == [("early", 5), ("terminated", 30), ("terminated", 0)]
    assert server.lamp(ALICE) == [] and feed.lit == 0


def test_a_failing_publication_for_one_side_does_not_stop_the_other_or_the_call():
    """publish_internal raising for the caller's AOR: counted, the callee still gets its
    lamp and the call is still confirmed."""
    sw = ours(Switch(), "example.com")
    server = RecordingServer(fail_for={ALICE})
    feed = DialogFeed(server, sw.dialogs)
    call = sw.call()
    call.start()
    call.answer()
    assert [s for s, _ in server.states(BOB)] == ["early", "confirmed"]
    assert feed.stats["failed"] == 2
    assert next(iter(sw.dialogs.dialogs.values())).state_name == "confirmed"


def test_two_calls_to_one_user_show_two_dialogs_in_her_lamp():
    """Bob on two calls at once: his lamp lists both; the first hung up leaves the second."""
    sw, server, feed = setup()
    first, second = sw.call(), sw.call()
    first.start()
    first.answer()
    second.start()
    second.ring()
    assert sorted(server.lamp(BOB)) == ["confirmed", "early"]
    first.hangup()
    assert server.lamp(BOB) == ["early"] and feed.lit == 1


def test_a_call_reloaded_after_a_restart_turns_its_lamp_dark_when_it_ends():
    """A confirmed call restored from the dialog table after a restart was never seen by
    this feed, yet its BYE still publishes terminated and removes the stored lamp."""
    storage = FakeStorage()
    before = ours(Switch(storage=storage, dialog={"db_mode": 1}), "example.com")
    call = before.call()
    call.start()
    call.answer()
    after = ours(Switch(storage=storage, dialog={"db_mode": 1}, now=before.now + 30),
                 "example.com")
    server = RecordingServer()
    DialogFeed(server, after.dialogs)
    assert after.dialogs.restore(storage.tables["dialog"], storage.tables["dialog_vars"],
                                 after.now) == 1
    call.sw = after
    call.hangup()
    assert server.states(BOB) == [("terminated", 30), ("terminated", 0)]


def test_attach_is_idempotent_and_detach_stops_the_feed():
    """Attaching twice registers once; after detach a call publishes nothing."""
    sw, server, feed = setup()
    feed.attach(sw.dialogs)
    mine = {"early": feed.on_early, "confirmed": feed.on_confirmed, "ended": feed.on_ended}
    assert all(sw.dialogs.callbacks[k].count(cb) == 1 for k, cb in mine.items())
    call = sw.call()
    call.start()
    call.ring()
    assert len(server.calls) == 2
    feed.detach()
    assert all(cb not in sw.dialogs.callbacks[k] for k, cb in mine.items())
    answer_ok(call)
    assert len(server.calls) == 2


def test_early_is_published_once_however_many_provisional_replies_come():
    """180, 183 and another 180: the table's early callback runs once, one early per side."""
    sw, server, feed = setup()
    call = sw.call()
    call.start()
    peer = sw.nodes[call.node]
    for status, reason in ((180, "Ringing"), (183, "Session Progress"), (180, "Ringing")):
        peer.send(sipmsg.response_to(call.fwd, status, reason, to_tag=call.to_tag))
    assert len(sw.uac.messages()) >= 3
    assert server.states(ALICE) == [("early", 300)] and server.states(BOB) == [("early", 300)]
