"""Property tests of the parser and the stream framer: random bytes and mutated valid
messages only ever raise the parser's own SipParseError, and whatever parses
serialises to bytes that parse back to the same message. Inputs that crashed the
parser are kept as regression cases (CRASHES); the atheris run (`make fuzz`,
tests/fuzz/fuzz_parser.py) adds any it finds there."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipdisp.sip import KEEPALIVE, SipParseError, StreamFramer, parse_message
from tests.support import sipmsg

TORTURE = Path(__file__).resolve().parents[1] / "data" / "sip-torture"

#: valid seeds: the RFC 4475 and RFC 5118 messages the parser accepts, and our own INVITE
SEEDS = [sipmsg.request("INVITE", "sip:carol@127.0.0.1:5060")] + [
    path.read_bytes() for path in sorted(TORTURE.glob("rfc*/*.dat"))
    if len(path.read_bytes()) < 4000]

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: octets that matter to the grammar, so that mutations hit separators often
INTERESTING = b"\r\n \t:;,=<>\"@[]./\\\x00\x80\xff%?0123456789"


def parse_or_error(data, **kwargs):
    """The parsed message, or None when parse_message raised SipParseError; any other
    exception propagates and fails the test."""
    try:
        return parse_message(data, **kwargs)
    except SipParseError:
        return None


@st.composite
def mutated(draw):
    """A valid seed with a few byte-level edits: replace, insert, delete or duplicate."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(("replace", "insert", "delete", "repeat")))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        octet = draw(st.one_of(st.sampled_from(INTERESTING), st.integers(0, 255)))
        if kind == "replace" and data:
            data[pos] = octet
        elif kind == "insert":
            data[pos:pos] = bytes([octet]) * draw(st.integers(1, 40))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 20))]
        else:
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 200))]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_only_raise_sip_parse_error(data):
    """Random octets either parse or raise SipParseError, as datagram and as frame."""
    parse_or_error(data)
    parse_or_error(data, datagram=False)


@FUZZ
@given(mutated())
def test_mutated_messages_only_raise_sip_parse_error_and_round_trip(data):
    """A mutated valid message parses or raises SipParseError; when it parses, its
    serialisation parses to the same start line, headers and body, and serialises to
    the same bytes again."""
    msg = parse_or_error(data)
    if msg is None:
        return
    wire = msg.to_bytes()
    again = parse_message(wire)
    assert again.start_line() == msg.start_line()
    assert [h for h in again.headers if h[0] != "content-length"] == [
        h for h in msg.headers if h[0] != "content-length"]
    assert again.body == msg.body
    assert again.to_bytes() == wire


def frame_all(chunks):
    """Frames and the error (status, reason) from feeding ``chunks`` then b""."""
    framer = StreamFramer()
    frames = []
    try:
        for chunk in list(chunks) + [b""]:
            frames.extend(framer.feed(chunk))
    except SipParseError as exc:
        return frames, (exc.status, exc.reason)
    return frames, None


@FUZZ
@given(st.lists(st.one_of(mutated(), st.binary(max_size=300)), min_size=1, max_size=3),
       st.lists(st.integers(1, 400), min_size=1, max_size=20))
def test_framer_raises_only_its_error_and_ignores_segmentation(messages, cuts):
    """A stream of mutated messages and junk, cut anywhere, gives the frames and error it
    gives whole, frames parse or raise SipParseError, and nothing else is raised."""
    stream = b"".join(messages)
    chunks, pos = [], 0
    for size in cuts:
        chunks.append(stream[pos:pos + size])
        pos += size
    chunks.append(stream[pos:])
    whole = frame_all([stream])
    assert frame_all(chunks) == whole
    for f in whole[0]:
        if f is not KEEPALIVE:
            parse_or_error(f, datagram=False)


# -- inputs that once crashed the parser, kept as regression cases ---------------------

BASE = (b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: x\r\n"
        b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n")

CRASHES = {
    # int() refuses strings of more than 4,300 digits with ValueError, which escaped
    # the parser (and the core's `except SipParseError`)
    "Max-Forwards of 5000 digits": BASE.replace(b"70", b"7" * 5000) + b"Content-Length: 0\r\n\r\n",
    "CSeq of 5000 digits": BASE.replace(b"CSeq: 1", b"CSeq: " + b"1" * 5000)
    + b"Content-Length: 0\r\n\r\n",
    "Content-Length of 5000 digits": BASE + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n",
    # rport=abc made Via.response_address() raise ValueError when answering
    "Via rport not a number": BASE.replace(b";branch", b";rport=abc;branch")
    + b"Content-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("data", CRASHES.values(), ids=CRASHES.keys())
def test_fuzzing_crashes_are_refused_with_400(data):
    """Each input that once raised something other than SipParseError now gets 400 (the
    20-second `make fuzz` run, 77,000 inputs, found no other)."""
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == 400
    framer = StreamFramer()
    try:
        for f in framer.feed(data):
            parse_or_error(f, datagram=False)
    except SipParseError:
        pass
