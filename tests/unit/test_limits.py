"""The caps of issue 17 item 2, sans-IO: the message-rate token bucket, the
stream framer's header-section and Content-Length caps, the transaction
and dialog tables' size limits (503 with Retry-After), and the registrar's
contacts per AOR and unauthenticated AORs (each counted)."""

import pytest

from sipdisp.proxy import Listener, ProxyCore
from sipdisp.sip import parse_message
from sipdisp.sip.errors import SipParseError
from sipdisp.sip.parser import StreamFramer
from sipdisp.transport.ratelimit import TokenBucket
from tests.support import sipmsg
from tests.support.calls import Switch
from tests.support.registrar import Stack

NODES = [(0, "sip:127.0.0.1:5090"), (1, "sip:127.0.0.1:5080")]


# -- message rates --------------------------------------------------------------------

def test_bucket_allows_a_seconds_burst_then_refuses():
    """A bucket of 10/s takes 10 messages at once and refuses the 11th."""
    bucket = TokenBucket(10, now=0.0)
    assert all(bucket.take(0.0) for _ in range(10))
    assert not bucket.take(0.0)


def test_bucket_refills_at_its_rate():
    """After the burst, 0.5 s at 10/s gives back exactly 5 messages, not more."""
    bucket = TokenBucket(10, now=0.0)
    for _ in range(10):
        bucket.take(0.0)
    assert [bucket.take(0.5) for _ in range(6)] == [True] * 5 + [False]


def test_bucket_never_holds_more_than_its_burst():
    """An hour of silence still allows only one second's worth at once."""
    bucket = TokenBucket(5, now=0.0)
    assert sum(bucket.take(3600.0) for _ in range(20)) == 5


# -- the stream framer ---------------------------------------------------------------------

HEAD = (b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n")


def test_header_section_cap_trips_however_segmented():
    """A header section that never ends is refused with 513 once max_header bytes
    arrived, the same at once and fed byte by byte."""
    endless = HEAD + b"X-Pad: " + b"a" * 5000
    framer = StreamFramer(65535, max_header=1024)
    with pytest.raises(SipParseError) as whole:
        framer.feed(endless)
    framer = StreamFramer(65535, max_header=1024)
    fed = 0
    with pytest.raises(SipParseError) as trickled:
        for i in range(len(endless)):
            framer.feed(endless[i:i + 1])
            fed += 1
    assert whole.value.status == trickled.value.status == 513
    assert trickled.value.reason == "Header Section Too Large"
    assert fed == 1023  # the byte that made 1024 raised
    assert framer.buffered <= 1024


def test_complete_header_over_the_cap_is_refused_and_under_it_framed():
    """A complete header section of 1,100 bytes passes a 2,048 cap and trips a 1,024 one."""
    msg = HEAD + b"X-Pad: " + b"a" * (1100 - len(HEAD) - 29) + b"\r\nContent-Length: 0\r\n\r\n"
    assert StreamFramer(65535, max_header=2048).feed(msg) == [msg]
    with pytest.raises(SipParseError) as exc:
        StreamFramer(65535, max_header=1024).feed(msg)
    assert exc.value.status == 513


@pytest.mark.parametrize("length", [b"2000000000", b"2147483648", b"9" * 40])
def test_huge_content_length_is_refused_before_any_body(length):
    """A header announcing a 2 GB (or absurd) body is refused as soon as the header
    ends, with no byte of the body received or buffered."""
    framer = StreamFramer(65535)
    with pytest.raises(SipParseError) as exc:
        framer.feed(HEAD + b"Content-Length: " + length + b"\r\n\r\n")
    assert exc.value.status in (400, 513)


# -- the transaction table ---------------------------------------------------------------------

def core_with(max_transactions):
    """A proxy core whose route answers every request 200 through its transaction."""
    listener = Listener("udp0", "udp", "127.0.0.1", 5060)
    return ProxyCore([listener], lambda ctx: ctx.reply(200, "OK"),
                     max_transactions=max_transactions), listener


def options_from(n, listener):
    """An OPTIONS of its own transaction, from 10.0.0.1:5070."""
    from sipdisp.proxy.target import Target
    data = sipmsg.request("OPTIONS", "sip:127.0.0.1:5060", via_host="10.0.0.1", via_port=5070,
                          branch=f"z9hG4bKcap{n}", call_id=f"cap-{n}")
    return data, Target("udp", "10.0.0.1", 5070, None, listener)


def test_full_transaction_table_answers_503_with_retry_after_and_keeps_nothing():
    """With sip.max_transactions = 3, the fourth request gets a stateless 503
    Server Busy with Retry-After, the table stays at 3 and the refusal is counted."""
    core, listener = core_with(3)
    for n in range(3):
        out = core.receive(*options_from(n, listener), now=0.0)
        assert parse_message(out[0][0]).status == 200
    out = core.receive(*options_from(3, listener), now=0.0)
    resp = parse_message(out[0][0])
    assert (resp.status, resp.reason) == (503, "Server Busy")
    assert resp.get("retry-after") == "5"
    assert len(core.layer.servers) == 3
    assert core.stats["transactions_refused_full"] == 1


def test_transaction_table_takes_requests_again_once_transactions_end():
    """When the transactions of the full table terminate (Timer J), new requests pass."""
    core, listener = core_with(2)
    for n in range(2):
        core.receive(*options_from(n, listener), now=0.0)
    core.on_timers(40.0)  # past 64*T1: the non-INVITE server transactions are gone
    out = core.receive(*options_from(9, listener), now=40.0)
    assert parse_message(out[0][0]).status == 200


def test_retransmission_into_a_full_table_is_still_absorbed():
    """A retransmission of a request that holds a transaction is answered from
    it (its 200 again), not refused, while the table is full."""
    core, listener = core_with(1)
    first = options_from(0, listener)
    core.receive(*first, now=0.0)
    out = core.receive(*first, now=0.5)
    assert parse_message(out[0][0]).status == 200
    assert core.stats["transactions_refused_full"] == 0


def test_no_limit_when_zero():
    """sip.max_transactions = 0 never refuses."""
    core, listener = core_with(0)
    for n in range(50):
        core.receive(*options_from(n, listener), now=0.0)
    assert len(core.layer.servers) == 50


# -- the dialog table ---------------------------------------------------------------------------

def test_full_dialog_table_answers_the_invite_503_and_relays_nothing():
    """With dialog.max_dialogs = 2, a third INVITE is answered 503 Server Busy with
    Retry-After, reaches no node, and is counted; after one call ends a new one passes."""
    sw = Switch(dialog={"max_dialogs": 2})
    first, second = sw.call(), sw.call()
    assert first.start() and second.start()
    third = sw.call()
    assert third.start() is None
    replies = [m for m in sw.uac.messages() if not m.is_request and m.call_id == third.call_id]
    assert [(m.status, m.reason) for m in replies if m.status >= 200] == [(503, "Server Busy")]
    assert replies[-1].get("retry-after") == "5"
    assert len(sw.dialogs.dialogs) == 2
    assert sw.dialogs.stats["refused_full"] == 1
    families = {name: samples for name, _, _, samples in sw.dialogs.metrics()}
    assert families["sipdisp_dialogs_refused_total"] == 1
    first.answer(486, "Busy Here")  # a failed call leaves the table
    assert sw.call().start() is not None


# -- the registrar --------------------------------------------------------------------------------

def test_max_contacts_refusal_is_counted_in_the_core():
    """The 503 over registrar.max_contacts is counted (register_max_contacts)."""
    s = Stack({"registrar": {"max_contacts": 1}}, rows=NODES)
    assert s.ua("alice", host="10.0.0.1").register().status == 200
    assert s.ua("alice", host="10.0.0.2").register().status == 503
    assert s.core.stats["register_max_contacts"] == 1


def test_max_contacts_defaults_to_a_cap():
    """Without configuration an AOR holds at most 32 contacts; the 33rd gets 503."""
    s = Stack({}, rows=NODES)
    statuses = [s.ua("alice", host=f"10.0.1.{i}").register().status for i in range(1, 34)]
    assert statuses == [200] * 32 + [503]


def test_unauthenticated_aors_are_capped_and_counted():
    """With registrar.max_unauthenticated_aors = 3 a fourth AOR registered without
    authentication gets 403, while refreshing a known AOR still works."""
    s = Stack({"registrar": {"max_unauthenticated_aors": 3}}, rows=NODES)
    for user in ("u1", "u2", "u3"):
        assert s.ua(user).register().status == 200
    refused = s.ua("u4").register()
    assert (refused.status, refused.reason) == (403, "Too Many Unauthenticated Registrations")
    assert s.ua("u2").register().status == 200
    assert s.core.stats["register_unauthenticated_aors_refused"] == 1
    assert s.location.count == 3


def test_unauthenticated_aor_slots_free_on_expiry_and_unregister():
    """An AOR unregistered (Expires: 0) or expired frees its slot for another."""
    s = Stack({"registrar": {"max_unauthenticated_aors": 2, "min_expires": 10}}, rows=NODES)
    s.ua("u1").register(expires=60)
    s.ua("u2").register(expires=3600)
    assert s.ua("u3").register().status == 403
    s.ua("u2").register(expires=0)
    assert s.ua("u3").register(expires=3600).status == 200
    assert s.ua("u4").register().status == 403
    s.advance(61)  # u1's binding expired
    assert s.ua("u4").register().status == 200


def test_authenticated_registrations_are_not_capped():
    """With authentication on, max_unauthenticated_aors = 1 does not limit
    subscribers who authenticate."""
    s = Stack({"auth": {"enabled": True}, "registrar": {"max_unauthenticated_aors": 1}},
              users={"alice": "pw1", "bob": "pw2"}, rows=NODES)
    assert s.ua("alice", password="pw1").register().status == 200
    assert s.ua("bob", password="pw2").register().status == 200
