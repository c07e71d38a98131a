"""Strict where RFC 3261's grammar is strict: tokens, hosts, ports, scalar fields and
versions the proxy reads are refused with 400 (never forwarded), and the Via and
Route count limits (sip.max_via_headers, sip.max_route_headers)."""

import pytest

from sipdisp.proxy import Listener, ProxyCore, Target
from sipdisp.sip import SipParseError, StreamFramer, parse_hostport, parse_message
from tests.support import sipmsg

BASE = [
    "INVITE sip:bob@example.com SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKabc",
    "From: <sip:alice@example.com>;tag=f1",
    "To: <sip:bob@example.com>",
    "Call-ID: c1@192.0.2.1",
    "CSeq: 1 INVITE",
    "Max-Forwards: 70",
]


def build(replace=None, extra=(), start=None):
    """A message from BASE as bytes; ``replace`` maps a line prefix to the new line
    (str, or bytes for raw octets), ``start`` replaces the start line."""
    lines = [line.encode() for line in BASE]
    if start is not None:
        lines[0] = start if isinstance(start, bytes) else start.encode()
    for prefix, new in (replace or {}).items():
        new = new if isinstance(new, bytes) else new.encode()
        lines = [new if line.startswith(prefix.encode()) else line for line in lines]
    lines.extend(e if isinstance(e, bytes) else e.encode() for e in extra)
    lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def refused(data, **kwargs):
    """The SipParseError parse_message raises for ``data`` (the test fails if none)."""
    with pytest.raises(SipParseError) as info:
        parse_message(data, **kwargs)
    return info.value


BAD = {
    "NUL in Call-ID": {"Call-ID": b"Call-ID: c1\x00x@host"},
    "bare CR in Call-ID": {"Call-ID": b"Call-ID: c1\rx@host"},
    "raw non-ASCII in Call-ID": {"Call-ID": "Call-ID: c1é@host"},
    "invalid UTF-8 in Call-ID": {"Call-ID": b"Call-ID: c1\xff\xfe@host"},
    "space in Call-ID": {"Call-ID": "Call-ID: c1 x@host"},
    "NUL in Via branch": {"Via": b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK\x00a"},
    "non-ASCII in Via branch": {"Via": "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKä"},
    "invalid UTF-8 in Via branch": {"Via": b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK\xc3"},
    "separator in Via branch": {"Via": 'Via: SIP/2.0/UDP 192.0.2.1;branch="z9hG4bK a"'},
    "non-ASCII in From tag": {"From": "From: <sip:alice@example.com>;tag=fé"},
    "invalid UTF-8 in To tag": {"To": b"To: <sip:bob@example.com>;tag=\xe9t"},
    "quoted tag": {"From": 'From: <sip:alice@example.com>;tag="f1"'},
    "non-ASCII letter in Via transport": {"Via": "Via: SIP/2.0/UDṖ 192.0.2.1;branch=z9hG4bK1"},
    "non-ASCII header name": {"Max-Forwards": "Max-Förwards: 70"},
    "raw NUL in a header value": {"Max-Forwards": b"Subject: a\x00b"},
    "bare CR in a header value": {"Max-Forwards": b"Subject: a\rb"},
    "IPv4 octet above 255 in Via": {"Via": "Via: SIP/2.0/UDP 192.0.2.256;branch=z9hG4bK1"},
    "three-octet IPv4 in Via": {"Via": "Via: SIP/2.0/UDP 192.0.2;branch=z9hG4bK1"},
    "five-octet IPv4 in Via": {"Via": "Via: SIP/2.0/UDP 192.0.2.1.7;branch=z9hG4bK1"},
    "empty label in Via host": {"Via": "Via: SIP/2.0/UDP a..example.com;branch=z9hG4bK1"},
    "label starting with a dash": {"Via": "Via: SIP/2.0/UDP -a.example.com;branch=z9hG4bK1"},
    "label ending with a dash": {"Via": "Via: SIP/2.0/UDP a-.example.com;branch=z9hG4bK1"},
    "space inside the Via port": {"Via": "Via: SIP/2.0/UDP 192.0.2.1:50 70;branch=z9hG4bK1"},
    "rport that is no port": {"Via": "Via: SIP/2.0/UDP 192.0.2.1;rport=99999;branch=z9hG4bK1"},
    "Content-Length of 2**31": {"Content-Length": "Content-Length: 2147483648"},
    "Content-Length of 60 digits": {"Content-Length": "Content-Length: " + "9" * 60},
    "Content-Length of 5000 digits": {"Content-Length": "Content-Length: " + "9" * 5000},
    "Max-Forwards of 5000 digits": {"Max-Forwards": "Max-Forwards: " + "9" * 5000},
    "CSeq number of 5000 digits": {"CSeq": "CSeq: " + "1" * 5000 + " INVITE"},
    "CSeq method missing": {"CSeq": "CSeq: 1"},
    "CSeq method overlong": {"CSeq": "CSeq: 1 " + "I" * 65},
    "CSeq method differs": {"CSeq": "CSeq: 1 OPTIONS"},
    "CSeq method in another case": {"CSeq": "CSeq: 1 invite"},
}


@pytest.mark.parametrize("replace", BAD.values(), ids=BAD.keys())
def test_grammar_violations_are_refused_with_400(replace):
    """Each token, host, port or scalar that breaks RFC 3261's grammar gives 400."""
    line = dict(replace)
    if "Content-Length" in line:
        # build() appends its own Content-Length: 0; swap that one
        data = build().replace(b"Content-Length: 0", line.pop("Content-Length").encode())
    else:
        data = build(line)
    assert refused(data).status == 400


@pytest.mark.parametrize("start, status", [
    ("INVITE sip:bob@example.com SIP/3.0", 505),
    ("INVITE sip:bob@example.com sip/2.1", 505),
    ("INVITE sip:bob@example.com SIP/2.0x", 400),
    ("INVITE sip:bob@example.com SIP/two", 400),
    ("INVITE sip:bob@example.com SIP/", 400),
    ("INVITE sip:bob@example.com HTTP/1.1", 400),
    (b"INVITE sip:bob@example.com SIP/2.0\x00", 400),
    ("INVITE sip:böb@example.com SIP/2.0", 400),
    (b"INVITE sip:b\x01ob@example.com SIP/2.0", 400),
    ("INVITE sip:bob@10.0.0.300 SIP/2.0", 400),
    ("INVITE sip:bob@example..com SIP/2.0", 400),
    ("INVITE sip:bob@example.com:50 60 SIP/2.0", 400),
    ("INVÉTE sip:bob@example.com SIP/2.0", 400),
    ("I" * 65 + " sip:bob@example.com SIP/2.0", 400),
])
def test_broken_request_lines_are_refused(start, status):
    """A well-formed other SIP version gets 505; a broken version, a Request-URI with raw
    controls or non-ASCII, a bad host or port, or a bad method gets 400."""
    assert refused(build(start=start)).status == status


def test_status_line_with_a_broken_version_is_refused():
    """A response whose version is not SIP-Version grammar is refused (and so dropped)."""
    data = build(start="SIP/2.0x 200 OK")
    assert refused(data).status == 400


@pytest.mark.parametrize("replace", [
    {"Via": "Via: SIP/2.0/UDP 192.0.2.1 : 5070;branch=z9hG4bK1"},  # LWS around the colon
    {"Via": "Via: SIP/2.0/UDP host-1.example.com.;branch=z9hG4bK1"},  # trailing dot
    {"Via": "Via: SIP/2.0/UDP 3com.example.com;branch=z9hG4bK1"},  # label starts with digit
    {"Via": "Via: SIP/2.0/UDP my_host;branch=z9hG4bK1"},  # "_" seen in the wild
    {"Via": "Via: SIP/2.0/UDP 192.0.2.1;rport;branch=z9hG4bK1"},  # rport without value
    {"Call-ID": 'Call-ID: a=b#c"d<e>@[host]'},  # visible ASCII only
    {"From": 'From: "Al\\\x00ice" <sip:alice@example.com>;tag=f1'},  # NUL as quoted-pair
    {"From": "From: \"Ålice\" <sip:alice@example.com>;tag=f1"},  # UTF-8 display name
    {"Max-Forwards": "Max-Forwards: 0068"},  # leading zeros: 1*DIGIT
    {"CSeq": "CSeq: 4294967295 INVITE"},  # the largest CSeq number
])
def test_what_the_grammar_allows_still_parses(replace):
    """Liberal where RFC 3261 and RFC 4475 are: LWS around the sent-by colon, a trailing
    dot, digit-first labels, an escaped NUL in a quoted string, UTF-8 display names."""
    msg = parse_message(build(replace))
    assert msg.call_id and msg.via.host


def test_content_length_just_below_the_cap_is_only_too_long_for_the_message():
    """2**31-1 is a number the parser accepts; the datagram simply holds no such body."""
    data = build().replace(b"Content-Length: 0", b"Content-Length: 2147483647")
    assert refused(data).reason == "Content-Length larger than message"


@pytest.mark.parametrize("length, reason", [
    (b"2147483648", "Content-Length out of range"),
    (b"9" * 5000, "Content-Length out of range"),
    (b"2000000000", "Message Too Large"),
])
def test_stream_framer_refuses_absurd_content_lengths_at_once(length, reason):
    """On a stream a Content-Length of 2**31 or dozens of digits is refused as soon as
    the header section is in, never buffered for."""
    framer = StreamFramer()
    with pytest.raises(SipParseError) as info:
        framer.feed(build().replace(b"Content-Length: 0", b"Content-Length: " + length))
    assert info.value.reason == reason


# -- Via and Route count limits -------------------------------------------------------

def vias(n, per_line=1):
    """``n`` Via values, ``per_line`` to a header line."""
    values = [f"SIP/2.0/UDP 192.0.2.{i % 250 + 1};branch=z9hG4bK{i}" for i in range(n)]
    return ["Via: " + ", ".join(values[i:i + per_line]) for i in range(0, n, per_line)]


@pytest.mark.parametrize("per_line", [1, 10])
def test_more_vias_than_the_limit_are_refused_naming_the_key(per_line):
    """71 Via values (as lines or comma lists) break sip.max_via_headers = 70: 400."""
    lines = BASE[:1] + vias(71, per_line) + BASE[2:]
    data = ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
    exc = refused(data, max_via=70)
    assert (exc.status, exc.limit) == (400, "sip.max_via_headers")
    assert "71 > 70" in exc.reason
    assert exc.message is not None and exc.message.via.branch == "z9hG4bK0"


def test_vias_at_the_limit_and_quoted_commas_are_accepted():
    """70 Vias pass; a comma inside a quoted Via parameter is not counted as a value."""
    lines = BASE[:1] + vias(69) + ['Via: SIP/2.0/UDP 192.0.2.9;x="a,b";branch=z9hG4bKq'] + BASE[2:]
    data = ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
    assert len(parse_message(data, max_via=70).values("via")) == 70


def test_more_routes_than_the_limit_are_refused_naming_the_key():
    """31 Route values break sip.max_route_headers = 30; 30 pass."""
    routes = [f"<sip:10.0.0.{i}:5060;lr>" for i in range(1, 32)]
    ok = build(extra=["Route: " + ", ".join(routes[:30])])
    assert len(parse_message(ok, max_route=30).values("route")) == 30
    exc = refused(build(extra=["Route: " + ", ".join(routes)]), max_route=30)
    assert (exc.status, exc.limit) == (400, "sip.max_route_headers")


def test_the_core_answers_400_counts_and_logs_once_and_never_forwards():
    """Over the core, 300 Vias get a stateless 400, the refusal is counted per key and
    logged naming the key (rate-limited), and the next good request is still forwarded."""
    from twisted.logger import formatEvent, globalLogPublisher
    logged = []

    def observe(event):
        text = formatEvent(event)
        if "sip.max_via_headers" in text:
            logged.append(text)
    listener = Listener("udp0", "udp", "127.0.0.1", 5060)
    forwarded = []

    def route(ctx):
        forwarded.append(ctx.request.method)
        ctx.set_dst("sip:127.0.0.1:5080")
        ctx.t_relay()

    core = ProxyCore([listener], route, max_via_headers=70, max_route_headers=30)
    source = Target("udp", "198.51.100.7", 5062, None, listener)
    lines = BASE[:1] + vias(300) + BASE[2:]
    data = ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
    globalLogPublisher.addObserver(observe)
    try:
        for _ in range(200):
            out = core.receive(data, source, 0.0)
            assert [d.split(b"\r\n", 1)[0] for d, _ in out] == [
                b"SIP/2.0 400 Too many Via headers (300 > 70)"]
    finally:
        globalLogPublisher.removeObserver(observe)
    assert core.stats["refused_max_via_headers"] == 200
    assert logged and "sip.max_via_headers reached" in logged[0] and len(logged) <= 20
    assert forwarded == []
    good = sipmsg.request("INVITE", "sip:carol@127.0.0.1:5060", via_host="198.51.100.7",
                          via_port=5062)
    core.receive(good, source, 0.1)
    assert forwarded == ["INVITE"]


def test_the_limits_come_from_the_config_with_sane_defaults():
    """sip.max_via_headers and sip.max_route_headers default to 70 and 30."""
    from sipdisp.sip.settings import SIP
    keys = {name: key.default for name, key in SIP.children.items()}
    assert (keys["max_via_headers"], keys["max_route_headers"]) == (70, 30)


@pytest.mark.parametrize("host", ["example.com", "a-b.c", "1.2.3.4", "255.255.255.255",
                                  "x.y.", "[2001:db8::1]", "[::ffff:192.0.2.1]"])
def test_hosts_the_grammar_allows(host):
    """Names with inner dashes, a trailing dot, IPv4 up to 255 and IPv6 references parse."""
    assert parse_hostport(host + ":5060")[1] == 5060
