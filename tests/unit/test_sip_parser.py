"""The sans-IO wire layer: parse_message, StreamFramer, URIs, addresses, Via."""

import pytest

from sipdisp.sip import (
    KEEPALIVE, SipParseError, StreamFramer, make_response, parse_address,
    parse_hostport, parse_message, parse_uri, parse_via, split_commas,
)
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


def raw(lines=None, body=b"", content_length=True, replace=None, extra=()):
    """Build a message from header lines; ``replace`` maps a line prefix to a new line
    (None deletes it)."""
    lines = list(BASE if lines is None else lines)
    for prefix, new in (replace or {}).items():
        lines = [(new if line.startswith(prefix) else line) for line in lines]
        lines = [line for line in lines if line is not None]
    lines.extend(extra)
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def error_of(data, **kwargs):
    """The SipParseError ``parse_message`` raises for ``data``."""
    with pytest.raises(SipParseError) as info:
        parse_message(data, **kwargs)
    return info.value


# -- header names and values -----------------------------------------------------

def test_compact_forms_expand_to_canonical_keys_and_keep_wire_spelling():
    """Compact header names (v, f, t, i, m, l, k, s, c) get canonical keys; the wire name is kept."""
    data = raw([
        "OPTIONS sip:bob@example.com SIP/2.0",
        "v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
        "f: <sip:alice@example.com>;tag=a",
        "t: <sip:bob@example.com>",
        "i: compact@x",
        "CSeq: 2 OPTIONS",
        "m: <sip:alice@192.0.2.1>",
        "k: path",
        "s: hello",
        "c: text/plain",
    ], body=b"hi", content_length=False, extra=["l: 2"])
    msg = parse_message(data)
    keys = [k for k, _, _ in msg.headers]
    assert keys == ["via", "from", "to", "call-id", "cseq", "contact", "supported",
                    "subject", "content-type", "content-length"]
    assert [n for _, n, _ in msg.headers][0] == "v"
    assert msg.call_id == "compact@x"
    assert msg.from_tag == "a"
    assert msg.body == b"hi"


def test_header_names_are_case_insensitive_and_lws_before_colon_is_allowed():
    """`MaX-fOrWaRdS  :` and `cseq:` parse as Max-Forwards and CSeq (RFC 3261 7.3.1)."""
    data = raw(replace={"Max-Forwards": "MaX-fOrWaRdS  : 0068", "CSeq": "cseq:   7   INVITE"})
    msg = parse_message(data)
    assert msg.get("max-forwards") == "0068"
    assert msg.cseq == 7 and msg.cseq_method == "INVITE"


def test_folded_header_lines_are_unfolded_into_one_value():
    """A line starting with SP or HTAB continues the previous header (RFC 3261 7.3.1)."""
    data = raw(replace={"Call-ID": "Subject: first\r\n  second\r\n\tthird\r\nCall-ID: c1@x"})
    msg = parse_message(data)
    assert msg.get("subject") == "first second third"
    assert msg.call_id == "c1@x"


def test_folding_inside_cseq_and_via_values():
    """Folded CSeq and Via (RFC 4475 3.1.1.1 style) still yield their scalar fields."""
    data = raw(replace={"CSeq": "CSeq: 0009\r\n  INVITE",
                        "Via": "Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw"})
    msg = parse_message(data)
    assert msg.cseq == 9 and msg.cseq_method == "INVITE"
    assert msg.via.transport == "UDP" and msg.via.host == "192.0.2.2"
    assert msg.via.branch == "390skdjuw"


def test_folded_line_before_any_header_is_rejected_with_400():
    """A continuation line right after the start line has nothing to continue."""
    data = b"INVITE sip:b@example.com SIP/2.0\r\n folded: x\r\n" + raw()[raw().index(b"\r\n") + 2:]
    exc = error_of(data)
    assert exc.status == 400 and "Folded" in exc.reason


def test_comma_lists_across_lines_are_all_seen():
    """List headers may be split over lines or combined with commas; values() sees every element."""
    data = raw(extra=[
        "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
        "Route: <sip:p3.example.com;lr>",
        "Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKx, SIP/2.0/TCP 192.0.2.10;branch=z9hG4bKy",
    ])
    msg = parse_message(data)
    assert [a.uri.host for a in msg.addresses("route")] == [
        "p1.example.com", "p2.example.com", "p3.example.com"]
    assert [v.host for v in msg.vias()] == ["192.0.2.1", "192.0.2.9", "192.0.2.10"]
    assert len(msg.get_all("route")) == 2


def test_top_via_is_the_first_element_of_a_combined_line():
    """When the first Via line holds several values, the top Via is the first of them."""
    data = raw(replace={"Via": "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, "
                               "SIP/2.0/UDP b.example.com;branch=z9hG4bK2"})
    assert parse_message(data).via.host == "a.example.com"


def test_quoted_strings_with_commas_do_not_split_list_values():
    """A comma inside a quoted display name or inside <...> is not a list separator."""
    value = '"Doe, John" <sip:j@example.com;x=a,b>;q=0.5, <sip:k@example.com>, "a\\",b" <sip:l@x>'
    parts = split_commas(value)
    assert parts == ['"Doe, John" <sip:j@example.com;x=a,b>;q=0.5', "<sip:k@example.com>",
                     '"a\\",b" <sip:l@x>']
    contacts = parse_message(raw(extra=[f"Contact: {value}"])).addresses("contact")
    assert [c.display for c in contacts] == ['"Doe, John"', None, '"a\\",b"']
    assert contacts[0].param("q") == "0.5"


def test_split_commas_keeps_empty_elements_for_the_caller_to_judge():
    """`a,,b` yields an empty middle element instead of silently dropping it."""
    assert split_commas("a,,b") == ["a", "", "b"]
    assert split_commas("<sip:x>,,<sip:y>") == ["<sip:x>", "", "<sip:y>"]


# -- name-addr / addr-spec --------------------------------------------------------

def test_name_addr_separates_uri_params_from_header_params():
    """In <...> form URI parameters stay in the URI and the rest are header parameters."""
    addr = parse_address('"Alice A." <sip:alice@example.com:5062;transport=tcp?X-H=1>;tag=88;q=0.7')
    assert addr.display == '"Alice A."'
    assert addr.uri.user == "alice" and addr.uri.port == 5062
    assert addr.uri.param("transport") == "tcp"
    assert addr.uri.headers == "X-H=1"
    assert addr.tag == "88" and addr.param("q") == "0.7"
    assert str(addr) == '"Alice A." <sip:alice@example.com:5062;transport=tcp?X-H=1>;tag=88;q=0.7'


def test_addr_spec_params_belong_to_the_header():
    """Without <>, everything after the URI's first ';' is a header parameter (RFC 3261 20.10)."""
    addr = parse_address("sip:bob@example.com;tag=xyz;transport=tcp")
    assert addr.uri.params == []
    assert addr.tag == "xyz" and addr.param("transport") == "tcp"
    assert not addr.bracketed


def test_unquoted_display_name_and_missing_space_before_bracket():
    """Token display names and `"name"<uri>` with no LWS parse (RFC 4475 3.1.1.6)."""
    assert parse_address("Bob Smith <sip:bob@example.com>").display == "Bob Smith"
    addr = parse_address('"caller"<sip:caller@example.com>;tag=323')
    assert addr.display == '"caller"' and addr.uri.user == "caller" and addr.tag == "323"


def test_escaped_quotes_in_display_names_and_escapes_in_user_parts():
    """`\\"` inside a quoted display name and %-escapes in the user part are kept and decodable."""
    addr = parse_address('"J Rosenberg \\\\\\"" <sip:jdrosen@example.com>;tag=98')
    assert addr.display == '"J Rosenberg \\\\\\""'
    assert addr.tag == "98"
    uri = parse_uri("sip:sips%3Auser%40example.com@example.net")
    assert uri.user == "sips%3Auser%40example.com"
    assert uri.user_unescaped == "sips:user@example.com"
    assert uri.host == "example.net"
    assert str(uri) == "sip:sips%3Auser%40example.com@example.net"


def test_escaped_nul_in_user_part_is_not_shortened():
    """%00 in a user part survives parsing and serialization (RFC 4475 3.1.1.4)."""
    uri = parse_uri("sip:null-%00-null@example.com")
    assert uri.user == "null-%00-null"
    assert uri.user_unescaped == "null-\x00-null"


@pytest.mark.parametrize("text", [
    '"unterminated <sip:a@example.com>',
    '"name" sip:a@example.com',
    "<sip:a@example.com",
    "<sip:a@example.com> junk",
    "<sip:a@exa mple.com>",
    "Bell, Alexander <sip:a.g.bell@bell-tel.com>",
    "<sip:a@example.com>;;tag=1",
    "",
])
def test_malformed_addresses_raise_400(text):
    """Broken name-addr/addr-spec values raise SipParseError with status 400."""
    with pytest.raises(SipParseError) as info:
        parse_address(text)
    assert info.value.status == 400


# -- URIs and IPv6 ----------------------------------------------------------------

def test_uri_parts_and_verbatim_round_trip():
    """A SIP URI exposes its parts and serializes exactly as received until changed."""
    text = "sips:user:pw@Example.COM:5061;transport=tls;lr?subject=x&priority=urgent"
    uri = parse_uri(text)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips", "user", "pw", "example.com", 5061)
    assert uri.param("lr") == "" and uri.transport == "tls"
    assert uri.headers == "subject=x&priority=urgent"
    assert str(uri) == text
    uri.remove_param("lr")
    assert str(uri) == "sips:user:pw@example.com:5061;transport=tls?subject=x&priority=urgent"


def test_unknown_schemes_parse_as_opaque_uris():
    """Non-SIP schemes parse (so the proxy can answer 416 rather than 400)."""
    uri = parse_uri("tel:+1-201-555-0123")
    assert not uri.is_sip and uri.scheme == "tel" and uri.opaque == "+1-201-555-0123"
    assert str(uri) == "tel:+1-201-555-0123"


@pytest.mark.parametrize("text,host,port", [
    ("sip:[2001:db8::10]", "2001:db8::10", None),
    ("sip:user@[2001:db8::10]:5070", "2001:db8::10", 5070),
    ("sip:[2001:db8::10:5070]", "2001:db8::10:5070", None),     # RFC 5118 4.3
    ("sip:[2001:db8:::192.0.2.1]", "2001:db8:::192.0.2.1", None),  # RFC 5118 4.10
    ("sip:[::ffff:192.0.2.10]:19823", "::ffff:192.0.2.10", 19823),
])
def test_ipv6_references(text, host, port):
    """IPv6 references lose their brackets in ``host`` and get them back when serialized."""
    uri = parse_uri(text)
    assert (uri.host, uri.port) == (host, port)
    uri.set_param("lr")
    assert str(uri).split(";")[0] == text


@pytest.mark.parametrize("text", [
    "sip:user@2001:db8::10",      # RFC 5118 4.2: no brackets
    "sip:[2001:db8::10",
    "sip:[2001:db8::10]x",
    "sip:[zz::1]",
    "sip:host:99999",
    "sip:host:5x",
    "sip:ho st",
    "sip:@host",
    "sip:",
    "<sip:user@example.com>",     # RFC 4475 3.1.2.7
    "9ip:host",
])
def test_malformed_uris_raise_400(text):
    """Malformed URIs (including unbracketed IPv6 and bad ports) raise 400."""
    with pytest.raises(SipParseError) as info:
        parse_uri(text)
    assert info.value.status == 400


def test_parse_hostport_lowercases_and_keeps_port():
    """``host[:port]`` parsing lower-cases names and returns the port as an int."""
    assert parse_hostport("Proxy.Example.COM:5080") == ("proxy.example.com", 5080)
    assert parse_hostport("[2001:DB8::1]") == ("2001:db8::1", None)


# -- Via -----------------------------------------------------------------------------

def test_via_branch_received_and_rport():
    """Via exposes branch, received and rport; the response goes to received:rport (RFC 3581)."""
    via = parse_via("SIP/2.0/UDP 10.0.0.1:5070;rport=34567;branch=z9hG4bK77;received=203.0.113.9")
    assert via.branch == "z9hG4bK77"
    assert via.param("received") == "203.0.113.9"
    assert via.response_address() == ("203.0.113.9", 34567)
    bare = parse_via("SIP/2.0/UDP 10.0.0.1;rport;branch=z9hG4bK78")
    assert bare.param("rport") == ""
    assert bare.response_address() == ("10.0.0.1", 5060)
    assert parse_via("SIP/2.0/TLS example.com;branch=z9hG4bK9").sent_by == ("example.com", 5061)


def test_via_set_param_keeps_order_and_reserializes():
    """Adding received/rport keeps other parameters in place."""
    via = parse_via("SIP/2.0/UDP 10.0.0.1:5070;rport;branch=z9hG4bK1")
    via.set_param("received", "192.0.2.7")
    via.set_param("rport", "4000")
    assert str(via) == "SIP/2.0/UDP 10.0.0.1:5070;rport=4000;branch=z9hG4bK1;received=192.0.2.7"


def test_via_ipv6_received_with_or_without_brackets():
    """RFC 5118 4.5: received may carry an IPv6 address with or without [ ]."""
    with_b = parse_via("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bK1")
    without = parse_via("SIP/2.0/UDP [2001:db8::9:1]:5070;received=2001:db8::9:255;branch=z9hG4bK1")
    assert with_b.response_address() == ("2001:db8::9:255", 5060)
    assert without.response_address() == ("2001:db8::9:255", 5070)
    assert with_b.host == "2001:db8::9:1"


def test_via_lws_around_separators():
    """LWS around '/' and ':' in Via is legal (RFC 4475 3.1.1.1)."""
    via = parse_via("SIP / 2.0 / UDP   192.0.2.2 : 5061 ;branch=z9hG4bKx")
    assert (via.transport, via.host, via.port, via.branch) == ("UDP", "192.0.2.2", 5061, "z9hG4bKx")


@pytest.mark.parametrize("text", [
    "SIP/2.0/UDP 192.0.2.15;;,;,,",
    "SIP/3.0/UDP host",
    "SIP/2.0/UDP",
    "SIP/2.0/UDP host;branch=",
    "SIP/2.0/U@P host",
])
def test_malformed_via_raises_400(text):
    """Broken Via values raise 400."""
    with pytest.raises(SipParseError) as info:
        parse_via(text)
    assert info.value.status == 400


def test_malformed_top_via_error_carries_the_message():
    """A request whose top Via is malformed can still be answered: the error carries it."""
    exc = error_of(raw(replace={"Via": "Via: SIP/2.0/UDP 192.0.2.15;;,;,,"}))
    assert exc.status == 400
    assert exc.message is not None and exc.message.call_id == "c1@192.0.2.1"


# -- scalar fields -----------------------------------------------------------------

@pytest.mark.parametrize("cseq,ok", [
    ("0 INVITE", True),
    (f"{2**32 - 1} INVITE", True),
    (f"{2**32} INVITE", False),       # RFC 4475 3.1.2.4
    ("-1 INVITE", False),
    ("1", False),
    ("INVITE 1", False),
    ("1 INVITE extra", False),
    ("² INVITE", False),              # a Unicode digit int() rejects
    ("1 OPTIONS", False),             # method mismatch (RFC 4475 3.1.2.17)
])
def test_cseq_bounds_and_shape(cseq, ok):
    """CSeq must be a 32-bit number and the request's method; anything else is 400."""
    data = raw(replace={"CSeq": f"CSeq: {cseq}"})
    if ok:
        assert parse_message(data).cseq == int(cseq.split()[0])
    else:
        exc = error_of(data)
        assert exc.status == 400 and exc.message is not None


@pytest.mark.parametrize("value,ok", [
    ("0", True), ("70", True), ("255", True), ("0068", True),
    ("256", False), ("-1", False), ("abc", False), ("", False), ("²", False), ("٣", False),
    ("300000000000000000000000000000000000000000000000000", False),
])
def test_max_forwards_bounds(value, ok):
    """Max-Forwards is 0-255 in ASCII digits; other values are 400, never an exception."""
    data = raw(replace={"Max-Forwards": f"Max-Forwards: {value}"})
    if ok:
        assert parse_message(data).get("max-forwards") == value
    else:
        exc = error_of(data)
        assert exc.status == 400 and "Max-Forwards" in exc.reason


def test_single_value_headers_may_not_repeat():
    """Two Call-ID, From, To, CSeq or Max-Forwards lines are a 400 (RFC 4475 3.3.8)."""
    for line in ("Call-ID: other@x", "From: <sip:x@y>;tag=2", "To: <sip:z@y>",
                 "CSeq: 1 INVITE", "Max-Forwards: 5"):
        exc = error_of(raw(extra=[line]))
        assert exc.status == 400 and exc.reason.startswith("Multiple")


@pytest.mark.parametrize("missing", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_headers_are_400_with_the_partial_message(missing):
    """Each mandatory header's absence is a 400 that still carries the message."""
    exc = error_of(raw(replace={missing: None}))
    assert exc.status == 400 and missing in exc.reason
    assert exc.message is not None and exc.message.is_request


def test_from_and_to_tags_are_extracted_with_lws():
    """Tags are found with or without LWS around ';' and '=' and in addr-spec form."""
    msg = parse_message(raw(replace={
        "From": "From: sip:alice@example.com ;  tag  =  abc",
        "To": 'To: "Bob" <sip:bob@example.com;tag=uri-param-not-a-tag>;tag=to1'}))
    assert msg.from_tag == "abc"
    assert msg.to_tag == "to1"


# -- start line ---------------------------------------------------------------------

def test_request_line_and_unknown_method_with_unusual_characters():
    """Any token is a method (RFC 4475 3.1.1.2)."""
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    msg = parse_message(raw([f"{method} sip:bob@example.com SIP/2.0"] + BASE[1:5]
                            + [f"CSeq: 1 {method}"]))
    assert msg.method == method and msg.cseq_method == method


@pytest.mark.parametrize("line,status", [
    ("INVITE sip:bob@example.com SIP/7.0", 505),
    ("INVITE sip:bob@example.com sip/2.1", 505),
    ("INVITE  sip:bob@example.com SIP/2.0", 400),
    ("INVITE sip:bob@example.com SIP/2.0 ", 400),
    ("INVITE <sip:bob@example.com> SIP/2.0", 400),
    ("INVITE sip:bob@example.com;x=a b SIP/2.0", 400),
    ("INVITE sip:bob@example.com?Route=%3Csip:x%3E SIP/2.0", 400),
    ("INVITE sip:bob@example.com", 400),
    ("INV(TE sip:bob@example.com SIP/2.0", 400),
    (" sip:bob@example.com SIP/2.0", 400),
])
def test_bad_request_lines_are_answerable(line, status):
    """A bad Request-Line raises its status and still carries the headers to answer with."""
    exc = error_of(raw([line] + BASE[1:]))
    assert exc.status == status
    partial = exc.message
    assert partial is not None and partial.is_request
    assert partial.get("call-id") == "c1@192.0.2.1" and partial.has("via")


@pytest.mark.parametrize("line", ["SIP/2.0 1000 Big", "SIP/2.0 099 Low", "SIP/2.0 2x0 X",
                                  "SIP/3.0 200 OK", "SIP/2.0"])
def test_bad_status_lines_carry_nothing_to_answer(line):
    """Responses are never answered, so a bad Status-Line error has no message."""
    data = raw([line] + BASE[1:])
    exc = error_of(data)
    assert exc.message is None
    assert exc.status in (400, 505)


def test_response_reason_phrases_may_be_empty_or_unusual():
    """An empty or UTF-8 reason phrase parses (RFC 4475 3.1.1.12-13)."""
    lines = BASE[1:]
    assert parse_message(raw(["SIP/2.0 200"] + lines)).reason == ""
    assert parse_message(raw(["SIP/2.0 200 "] + lines)).reason == ""
    reason = "= 2**3 * 5**2 но сто девяносто девять - простое"
    resp = parse_message(raw([f"SIP/2.0 200 {reason}"] + lines))
    assert (resp.status, resp.reason) == (200, reason)


def test_leading_crlfs_before_the_start_line_are_ignored():
    """CRLFs before the start line are skipped (RFC 3261 7.5)."""
    assert parse_message(b"\r\n\r\n" + raw()).method == "INVITE"


def test_bare_lf_line_endings_are_tolerated():
    """Messages with bare LF line ends (old UAs, RFC 5118's archive) parse."""
    data = raw().replace(b"\r\n", b"\n")
    msg = parse_message(data)
    assert msg.call_id == "c1@192.0.2.1" and msg.via.branch == "z9hG4bKabc"


def test_unterminated_header_section_is_400_with_the_headers():
    """A datagram without the empty line after the headers is answered 400, not dropped."""
    data = raw(content_length=False)[:-2]
    exc = error_of(data)
    assert exc.status == 400 and exc.message.get("call-id") == "c1@192.0.2.1"


def test_header_line_without_colon_is_400():
    """A header line with no colon is malformed."""
    assert error_of(raw(extra=["NoColonHere"])).status == 400
    assert error_of(raw(extra=["Bad Name: x"])).status == 400


# -- Content-Length and framing ---------------------------------------------------------

def test_udp_without_content_length_takes_the_rest_of_the_datagram():
    """Over UDP a missing Content-Length means "to the end of the datagram" (RFC 3261 18.3)."""
    msg = parse_message(raw(content_length=False) + b"v=0\r\n", datagram=True)
    assert msg.body == b"v=0\r\n"


def test_udp_ignores_octets_past_content_length():
    """Octets after Content-Length in a datagram are ignored (RFC 4475 3.1.1.8)."""
    msg = parse_message(raw(body=b"abc") + b"INVITE junk", datagram=True)
    assert msg.body == b"abc"


def test_stream_message_without_content_length_is_an_error():
    """On a stream a message without Content-Length cannot be framed: 400."""
    exc = error_of(raw(content_length=False), datagram=False)
    assert exc.status == 400 and exc.reason == "Missing Content-Length"
    with pytest.raises(SipParseError) as info:
        StreamFramer().feed(raw(content_length=False))
    assert info.value.reason == "Missing Content-Length"
    assert info.value.message.call_id == "c1@192.0.2.1"


@pytest.mark.parametrize("value,reason", [
    ("-999", "Malformed Content-Length"),
    ("abc", "Malformed Content-Length"),
    ("٣", "Malformed Content-Length"),
    ("50", "Content-Length larger than message"),
])
def test_bad_content_length_values(value, reason):
    """Negative, non-numeric or too-large Content-Length values are 400 with the message."""
    exc = error_of(raw(content_length=False, extra=[f"Content-Length: {value}"], body=b"x"))
    assert (exc.status, exc.reason) == (400, reason)
    assert exc.message is not None


def test_multiple_content_length_values_are_400():
    """Two Content-Length headers are an invalid length (RFC 4475 3.3.9)."""
    exc = error_of(raw(extra=["l: 0"]))
    assert exc.status == 400
    with pytest.raises(SipParseError):
        StreamFramer().feed(raw(extra=["l: 0"]))


def test_oversized_message_is_513_and_answerable():
    """Beyond max_size the answer is 513 Message Too Large, with the headers to answer with."""
    data = raw(body=b"x" * 2000)
    exc = error_of(data, max_size=1000)
    assert (exc.status, exc.reason) == (513, "Message Too Large")
    assert exc.message is not None and exc.message.get("call-id") == "c1@192.0.2.1"
    assert parse_message(data, max_size=len(data)).body == b"x" * 2000


def test_stream_framer_rejects_oversized_messages_with_513():
    """The framer refuses a Content-Length or header section beyond max_size (513)."""
    with pytest.raises(SipParseError) as info:
        StreamFramer(max_size=500).feed(raw(body=b"x" * 600))
    assert info.value.status == 513
    framer = StreamFramer(max_size=500)
    with pytest.raises(SipParseError) as info:
        framer.feed(b"INVITE sip:x SIP/2.0\r\nX: " + b"y" * 600)
    assert info.value.status == 513


def test_errors_carry_status_reason_and_readable_text():
    """SipParseError exposes status and reason, and prints as "status reason"."""
    exc = error_of(raw(["INVITE sip:bob@example.com SIP/7.0"] + BASE[1:]))
    assert (exc.status, exc.reason) == (505, "Version Not Supported")
    assert str(exc) == "505 Version Not Supported"
    assert SipParseError("x").status == 400


# -- StreamFramer ----------------------------------------------------------------------

def feed_each(framer, data):
    out = []
    for i in range(len(data)):
        out.extend(framer.feed(data[i:i + 1]))
    return out


def test_framer_cuts_a_stream_into_messages_however_it_is_segmented():
    """Whole, byte by byte, or in odd chunks, the same frames come out."""
    m1 = raw(body=b"hello")
    m2 = sipmsg.request("BYE", cseq=2)
    stream = m1 + b"\r\n" + m2 + b"\r\n\r\n" + m1
    expected = [m1, m2, KEEPALIVE, m1]
    assert StreamFramer().feed(stream) == expected
    assert feed_each(StreamFramer(), stream) == expected
    for size in (2, 3, 7, 64):
        framer = StreamFramer()
        got = []
        for i in range(0, len(stream), size):
            got.extend(framer.feed(stream[i:i + size]))
        assert got == expected, size
        assert framer.buffered == 0


def test_keepalive_ping_is_seen_when_it_arrives_byte_by_byte():
    """A CRLFCRLF ping split over four segments is still one KEEPALIVE (RFC 5626 4.4.1)."""
    framer = StreamFramer()
    assert feed_each(framer, b"\r\n\r\n") == [KEEPALIVE]
    assert framer.buffered == 0
    assert feed_each(StreamFramer(), b"\r\n\r\n\r\n\r\n") == [KEEPALIVE, KEEPALIVE]


def test_single_crlf_waits_and_stray_line_ends_are_skipped():
    """One CRLF may become a ping, so it waits; stray CR/LF before a message are dropped."""
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == [] and framer.buffered == 2
    assert framer.feed(b"\r\n") == [KEEPALIVE]
    msg = raw()
    assert StreamFramer().feed(b"\n\r\r\n" + msg) == [msg]


def test_framer_returns_complete_frames_before_raising_on_the_next_feed():
    """A good message followed by an unframeable one in one segment is delivered, then the
    error is raised by the next feed, just as when they arrive separately."""
    good = raw()
    bad = raw(content_length=False)
    framer = StreamFramer()
    assert framer.feed(good + bad) == [good]
    with pytest.raises(SipParseError) as info:
        framer.feed(b"")
    assert info.value.reason == "Missing Content-Length"
    separately = StreamFramer()
    assert separately.feed(good) == [good]
    with pytest.raises(SipParseError):
        separately.feed(bad)


def test_framer_waits_for_the_body():
    """Until Content-Length octets of body have arrived nothing is returned."""
    msg = raw(body=b"0123456789")
    framer = StreamFramer()
    assert framer.feed(msg[:-1]) == []
    assert framer.buffered == len(msg) - 1
    assert framer.feed(msg[-1:]) == [msg]


# -- serialization and make_response ---------------------------------------------------

def test_to_bytes_round_trips_and_rewrites_content_length():
    """Serializing keeps start line, header order and spelling, and fixes Content-Length."""
    data = raw(body=b"abc")
    msg = parse_message(data)
    assert msg.to_bytes() == data
    msg.body = b"abcdef"
    again = parse_message(msg.to_bytes())
    assert again.body == b"abcdef" and again.get("content-length") == "6"


def test_to_bytes_adds_missing_content_length():
    """A message parsed without Content-Length gets one when serialized."""
    msg = parse_message(raw(content_length=False) + b"xy")
    out = msg.to_bytes()
    assert out.endswith(b"Content-Length: 2\r\n\r\nxy")
    assert parse_message(out, datagram=False).body == b"xy"


def test_header_editing_helpers():
    """prepend, pop_first, set and remove edit list headers in place."""
    msg = parse_message(raw(extra=["Route: <sip:a;lr>, <sip:b;lr>", "Route: <sip:c;lr>"]))
    assert msg.pop_first("route") == "<sip:a;lr>"
    assert msg.values("route") == ["<sip:b;lr>", "<sip:c;lr>"]
    msg.prepend("via", "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKnew")
    assert msg.values("via")[0].endswith("z9hG4bKnew")
    assert [k for k, _, _ in msg.headers][0] == "via"
    msg.set("max-forwards", "69")
    assert msg.get_all("max-forwards") == ["69"]
    assert msg.remove("route") == 2 and not msg.has("route")
    copy = msg.copy()
    copy.add("subject", "only in the copy")
    assert not msg.has("subject")


def test_make_response_copies_dialog_headers_and_adds_a_to_tag():
    """Responses copy Via, From, To, Call-ID and CSeq; To gets a tag except on 100."""
    req = parse_message(raw(extra=["Record-Route: <sip:p.example.com;lr>"]))
    trying = make_response(req, 100, "Trying", to_tag="t1")
    assert trying.to_tag is None and ";tag=" not in trying.get("to")
    ok = make_response(req, 200, "OK", to_tag="t1", record_route=True)
    assert ok.to_tag == "t1" and ok.get("to").endswith(";tag=t1")
    assert ok.get("record-route") == "<sip:p.example.com;lr>"
    assert [k for k, _, _ in ok.headers] == ["via", "from", "to", "call-id", "cseq",
                                            "record-route"]
    parsed = parse_message(ok.to_bytes())
    assert parsed.status == 200 and parsed.cseq_method == "INVITE"
    in_dialog = parse_message(raw(replace={"To": "To: <sip:bob@example.com>;tag=old"}))
    assert make_response(in_dialog, 200, "OK", to_tag="new").to_tag == "old"
