"""Bytes -> Request/Response, and message framing on stream transports.

RFC 3261 section 7 (message format), 18.3 (framing: Content-Length is
mandatory on streams, optional on UDP where the datagram ends the body) and
20 (headers). Every rejection is a SipParseError carrying the status to
answer with.
"""

import re

from .errors import SipParseError
from ._plain import python_class
from .headers import _key_cache
from .headers import SINGLE_HEADERS, header_key, is_token, parse_params, split_commas
from .message import Message, Request, Response
from .uri import parse_uri
from .via import parse_via

MAX_CSEQ = 2**32 - 1
_known_key = _key_cache.get  # header_key's cache only holds valid token names
DEFAULT_MAX_SIZE = 65535
#: Max-Forwards is 70 hops by RFC 3261 section 8.1.1.6, so a legitimate request
#: has gathered at most ~70 Vias; Route sets are a handful of hops.
DEFAULT_MAX_VIA = 70
DEFAULT_MAX_ROUTE = 30
#: Content-Length at or beyond 2**31 is no SIP body (and int() of thousands
#: of digits is both slow and refused by Python): RFC 3261 20.14 says 1*DIGIT,
#: a sane element caps it.
MAX_CONTENT_LENGTH = 2**31 - 1
#: longest method accepted; RFC 4475 3.1.1.2's legal method is 43 characters
MAX_METHOD_LENGTH = 64

# the methods sipdisp meets every day, each one string object: a completed
# transaction's key keeps the method for Timer J's 32 s, one copy per
# transaction otherwise
_METHOD_NAMES = {m: m for m in ("INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS",
                                "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "INFO",
                                "PRACK", "UPDATE", "REFER")}

# RFC 3261 section 25.1: Call-ID = word [ "@" word ]; word is visible ASCII.
# Liberal about which visible characters (devices put "=" and "#" in them),
# strict about NUL, controls, spaces and raw non-ASCII or invalid UTF-8.
_CALL_ID_MATCH = re.compile(r"[!-~]+\Z").match
# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT (section 25.1)
_VERSION_MATCH = re.compile(r"SIP/[0-9]+\.[0-9]+\Z", re.IGNORECASE).match
# a NUL that is not the second octet of a quoted-pair
_RAW_NUL = re.compile(r"(?<!\\)\x00").search
# a Request-URI is ASCII without controls or spaces (section 19.1, 25.1)
_URI_BAD_CHAR = re.compile(r"[^!-~]").search

_CONTENT_LENGTH_RE = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)")


def parse_message(data, max_size=DEFAULT_MAX_SIZE, datagram=True,
                  max_via=DEFAULT_MAX_VIA, max_route=DEFAULT_MAX_ROUTE) -> Message:
    """Parse one message from ``data``.

    With ``datagram`` a missing Content-Length means "to the end of the
    datagram" and octets past Content-Length are ignored (RFC 4475 3.1.1.8);
    otherwise ``data`` must be exactly one framed message (see StreamFramer).
    More than ``max_via`` Via or ``max_route`` Route values is refused with a
    400 whose ``limit`` names the config key (``sip.max_via_headers`` ...).
    """
    if len(data) > max_size:
        # answer 513 when the header section fits (error path only)
        raise SipParseError("Message Too Large", 513, message=_salvage(data[:max_size]))
    start: int = 0
    head: str
    lines: list[str]
    while data.startswith(b"\r\n", start):  # section 7.5: ignore leading CRLF
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        head = data[start:end].decode("utf-8", "surrogateescape")
        lines = head.split("\r\n")
        body_start = end + 4
        # a CR left after splitting on CRLF is a bare CR (section 7.3.1 and 25:
        # CR appears only in CRLF); a NUL only as a quoted-pair "\\%x00" inside
        # a quoted string (RFC 4475 3.1.1.2), elsewhere it is escaped as %00
        # (3.1.1.4). Two C-speed scans on the common path.
        if head.count("\r") != len(lines) - 1 or ("\x00" in head and _RAW_NUL(head)):
            _bad_octets(lines)
    else:
        # bare-LF messages (old UAs, RFC 5118 archive): tolerate them
        end = data.find(b"\n\n", start)
        if end < 0:
            # no empty line (RFC 4475 3.1.2.15's archive copy): still answer 400
            raise SipParseError("Incomplete header section", message=_salvage(data[start:]))
        head = data[start:end].decode("utf-8", "surrogateescape")
        lines = [line[:-1] if line.endswith("\r") else line for line in head.split("\n")]
        body_start = end + 2
        if any("\r" in line or _RAW_NUL(line) for line in lines):
            _bad_octets(lines)
    try:
        msg = _parse_start_line(lines[0])
    except SipParseError as exc:
        exc.message = _salvage_lines(lines)
        raise
    _parse_headers(msg, lines)
    _frame_body(msg, data, body_start, datagram)
    _check(msg, max_via, max_route)
    return msg


def _bad_octets(lines):
    """Raise for a header section with a raw NUL or a bare CR (error path only)."""
    what = "NUL" if any(_RAW_NUL(line) for line in lines) else "bare CR"
    raise SipParseError(f"{what} in header section", message=_salvage_lines(
        [line.replace("\x00", "").replace("\r", "") for line in lines]))


def _parse_headers(msg, lines: list[str]) -> None:
    """Append the header lines (``lines[1:]``) to ``msg.headers``, unfolding."""
    headers: list[tuple[str, str, str]] = msg.headers
    for line in lines[1:]:
        if not line:
            continue
        first = line[0]
        if first == " " or first == "\t":  # header folding (section 7.3.1)
            if not headers:
                raise SipParseError("Folded line before any header", message=msg)
            k, n, v = headers[-1]
            headers[-1] = (k, n, f"{v} {line.strip()}".strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not name:
            raise SipParseError("Malformed header line", message=msg)
        key = _known_key(name)  # names seen before skip validation
        if key is None:
            if name[-1] in " \t":
                name = name.rstrip(" \t")
            if not is_token(name):
                raise SipParseError("Malformed header name", message=msg)
            key = header_key(name)
        headers.append((key, name, value.strip()))


def _salvage(data):
    """A partial request from raw bytes whose framing failed (see _salvage_lines)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.rfind(b"\r\n")
        if end < 0:
            return None
    head = data[:end].lstrip(b"\r\n").decode("utf-8", "surrogateescape")
    return _salvage_lines(head.split("\r\n")) if head else None


def _salvage_lines(lines):
    """Best effort, on the error path only: a Request holding the header lines
    that parse, so the sender of a broken request can still get its 4xx copying
    Via, From, To, Call-ID and CSeq (RFC 4475 3.1.2). None for responses,
    which are never answered. The method is the start line's first word and
    the Request-URI is None."""
    first = lines[0]
    if first.startswith("SIP/"):
        return None
    msg = Request(first.split(" ", 1)[0], None)
    try:
        _parse_headers(msg, lines)
    except SipParseError:
        pass  # keep the lines before the malformed one
    return msg


def _parse_start_line(line: str):
    if line.startswith("SIP/"):
        parts = line.split(" ", 2)
        if len(parts) < 2:
            raise SipParseError("Malformed Status-Line")
        version, code = parts[0], parts[1]
        if version != "SIP/2.0":
            if _VERSION_MATCH(version):
                raise SipParseError("Version Not Supported", 505)
            raise SipParseError("Malformed SIP-Version")
        if len(code) != 3 or not code.isdigit() or not "100" <= code <= "699":
            raise SipParseError("Malformed status code")
        return Response(int(code), parts[2] if len(parts) == 3 else "")
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError("Malformed Request-Line")
    method, uri_text, version = parts
    if not is_token(method) or len(method) > MAX_METHOD_LENGTH:
        raise SipParseError("Malformed method")
    method = _METHOD_NAMES.get(method, method)
    if version != "SIP/2.0":
        # RFC 4475 3.1.2.16: a well-formed other version gets 505; a broken
        # one (SIP/2.0x, SIP/two) is a malformed Request-Line
        if _VERSION_MATCH(version):
            raise SipParseError("Version Not Supported", 505)
        raise SipParseError("Malformed SIP-Version")
    if _URI_BAD_CHAR(uri_text):
        raise SipParseError("Malformed Request-URI: raw control or non-ASCII octet")
    uri = parse_uri(uri_text)
    if uri.headers:  # RFC 4475 3.1.2.10: headers have no place in a Request-URI
        raise SipParseError("Request-URI with headers")
    return Request(method, uri)


def _frame_body(msg, data, body_start: int, datagram) -> None:
    headers: list[tuple[str, str, str]] = msg.headers
    lengths = [v for k, _, v in headers if k == "content-length"]
    if not lengths:
        if not datagram:
            raise SipParseError("Missing Content-Length", message=msg)
        msg.body = bytes(data[body_start:])
        return
    if len(lengths) > 1:
        raise SipParseError("Multiple Content-Length", message=msg)
    text: str = lengths[0]
    if not text.isdigit() or not text.isascii():
        raise SipParseError("Malformed Content-Length", message=msg)
    length = int(text) if len(text) <= 10 else MAX_CONTENT_LENGTH + 1
    if length > MAX_CONTENT_LENGTH:
        raise SipParseError("Content-Length out of range", message=msg)
    if body_start + length > len(data):
        raise SipParseError("Content-Length larger than message", message=msg)
    msg.body = bytes(data[body_start:body_start + length])


def _check(msg, max_via=DEFAULT_MAX_VIA, max_route=DEFAULT_MAX_ROUTE) -> None:
    """Mandatory headers and scalar fields (sections 8.1.1, 20; RFC 4475 3.1.2),
    and the Via and Route count limits."""
    call_id: str | None = None
    cseq: str | None = None
    from_v: str | None = None
    to_v: str | None = None
    via_v: str | None = None
    vias: int = 0
    routes: int = 0
    seen: set[str] = set()
    headers: list[tuple[str, str, str]] = msg.headers
    for key, _, value in headers:
        if key in SINGLE_HEADERS:
            if key in seen:
                raise SipParseError(f"Multiple {key} headers", message=msg)
            seen.add(key)
            if key == "call-id":
                call_id = value
            elif key == "cseq":
                cseq = value
            elif key == "from":
                from_v = value
            elif key == "to":
                to_v = value
            elif key == "max-forwards":
                # isascii: str.isdigit() accepts "²", which int() rejects;
                # the length check keeps int() off thousands of digits
                if (not value.isdigit() or not value.isascii() or len(value) > 10
                        or int(value) > 255):
                    raise SipParseError("Malformed Max-Forwards", message=msg)
        elif key == "via":
            if via_v is None:
                via_v = value
            # commas count values (section 7.3.1); an overcount from a quoted
            # comma is corrected by the exact count below
            vias += value.count(",") + 1
        elif key == "route":
            routes += value.count(",") + 1
    if via_v is None:
        raise SipParseError("Missing Via", message=msg)
    if from_v is None or to_v is None or call_id is None or cseq is None:
        missing = [n for n, v in (("From", from_v), ("To", to_v), ("Call-ID", call_id),
                                  ("CSeq", cseq)) if v is None]
        raise SipParseError(f"Missing {', '.join(missing)}", message=msg)
    if not _CALL_ID_MATCH(call_id):
        raise SipParseError("Malformed Call-ID", message=msg)
    msg.call_id = call_id
    parts = cseq.split()
    if (len(parts) != 2 or not parts[0].isdigit() or not parts[0].isascii()
            or not is_token(parts[1]) or len(parts[1]) > MAX_METHOD_LENGTH):
        raise SipParseError("Malformed CSeq", message=msg)
    # RFC 4475 3.1.2.4: beyond 2**32-1 is a 400; ten digits at most keeps
    # int() off a thousand-digit number
    number = int(parts[0]) if len(parts[0]) <= 10 else MAX_CSEQ + 1
    if number > MAX_CSEQ:
        raise SipParseError("CSeq number out of range", message=msg)
    msg.cseq = number
    msg.cseq_method = _METHOD_NAMES.get(parts[1], parts[1])
    top = via_v
    if "," in top:
        top = split_commas(top)[0]
    try:
        msg.via = parse_via(top)
    except SipParseError as exc:
        exc.message = msg
        raise
    if vias > max_via or routes > max_route:  # after the top Via: the 400 needs it
        _check_counts(msg, max_via, max_route)
    branch = msg.via.branch
    if branch is not None and not is_token(branch):
        # section 20.42: via-branch = "branch" EQUAL token; the transaction key
        raise SipParseError("Malformed Via branch", message=msg)
    msg.from_tag = _tag(from_v, msg)
    msg.to_tag = _tag(to_v, msg)
    if msg.is_request and msg.cseq_method != msg.method:
        raise SipParseError("CSeq method does not match Request-Line", message=msg)


def _tag(value: str, msg) -> "str | None":
    """The tag parameter of a From/To value, without parsing the whole address."""
    gt = value.rfind(">")
    tail = value[gt + 1:] if gt >= 0 else value
    i = tail.find(";tag=")
    if i >= 0:
        tag = tail[i + 5:]
        for stop in ";, \t":
            j = tag.find(stop)
            if j >= 0:
                tag = tag[:j]
        if tag:
            if not is_token(tag):  # section 25.1: tag-param = "tag" EQUAL token
                raise SipParseError("Malformed tag", message=msg)
            return tag
    if "tag" not in tail.lower():
        return None
    semi = tail.find(";")
    if semi < 0:
        return None
    try:
        params = parse_params(tail[semi:], "From/To")
    except SipParseError as exc:
        exc.message = msg
        raise
    for name, val in params:
        if name.lower() == "tag":
            if val is None or not is_token(val):
                raise SipParseError("Malformed tag", message=msg)
            return val
    return None


def _check_counts(msg, max_via, max_route):
    """Raise the limit error when the exact Via or Route count is over its limit
    (only called when the quick comma count says it may be)."""
    for key, limit, name, setting in (("via", max_via, "Via", "sip.max_via_headers"),
                                      ("route", max_route, "Route", "sip.max_route_headers")):
        count = sum(len(split_commas(v)) for k, _, v in msg.headers if k == key)
        if count > limit:
            raise SipParseError(f"Too many {name} headers ({count} > {limit})", 400,
                                message=msg, limit=setting)


KEEPALIVE = b"\r\n\r\n"


@python_class
class StreamFramer:
    """Cuts a TCP/TLS byte stream into messages by Content-Length (section 18.3).

    ``feed(data)`` returns a list of complete frames; a CRLFCRLF keep-alive
    between messages yields ``KEEPALIVE`` (RFC 5626 section 4.4.1: answer with
    one CRLF). Raises SipParseError when the stream cannot be framed; the
    connection must then be closed. Frames completed before the unframeable
    message in the same ``data`` are returned first; the error is then raised
    by the next call (``feed(b"")`` will do), as if it had arrived later.

    ``max_header`` caps the header section (start line to the blank line
    included; default ``max_size``): past it, or past ``max_size`` for
    header and announced body together, the error (513) is raised as soon as
    the bytes or the Content-Length show it, so a huge announced body is
    never waited for nor buffered.
    """

    def __init__(self, max_size=DEFAULT_MAX_SIZE, max_header=None):
        self.max_size = max_size
        self.max_header = max_size if max_header is None else min(max_header, max_size)
        self._buf = bytearray()

    def feed(self, data):
        """Add received bytes; returns the frames now complete."""
        buf = self._buf
        buf += data
        out = []
        while buf:
            first = buf[0]
            if first == 13 or first == 10:
                # CRLFs between messages are ignored (RFC 3261 7.5), CRLFCRLF is
                # a keep-alive ping (RFC 5626 4.4.1). Decided on whole pairs only,
                # so the result does not depend on how the stream was segmented
                # (a ping arriving byte by byte used to be swallowed).
                if buf.startswith(b"\r\n\r\n"):
                    del buf[:4]
                    out.append(KEEPALIVE)
                elif buf == b"\r\n" or buf == b"\r\n\r" or buf == b"\r":
                    break  # may still become a ping: wait for more
                elif buf.startswith(b"\r\n"):
                    del buf[:2]
                else:
                    del buf[:1]  # stray bare LF or CR
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                # the header section will be longer than len(buf): with the
                # check below, the same 513 however the bytes were segmented
                if len(buf) >= self.max_header:
                    if out:
                        break  # deliver the frames first; raise on the next call
                    raise SipParseError(_header_too_large(self), 513)
                break
            head = bytes(buf[:end])
            lengths = _CONTENT_LENGTH_RE.findall(head)
            error = None
            if end + 4 > self.max_header:
                error = _header_too_large(self), 513
            elif not lengths:
                error = "Missing Content-Length", 400
            elif len(lengths) > 1:
                error = "Multiple Content-Length", 400
            else:
                text = lengths[0].strip()
                if not text.isdigit() or not text.isascii():
                    error = "Malformed Content-Length", 400
                elif len(text) > 10 or int(text) > MAX_CONTENT_LENGTH:
                    error = "Content-Length out of range", 400
                else:
                    total = end + 4 + int(text)
                    if total > self.max_size:
                        error = "Message Too Large", 513
            if error is not None:
                if out:
                    break  # deliver the frames first; raise on the next call
                raise SipParseError(*error, message=_partial(head))
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out

    @property
    def buffered(self) -> int:
        """Bytes received but not yet framed."""
        return len(self._buf)


def _header_too_large(framer):
    """The reason of a 513 for a header section past ``max_header``."""
    if framer.max_header == framer.max_size:
        return "Message Too Large"
    return "Header Section Too Large"


def _partial(head):
    """Best-effort parse of a header section, to answer an unframeable message."""
    try:
        return parse_message(head + b"\r\n\r\n", datagram=True)
    except SipParseError as exc:
        return exc.message
