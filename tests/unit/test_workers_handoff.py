"""The Call-ID owner of a raw datagram (transport/handoff.py): the scan the
UDP hand-off between worker processes steers by."""

import zlib

from sipdisp.transport.handoff import call_id, call_id_owner


def invite(call_id_line, body=b""):
    return (b"INVITE sip:bob@example.com SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
            b"From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
            + call_id_line + b"\r\nCSeq: 1 INVITE\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


def test_long_and_compact_forms_in_any_case_give_the_value():
    assert call_id(invite(b"Call-ID: abc@10.0.0.1")) == b"abc@10.0.0.1"
    assert call_id(invite(b"call-id:abc@10.0.0.1  ")) == b"abc@10.0.0.1"
    assert call_id(invite(b"CALL-ID \t:  abc@10.0.0.1")) == b"abc@10.0.0.1"
    assert call_id(invite(b"i: abc@10.0.0.1")) == b"abc@10.0.0.1"
    assert call_id(invite(b"I:abc@10.0.0.1")) == b"abc@10.0.0.1"


def test_the_owner_is_crc32_mod_n_plus_one_and_the_same_for_every_message_of_a_call():
    cid = b"3848276298220188511@10.0.0.1"
    expected = zlib.crc32(cid) % 3 + 1
    assert call_id_owner(invite(b"Call-ID: " + cid), 3) == expected
    assert call_id_owner(invite(b"i: " + cid), 3) == expected  # compact form, same owner
    cancel = invite(b"Call-ID: " + cid).replace(b"INVITE", b"CANCEL")
    assert call_id_owner(cancel, 3) == expected


def test_owners_cover_every_worker_and_stay_in_range():
    owners = {call_id_owner(invite(b"Call-ID: call-%d@host" % n), 4) for n in range(200)}
    assert owners == {1, 2, 3, 4}
    assert {call_id_owner(invite(b"Call-ID: x%d" % n), 1) for n in range(20)} == {1}


def test_the_value_is_case_sensitive():
    # RFC 3261: Call-IDs compare case-sensitively, so they may have different owners
    values = {call_id(invite(b"Call-ID: AbC")), call_id(invite(b"Call-ID: abc"))}
    assert values == {b"AbC", b"abc"}


def test_no_call_id_keepalive_or_garbage_has_no_owner():
    assert call_id_owner(b"\r\n\r\n", 2) is None
    assert call_id_owner(b"\x00\x01garbage", 2) is None
    assert call_id_owner(invite(b"X-Call: 1"), 2) is None
    assert call_id_owner(invite(b"Call-ID:   "), 2) is None


def test_only_the_header_part_is_scanned_not_the_body():
    body = b"v=0\r\ni: not-a-call-id\r\n"
    assert call_id(invite(b"X-Other: 1", body)) is None
    # a header named like a suffix of another ("Xi:") is not the compact form
    assert call_id(invite(b"Xi: nope")) is None
