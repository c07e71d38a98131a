"""name-addr / addr-spec values: From, To, Contact, Route, Record-Route
(RFC 3261 sections 20.10, 20.20, 20.39 and the grammar of section 25.1)."""

import re

from .errors import SipParseError
from ._plain import python_class
from .headers import format_params, get_param, parse_params
from .uri import parse_uri

# header params after "<URI>" of the plain kind: ;token or ;token=token
# (what From and To carry: ;tag=...). No quote, "<" or ">" can hide in them.
_PLAIN_TAIL_MATCH = re.compile(
    r"(?:[ \t]*;[ \t]*[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]*=[ \t]*[A-Za-z0-9\-.!%*_+`'~]+)?)*"
    r"[ \t]*\Z").match
# "display <URI>" heads that parsed (From/To of the same peers repeat with
# new tags); bounded, since they come from the network
_good_heads: set[str] = set()


@python_class
class Address:
    """``display <uri>;params`` or a bare ``uri;params``.

    ``display`` keeps its quotes if it had them; ``params`` are the header
    parameters (``tag``, ``q``, ``expires``, ``+sip.instance`` ...), which in
    the bare form are everything after the URI's first ``;`` (section 20.10).
    """

    __slots__ = ("display", "uri", "params", "bracketed", "_text")

    def __init__(self, uri, display=None, params=None, bracketed=True):
        self.uri = uri
        self.display = display
        self.params = params if params is not None else []
        self.bracketed = bracketed
        self._text = None

    def param(self, name):
        """Value of a header parameter ('' for a bare one, None if absent)."""
        return get_param(self.params, name)

    def set_param(self, name, value=None):
        """Add or replace a header parameter."""
        low = name.lower()
        self.params = [(n, v) for n, v in self.params if n.lower() != low]
        self.params.append((name, value))
        self._text = None

    @property
    def tag(self) -> "str | None":
        """The ``tag`` parameter or None."""
        return self.param("tag")

    def __str__(self):
        if self._text is None:
            if self.bracketed or self.display:
                head = f"{self.display} <{self.uri}>" if self.display else f"<{self.uri}>"
            else:
                head = str(self.uri)
            self._text = head + format_params(self.params)
        return self._text

    def __repr__(self):
        return f"<Address {self}>"


def parse_address(text: str, what: str = "address") -> Address:
    """Parse one name-addr or addr-spec (with header params); SipParseError on error."""
    text = text.strip()
    if not text:
        raise SipParseError(f"Empty {what}")
    display: str | None = None
    if text[0] == '"':
        end = _end_of_quoted(text)
        if end < 0:
            raise SipParseError(f"Unterminated quoted display name in {what}")
        display = text[:end + 1]
        rest = text[end + 1:].lstrip()
        if not rest.startswith("<"):
            raise SipParseError(f"Quoted display name without <URI> in {what}")
    else:
        lt = text.find("<")
        if lt > 0:
            display = text[:lt].strip() or None
            if display and ('"' in display or any(c in display for c in ";,@:>")):
                raise SipParseError(f"Malformed display name in {what}")
        rest = text[lt:] if lt >= 0 else text
    if rest.startswith("<"):
        gt = rest.find(">")
        if gt < 0:
            raise SipParseError(f"Unterminated <URI> in {what}")
        uri_text = rest[1:gt].strip()
        if not uri_text or " " in uri_text:
            raise SipParseError(f"Malformed URI in {what}")
        uri = parse_uri(uri_text)
        tail = rest[gt + 1:].strip()
        if tail and tail[0] != ";":
            raise SipParseError(f"Unexpected text after <URI> in {what}")
        params = parse_params(tail, what) if tail else []
        addr = Address(uri, display, params, True)
    else:
        # addr-spec form: the URI cannot carry parameters or headers here,
        # everything after the first ';' belongs to the header (section 20.10).
        if any(ch in rest for ch in " \t"):
            uri_text, sep, tail = rest.partition(";")
            if uri_text.strip() and " " not in uri_text.strip():
                rest = uri_text.strip() + sep + tail
            else:
                raise SipParseError(f"Malformed {what}: whitespace in addr-spec")
        uri_text, sep, tail = rest.partition(";")
        uri = parse_uri(uri_text)
        params = parse_params(tail, what) if sep else []
        addr = Address(uri, None, params, False)
    addr._text = text
    return addr


def check_address(text: str, what: str = "address") -> None:
    """Raise SipParseError unless ``text`` parses as :func:`parse_address`
    would parse it, without building the Address when it can tell.

    The part up to the first ``>`` (display name and ``<URI>``) decides
    alone when what follows is plain ``;name=value`` params: that head is
    remembered once a whole value with it parsed, so a caller's next From
    with a new tag costs a set lookup and a regex match (sanity_check's
    From/To URI checks on every request)."""
    gt = text.find(">")
    if gt > 0:
        head = text[:gt + 1]
        if head in _good_heads and _PLAIN_TAIL_MATCH(text, gt + 1) is not None:
            return
    parse_address(text, what)
    if gt > 0 and "<" in head and _PLAIN_TAIL_MATCH(text, gt + 1) is not None:
        if len(_good_heads) >= 4096:
            # start afresh rather than stop learning: a registrar sees a new
            # user in every REGISTER, whose To repeats the head of its From
            _good_heads.clear()
        _good_heads.add(head)


def _end_of_quoted(text: str) -> int:
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i
        i += 1
    return -1
