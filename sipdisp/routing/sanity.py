"""``sanity_check(msg_checks, uri_checks)``: Kamailio's sanity module, sans-IO.

Each bit of ``msg_checks`` selects a check (values from Kamailio's
sanity_mod.h); a failed check answers the request statelessly with the
module's status and reason, except where the module sends nothing, and the
function returns false so the route can log and ``exit``:

====== ========================== =====================================================
bit    check                      on failure
====== ========================== =====================================================
1      R-URI SIP version          505 Version Not Supported (R-URI)
2      R-URI scheme               416 Unsupported URI Scheme in Request URI
4      required headers           no reply: From, To, Call-ID or CSeq missing or repeated
8      Via SIP version            505 Version Not Supported (Via)
16     Via transport              400 Transport Mismatch in Topmost Via
32     CSeq method                400 CSeq method does not match request method
64     CSeq value                 400 CSeq number is illegal (not a 32-bit number)
128    Content-Length             400 Content-Length mis-match
256    Expires value              400 Expires value is illegal
512    Proxy-Require              420 Bad Proxy Require Extension, with Unsupported
1024   parse URIs (uri_checks)    400 Bad Request URI / Invalid From Header /
                                  Invalid To Header / Bad Contact Header
2048   digest credentials         400 Bad Auth Header / Auth Empty User / Nonce / Response;
                                  no reply for a credential that is not Digest
4096   duplicate tags             400 Many From Tag Params / Many To Tag Params
8192   authorization              as 2048, but a non-Digest scheme passes
16384  first Via                  no reply: the top Via has no host
====== ========================== =====================================================

``uri_checks`` (for 1024): 1 the R-URI, 2 From, 4 To, 8 Contact. Without
arguments the module's defaults apply (3047 and 7). sipdisp's parser and
core already refuse much of this before the route runs (a request line that
is not SIP/2.0, a CSeq method that differs, an unsupported scheme ...), so
on a live request these bits rarely fail; they are checked again because a
route may have changed the request, and so that the function does what its
flags say. Kamailio leaves bits 8 and 16 as no-ops ("do not work yet");
sipdisp checks them.
"""

import re

from ..sip.address import check_address
from ..sip.errors import SipParseError
from ..sip.via import parse_via

RURI_SIP_VERSION = 1
RURI_SCHEME = 2
REQUIRED_HEADERS = 4
VIA_SIP_VERSION = 8
VIA_PROTOCOL = 16
CSEQ_METHOD = 32
CSEQ_VALUE = 64
CONTENT_LENGTH = 128
EXPIRES_VALUE = 256
PROXY_REQUIRE = 512
PARSE_URIS = 1024
CHECK_DIGEST = 2048
CHECK_DUPTAGS = 4096
CHECK_AUTHORIZATION = 8192
VIA1_HEADER = 16384
ALL_CHECKS = (1 << 15) - 1

URI_RURI = 1
URI_FROM = 2
URI_TO = 4
URI_CONTACT = 8
ALL_URI_CHECKS = 15

#: the module's defaults (sanity_mod.h SANITY_DEFAULT_CHECKS, SANITY_DEFAULT_URI_CHECKS)
DEFAULT_CHECKS = (RURI_SIP_VERSION | RURI_SCHEME | REQUIRED_HEADERS | CSEQ_METHOD | CSEQ_VALUE
                  | CONTENT_LENGTH | EXPIRES_VALUE | PROXY_REQUIRE | CHECK_DIGEST)
DEFAULT_URI_CHECKS = URI_RURI | URI_FROM | URI_TO

SCHEMES = frozenset(("sip", "sips", "tel"))
UINT32_MAX = 2 ** 32 - 1
#: the Via transport a request may name for the transport it came over
VIA_TRANSPORTS = {"udp": ("UDP",), "tcp": ("TCP",), "tls": ("TLS",), "sctp": ("SCTP",),
                  # browsers' SIP stacks write WSS over ws and WS over wss (JsSIP)
                  "ws": ("WS", "WSS"), "wss": ("WSS", "WS")}

#: a failure the module does not answer (it returns false without a reply)
NO_REPLY = None


class Failure(Exception):
    """A failed check: ``status`` (None: no reply), ``reason``, extra ``headers``."""

    def __init__(self, status, reason, headers=()):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


def _uint32(text):
    text = (text or "").strip()
    return text.isdigit() and text.isascii() and int(text) <= UINT32_MAX


def _ruri_version(req, source):
    # the parser refuses any other version (505) before the route runs; a
    # Request object always serializes as SIP/2.0
    return


def _ruri_scheme(req, source):
    if req.uri.scheme not in SCHEMES:
        raise Failure(416, "Unsupported URI Scheme in Request URI")


def _required_headers(req, source):
    counts = {"from": 0, "to": 0, "call-id": 0, "cseq": 0}
    for key, _, _ in req.headers:
        if key in counts:
            counts[key] += 1
    if any(n != 1 for n in counts.values()):
        raise Failure(NO_REPLY, "missing or repeated From, To, Call-ID or CSeq")


def _vias(req):
    try:
        return [parse_via(v) for v in req.values("via")]
    except SipParseError:
        raise Failure(NO_REPLY, "a Via does not parse") from None


def _via_version(req, source):
    for value in req.values("via"):
        head = value.strip().split(None, 1)[0] if value.strip() else ""
        parts = [p.strip() for p in head.split("/")]
        if len(parts) >= 2 and (parts[0].upper() != "SIP" or parts[1] != "2.0"):
            raise Failure(505, "Version Not Supported (Via)")
    _vias(req)


def _via_protocol(req, source):
    via = req.via
    allowed = VIA_TRANSPORTS.get(getattr(source, "proto", None))
    if via is not None and allowed is not None and via.transport.upper() not in allowed:
        raise Failure(400, "Transport Mismatch in Topmost Via")


def _cseq_method(req, source):
    if not req.cseq_method:
        raise Failure(400, "Missing method in CSeq header")
    if req.cseq_method != req.method:
        raise Failure(400, "CSeq method does not match request method")


def _cseq_value(req, source):
    text = (req.get("cseq") or "").split()
    if not text:
        raise Failure(400, "Missing number in CSeq header")
    if not _uint32(text[0]):
        raise Failure(400, "CSeq number is illegal")


def _content_length(req, source):
    value = req.get("content-length")
    if value is None:
        return
    value = value.strip()
    if not value.isdigit() or not value.isascii():
        raise Failure(400, "Content-Length Failure")
    if int(value) != len(req.body or b""):
        raise Failure(400, "Content-Length mis-match")


def _expires(req, source):
    value = req.get("expires")
    if value is None:
        return
    if not value.strip():
        raise Failure(400, "Missing number in Expires header")
    if not _uint32(value):
        raise Failure(400, "Expires value is illegal")


def _proxy_require(req, source):
    # sipdisp, like Kamailio's proxy_require default (empty), supports no
    # Proxy-Require extension (RFC 3261 16.3 step 6)
    tags = [t for t in req.values("proxy-require") if t.strip()]
    if tags:
        raise Failure(420, "Bad Proxy Require Extension", (("unsupported", ", ".join(tags)),))


def _parse_uris(uri_checks):
    def check(req, source):
        # URI_RURI needs nothing here: the parser answers 400 to a Request-URI
        # it cannot parse, so every request routed has a valid one
        for bit, key, reason in ((URI_FROM, "from", "Invalid From Header"),
                                 (URI_TO, "to", "Invalid To Header")):
            if uri_checks & bit:
                value = req.get(key)
                if not value:
                    raise Failure(NO_REPLY, reason)
                try:
                    check_address(value)
                except SipParseError:
                    raise Failure(400, reason) from None
        if uri_checks & URI_CONTACT:
            for value in req.values("contact"):
                if value.strip() == "*":
                    continue
                try:
                    check_address(value)
                except SipParseError:
                    raise Failure(400, "Bad Contact Header") from None
    return check


_AUTH_PARAM = re.compile(r'\s*([^\s=,"]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)')


def _auth_params(text):
    params = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _AUTH_PARAM.match(text, pos)
        if m is None or m.end() == pos:
            return None
        name, quoted, token = m.groups()
        params[name.lower()] = quoted if quoted is not None else token
        pos = m.end()
    return params


def _credentials(digest_only):
    def check(req, source):
        for key in ("authorization", "proxy-authorization"):
            for value in req.get_all(key):
                scheme, _, rest = value.strip().partition(" ")
                if scheme.lower() != "digest":
                    if digest_only:  # the module fails it without a reply
                        raise Failure(NO_REPLY, "not a Digest credential")
                    continue
                params = _auth_params(rest)
                if params is None:
                    raise Failure(400, "Bad Auth Header")
                if not params.get("username"):
                    raise Failure(400, "Auth Empty User")
                if not params.get("nonce"):
                    raise Failure(400, "Auth Empty Nonce")
                if not params.get("response"):
                    raise Failure(400, "Auth Empty Response")
    return check


def _tag_count(value):
    gt = value.rfind(">")
    tail = value[gt + 1:] if gt >= 0 else value
    return sum(1 for p in tail.split(";")[1:] if p.strip().lower().partition("=")[0].strip()
               == "tag")


def _duptags(req, source):
    for key, reason in (("from", "Many From Tag Params"), ("to", "Many To Tag Params")):
        if _tag_count(req.get(key) or "") > 1:
            raise Failure(400, reason)


def _via1(req, source):
    via = req.via
    if via is None or not via.host:
        raise Failure(NO_REPLY, "the first Via has no host")


def compile_checks(msg_checks=DEFAULT_CHECKS, uri_checks=DEFAULT_URI_CHECKS):
    """The checks ``msg_checks`` selects, in the module's order, as a function
    ``check(request, source)`` raising :class:`Failure`."""
    table = ((RURI_SIP_VERSION, _ruri_version), (RURI_SCHEME, _ruri_scheme),
             (REQUIRED_HEADERS, _required_headers), (VIA_SIP_VERSION, _via_version),
             (VIA_PROTOCOL, _via_protocol), (CSEQ_METHOD, _cseq_method),
             (CSEQ_VALUE, _cseq_value), (CONTENT_LENGTH, _content_length),
             (EXPIRES_VALUE, _expires), (PROXY_REQUIRE, _proxy_require),
             (PARSE_URIS, _parse_uris(uri_checks)), (CHECK_DIGEST, _credentials(True)),
             (CHECK_DUPTAGS, _duptags), (CHECK_AUTHORIZATION, _credentials(False)),
             (VIA1_HEADER, _via1))
    checks = [fn for bit, fn in table if msg_checks & bit]

    def check(request, source):
        for fn in checks:
            fn(request, source)
    return check
