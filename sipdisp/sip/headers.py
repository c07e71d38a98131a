"""Header names and the small grammar shared by header values.

RFC 3261 section 7.3: header names are case-insensitive and several have a
compact form; section 7.3.1: a header whose grammar is a comma-separated list
may be split over several header lines, or several lines combined into one.
"""

import re

from .errors import SipParseError

#: compact form -> canonical (lower-case) name; RFC 3261 section 20 and the
#: registry of later RFCs (Event, Refer-To, Referred-By, Allow-Events ...).
COMPACT_FORMS = {
    "i": "call-id", "m": "contact", "e": "content-encoding",
    "l": "content-length", "c": "content-type", "f": "from", "s": "subject",
    "k": "supported", "t": "to", "v": "via", "o": "event", "r": "refer-to",
    "b": "referred-by", "u": "allow-events", "x": "session-expires",
    "a": "accept-contact", "j": "reject-contact", "d": "request-disposition",
    "y": "identity", "n": "identity-info",
}

#: canonical key -> the spelling sipdisp writes for headers it creates.
DISPLAY_NAMES = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version", "rack": "RAck", "rseq": "RSeq",
    "sip-etag": "SIP-ETag", "sip-if-match": "SIP-If-Match",  # RFC 3903's spelling
}

#: headers that must appear at most once in a message (RFC 3261 section 7.3.1:
#: they are not lists, so two instances are a malformed message).
SINGLE_HEADERS = frozenset(
    ("call-id", "cseq", "from", "to", "max-forwards", "content-length")
)

# RFC 3261 section 25.1 token; a compiled regex beats a per-character loop.
_TOKEN_MATCH = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z").match

_key_cache: dict[str, str] = {}


def header_key(name: str) -> str:
    """The canonical lower-case key of a header name, compact forms expanded.

    Only names that are valid tokens may be cached here: the parser treats a
    cache hit as an already validated name."""
    key = _key_cache.get(name)
    if key is None:
        low = name.lower()
        key = COMPACT_FORMS.get(low, low)
        if len(_key_cache) < 4096:  # bounded: names come from the network
            _key_cache[name] = key
    return key


_display_cache: dict[str, str] = {}


def display_name(key: str) -> str:
    """The conventional spelling of a header for a canonical ``key``."""
    name = _display_cache.get(key)
    if name is None:
        name = DISPLAY_NAMES.get(key)
        if name is None:
            name = "-".join(part.capitalize() for part in key.split("-"))
        if len(_display_cache) < 1024:  # bounded: a route may name any header
            _display_cache[key] = name
    return name


def is_token(text: str) -> bool:
    """True if ``text`` is a non-empty RFC 3261 token."""
    return _TOKEN_MATCH(text) is not None


def split_commas(value: str) -> list[str]:
    """Split a list-valued header on commas outside quotes and angle brackets.

    Empty elements (as in ``a,,b``) are returned as empty strings so that the
    caller can decide whether the header's grammar allows them.
    """
    if "," not in value:
        return [value.strip()]
    if '"' not in value and "<" not in value:
        return [part.strip() for part in value.split(",")]
    parts = []
    start = 0
    in_quote = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return parts


def parse_params(text: str, what: str = "header") -> list[tuple[str, str | None]]:
    """Parse ``;name[=value]`` pairs (LWS allowed around ``;`` and ``=``).

    Returns a list of ``(name, value)`` with ``value`` None for a bare name and
    quoted values kept with their quotes. Raises SipParseError on an empty or
    malformed parameter, such as ``;;``.
    """
    params: list[tuple[str, str | None]] = []
    if not text.strip():
        return params
    for raw in _split_semicolons(text):
        name, eq, value = raw.partition("=")
        name = name.strip()
        if not is_token(name):
            raise SipParseError(f"Malformed {what} parameter {raw.strip()!r}")
        if eq:
            value = value.strip()
            if not value:
                raise SipParseError(f"Empty value for {what} parameter {name!r}")
            if value[0] == '"':
                if len(value) < 2 or value[-1] != '"':
                    raise SipParseError(f"Unterminated quoted {what} parameter {name!r}")
            params.append((name, value))
        else:
            params.append((name, None))
    return params


def _split_semicolons(text: str) -> list[str]:
    """Split ``;a=1;b="x;y"`` (leading ``;`` optional) outside quoted strings."""
    text = text.strip()
    if text.startswith(";"):
        text = text[1:]
    if '"' not in text:
        return text.split(";")
    parts: list[str] = []
    start, in_quote, i = 0, False, 0
    while i < len(text):
        ch = text[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == ";":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if in_quote:
        raise SipParseError("Unterminated quoted string in parameters")
    parts.append(text[start:])
    return parts


def format_params(params):
    """Serialize ``[(name, value)]`` back to ``;name=value`` form."""
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def get_param(params, name: str):
    """The value of parameter ``name`` (case-insensitive); '' for a bare one."""
    low = name.lower()
    n: str
    for n, v in params:
        if n.lower() == low:
            return "" if v is None else v
    return None
