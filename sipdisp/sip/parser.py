"""Bytes -> Request/Response, and message framing on stream transports.

RFC 3261 section 7 (message format), 18.3 (framing: Content-Length is
mandatory on streams, optional on UDP where the datagram ends the body) and
20 (headers). Every rejection is a SipParseError carrying the status to
answer with.
"""

import re

from .errors import SipParseError
from .headers import SINGLE_HEADERS, header_key, is_token, parse_params, split_commas
from .message import Request, Response
from .uri import parse_uri
from .via import parse_via

MAX_CSEQ = 2**32 - 1
DEFAULT_MAX_SIZE = 65535

_CONTENT_LENGTH_RE = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)")


def parse_message(data, max_size=DEFAULT_MAX_SIZE, datagram=True):
    """Parse one message from ``data``.

    With ``datagram`` a missing Content-Length means "to the end of the
    datagram" and octets past Content-Length are ignored (RFC 4475 3.1.1.8);
    otherwise ``data`` must be exactly one framed message (see StreamFramer).
    """
    if len(data) > max_size:
        raise SipParseError("Message Too Large", 513)
    start = 0
    while data.startswith(b"\r\n", start):  # section 7.5: ignore leading CRLF
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        head = data[start:end].decode("utf-8", "surrogateescape")
        lines = head.split("\r\n")
        body_start = end + 4
    else:
        # bare-LF messages (old UAs, RFC 5118 archive): tolerate them
        end = data.find(b"\n\n", start)
        if end < 0:
            raise SipParseError("Incomplete header section")
        head = data[start:end].decode("utf-8", "surrogateescape")
        lines = [line.rstrip("\r") for line in head.split("\n")]
        body_start = end + 2
    msg = _parse_start_line(lines[0])
    headers = msg.headers
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
        colon = line.find(":")
        if colon <= 0:
            raise SipParseError("Malformed header line", message=msg)
        name = line[:colon]
        if name[-1] in " \t":
            name = name.rstrip(" \t")
        if not is_token(name):
            raise SipParseError("Malformed header name", message=msg)
        headers.append((header_key(name), name, line[colon + 1:].strip()))
    _frame_body(msg, data, body_start, datagram)
    _check(msg)
    return msg


def _parse_start_line(line):
    if line.startswith("SIP/"):
        parts = line.split(" ", 2)
        if len(parts) < 2:
            raise SipParseError("Malformed Status-Line")
        version, code = parts[0], parts[1]
        if version != "SIP/2.0":
            raise SipParseError("Version Not Supported", 505)
        if len(code) != 3 or not code.isdigit() or not "100" <= code <= "699":
            raise SipParseError("Malformed status code")
        return Response(int(code), parts[2] if len(parts) == 3 else "")
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError("Malformed Request-Line")
    method, uri_text, version = parts
    if not is_token(method):
        raise SipParseError("Malformed method")
    if version != "SIP/2.0":
        if version.upper().startswith("SIP/"):
            raise SipParseError("Version Not Supported", 505)
        raise SipParseError("Malformed Request-Line")
    uri = parse_uri(uri_text)
    if uri.headers:  # RFC 4475 3.1.2.10: headers have no place in a Request-URI
        raise SipParseError("Request-URI with headers")
    return Request(method, uri)


def _frame_body(msg, data, body_start, datagram):
    lengths = [v for k, _, v in msg.headers if k == "content-length"]
    if not lengths:
        if not datagram:
            raise SipParseError("Missing Content-Length", message=msg)
        msg.body = bytes(data[body_start:])
        return
    if len(lengths) > 1:
        raise SipParseError("Multiple Content-Length", message=msg)
    text = lengths[0]
    if not text.isdigit() or not text.isascii():
        raise SipParseError("Malformed Content-Length", message=msg)
    length = int(text)
    if body_start + length > len(data):
        raise SipParseError("Content-Length larger than message", message=msg)
    msg.body = bytes(data[body_start:body_start + length])


def _check(msg):
    """Mandatory headers and scalar fields (sections 8.1.1, 20; RFC 4475 3.1.2)."""
    call_id = cseq = from_v = to_v = via_v = None
    seen = set()
    for key, _, value in msg.headers:
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
                if not value.isdigit() or int(value) > 255:
                    raise SipParseError("Malformed Max-Forwards", message=msg)
        elif key == "via" and via_v is None:
            via_v = value
    if via_v is None:
        raise SipParseError("Missing Via", message=msg)
    if from_v is None or to_v is None or call_id is None or cseq is None:
        missing = [n for n, v in (("From", from_v), ("To", to_v), ("Call-ID", call_id),
                                  ("CSeq", cseq)) if v is None]
        raise SipParseError(f"Missing {', '.join(missing)}", message=msg)
    if not call_id or " " in call_id:
        raise SipParseError("Malformed Call-ID", message=msg)
    msg.call_id = call_id
    parts = cseq.split()
    if len(parts) != 2 or not parts[0].isdigit() or not is_token(parts[1]):
        raise SipParseError("Malformed CSeq", message=msg)
    number = int(parts[0])
    if number > MAX_CSEQ:
        raise SipParseError("CSeq number out of range", message=msg)
    msg.cseq = number
    msg.cseq_method = parts[1]
    top = via_v
    if "," in top:
        top = split_commas(top)[0]
    msg.via = parse_via(top)
    msg.from_tag = _tag(from_v, msg)
    msg.to_tag = _tag(to_v, msg)
    if msg.is_request and msg.cseq_method != msg.method:
        raise SipParseError("CSeq method does not match Request-Line", message=msg)


def _tag(value, msg):
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
            return val
    return None


KEEPALIVE = b"\r\n\r\n"


class StreamFramer:
    """Cuts a TCP/TLS byte stream into messages by Content-Length (section 18.3).

    ``feed(data)`` returns a list of complete frames; a CRLFCRLF keep-alive
    between messages yields ``KEEPALIVE`` (RFC 5626 section 4.4.1: answer with
    one CRLF). Raises SipParseError when the stream cannot be framed; the
    connection must then be closed.
    """

    def __init__(self, max_size=DEFAULT_MAX_SIZE):
        self.max_size = max_size
        self._buf = bytearray()

    def feed(self, data):
        """Add received bytes; returns the frames now complete."""
        buf = self._buf
        buf += data
        out = []
        while buf:
            if buf[0] in (13, 10):
                crlfs = 0
                while buf[:2] == b"\r\n":
                    del buf[:2]
                    crlfs += 1
                if crlfs >= 2:
                    out.append(KEEPALIVE)
                if buf[:1] in (b"\r", b"\n"):
                    if len(buf) == 1 and buf[0] == 13:
                        break  # the rest of a CRLF is on its way
                    del buf[:1]  # stray bare LF
                    continue
                if not buf:
                    if crlfs == 1:
                        buf += b"\r\n"  # may become a CRLFCRLF ping
                    break
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_size:
                    raise SipParseError("Message Too Large", 513)
                break
            head = bytes(buf[:end])
            lengths = _CONTENT_LENGTH_RE.findall(head)
            if not lengths:
                raise SipParseError("Missing Content-Length", message=_partial(head))
            if len(lengths) > 1:
                raise SipParseError("Multiple Content-Length", message=_partial(head))
            text = lengths[0].strip()
            if not text.isdigit():
                raise SipParseError("Malformed Content-Length", message=_partial(head))
            total = end + 4 + int(text)
            if total > self.max_size:
                raise SipParseError("Message Too Large", 513, message=_partial(head))
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out

    @property
    def buffered(self):
        """Bytes received but not yet framed."""
        return len(self._buf)


def _partial(head):
    """Best-effort parse of a header section, to answer an unframeable message."""
    try:
        return parse_message(head + b"\r\n\r\n", datagram=True)
    except SipParseError as exc:
        return exc.message
