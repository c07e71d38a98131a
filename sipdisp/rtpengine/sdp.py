"""The SDP of a SIP message body, sans-IO: found in an ``application/sdp``
body or in the ``application/sdp`` part of a ``multipart/*`` body, and
replaced in place (the serializer writes the new Content-Length); and
nathelper's ``fix_nated_sdp``.
"""

import re

from ..sip.headers import header_key

_CTYPE = header_key("content-type")
_BOUNDARY = re.compile(r';\s*boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', re.I)


def sdp_span(msg):
    """``(start, end)`` of the SDP within ``msg.body``, or None when the
    body has none. A body without Content-Type that starts ``v=0`` counts
    (some devices leave the header out)."""
    body = msg.body
    if not body:
        return None
    ctype = (msg.get(_CTYPE) or "").strip()
    main = ctype.split(";", 1)[0].strip().lower()
    if main == "application/sdp":
        return 0, len(body)
    if main.startswith("multipart/"):
        m = _BOUNDARY.search(ctype)
        if m is None:
            return None
        return _multipart_sdp(body, (m.group(1) or m.group(2)).encode("utf-8", "replace"))
    if not main and body.lstrip().startswith(b"v=0"):
        return 0, len(body)
    return None


def _multipart_sdp(body, boundary):
    """The span of the first ``application/sdp`` part (RFC 2046 5.1.1): the
    part's body runs from after its blank line to the CRLF before the next
    delimiter."""
    delim = b"--" + boundary
    pos = body.find(delim)
    while pos >= 0:
        start = pos + len(delim)
        if body[start:start + 2] == b"--":
            return None  # the close delimiter
        nxt = body.find(b"\r\n" + delim, start)
        if nxt < 0:
            nxt = body.find(b"\n" + delim, start)
            if nxt < 0:
                return None
            end = nxt
        else:
            end = nxt
        part = body[start:end]
        head_end = part.find(b"\r\n\r\n")
        sep = 4
        if head_end < 0:
            head_end = part.find(b"\n\n")
            sep = 2
        if head_end >= 0:
            head = part[:head_end].lower()
            for line in head.splitlines():
                name, _, value = line.partition(b":")
                if name.strip() == b"content-type" and \
                        value.split(b";", 1)[0].strip() == b"application/sdp":
                    return start + head_end + sep, end
        pos = body.find(delim, end)
    return None


def get_sdp(msg):
    """The SDP of ``msg`` (bytes), or None."""
    span = sdp_span(msg)
    if span is None:
        return None
    return msg.body[span[0]:span[1]]


def set_sdp(msg, sdp, span=None):
    """Replace the SDP of ``msg`` with ``sdp`` (bytes) where it was found
    (``span`` from :func:`sdp_span` of the same body; found again when None).
    False when the body has no SDP."""
    if span is None:
        span = sdp_span(msg)
    if span is None:
        return False
    body = msg.body
    msg.body = body[:span[0]] + sdp + body[span[1]:]
    return True


def has_sdp(msg):
    """True when the message body carries an SDP."""
    return sdp_span(msg) is not None


# -- nathelper's fix_nated_sdp --------------------------------------------------

FIX_DIRECTION = 1   # add a=direction:active
FIX_MEDIA_IP = 2    # rewrite c= (and a=rtcp's address), keep the old as a=oldmediaip
FIX_NORTPPROXY = 4  # add a=nortpproxy:yes
FIX_ORIGIN_IP = 8   # rewrite the o= address

_C_LINE = re.compile(rb"^c=IN (IP4|IP6) ([^\s/]+)(.*)$")
_O_LINE = re.compile(rb"^(o=\S+ \S+ \S+ IN )(IP4|IP6) (\S+)(.*)$")
_RTCP_LINE = re.compile(rb"^(a=rtcp:\d+ IN )(IP4|IP6) (\S+)(.*)$")


def _family(ip):
    return b"IP6" if b":" in ip else b"IP4"


def fix_nated_sdp(sdp, flags, ip):
    """The SDP with nathelper's ``fix_nated_sdp(flags, ip)`` applied: 1 adds
    ``a=direction:active``, 2 writes ``ip`` into every ``c=`` line (and an
    ``a=rtcp`` address) and keeps each old address as ``a=oldmediaip``, 4
    adds ``a=nortpproxy:yes``, 8 writes ``ip`` into the ``o=`` line. Lines
    already so are left alone; the SDP's line ending is kept."""
    eol = b"\r\n" if b"\r\n" in sdp else b"\n"
    lines = sdp.split(eol)
    trailing = lines and lines[-1] == b""
    if trailing:
        lines.pop()
    ip = ip.encode("ascii") if isinstance(ip, str) else ip
    fam = _family(ip)
    out = []
    session_end = None  # index in out of the first m= line
    for line in lines:
        if line.startswith(b"m=") and session_end is None:
            session_end = len(out)
        if flags & FIX_MEDIA_IP:
            m = _C_LINE.match(line)
            if m is not None and m.group(2) != ip:
                out.append(b"c=IN " + fam + b" " + ip + m.group(3))
                old = m.group(2)
                out.append((b"a=oldmediaip6:" if m.group(1) == b"IP6" else b"a=oldmediaip:") + old)
                continue
            m = _RTCP_LINE.match(line)
            if m is not None:
                out.append(m.group(1) + fam + b" " + ip + m.group(4))
                continue
        if flags & FIX_ORIGIN_IP:
            m = _O_LINE.match(line)
            if m is not None:
                out.append(m.group(1) + fam + b" " + ip + m.group(4))
                continue
        out.append(line)
    extra = []
    if flags & FIX_DIRECTION and b"a=direction:active" not in out:
        extra.append(b"a=direction:active")
    if flags & FIX_NORTPPROXY and b"a=nortpproxy:yes" not in out:
        extra.append(b"a=nortpproxy:yes")
    if extra:
        # session-level attributes: before the first m= line
        at = session_end if session_end is not None else len(out)
        out[at:at] = extra
    text = eol.join(out)
    return text + eol if trailing else text
