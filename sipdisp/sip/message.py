"""SIP requests and responses as plain objects (RFC 3261 section 7).

Headers are kept in arrival order as ``(key, name, value)`` tuples: ``key``
is the canonical lower-case name (compact forms expanded), ``name`` the
spelling on the wire, ``value`` the unfolded text. Values a proxy does not
interpret are never re-parsed or re-written.
"""

from .address import parse_address
from .errors import SipParseError
from ._plain import python_class
from .headers import display_name, header_key, split_commas
from .via import parse_via


@python_class
class Message:
    """Common part of requests and responses."""

    __slots__ = ("headers", "body", "call_id", "cseq", "cseq_method",
                 "from_tag", "to_tag", "via")

    is_request = False

    def __init__(self, headers=None, body=b""):
        self.headers = headers if headers is not None else []
        self.body = body
        self.call_id = None
        self.cseq = None
        self.cseq_method = None
        self.from_tag = None
        self.to_tag = None
        self.via = None

    # -- reading ---------------------------------------------------------
    def get(self, key: str, default=None):
        """The first value of header ``key`` (canonical lower-case name)."""
        k: str
        for k, _, v in self.headers:
            if k == key:
                return v
        return default

    def get_all(self, key: str) -> list:
        """Every header line's value for ``key``, in order (not comma-split)."""
        k: str
        return [v for k, _, v in self.headers if k == key]

    def values(self, key: str) -> list[str]:
        """Every element of a list-valued header across all its lines."""
        out: list[str] = []
        k: str
        for k, _, v in self.headers:
            if k == key:
                out.extend(split_commas(v))
        return out

    def has(self, key: str) -> bool:
        """True if header ``key`` is present."""
        k: str
        for k, _, _ in self.headers:
            if k == key:
                return True
        return False

    def address(self, key):
        """Header ``key`` parsed as one name-addr (From, To ...), or None."""
        value = self.get(key)
        return None if value is None else parse_address(value, display_name(key))

    def addresses(self, key):
        """Every element of a list-valued address header (Contact, Route ...)."""
        return [parse_address(v, display_name(key)) for v in self.values(key) if v]

    def vias(self):
        """All Via values, parsed."""
        return [parse_via(v) for v in self.values("via")]

    # -- writing ---------------------------------------------------------
    def add(self, key, value, name=None):
        """Append a header line."""
        self.headers.append((key, name or display_name(key), value))

    def set(self, key, value, name=None):
        """Replace every line of ``key`` by one, in the first one's place."""
        for i, (k, n, _) in enumerate(self.headers):
            if k == key:
                self.headers[i] = (k, name or n, value)
                self.headers[i + 1:] = [h for h in self.headers[i + 1:] if h[0] != key]
                return
        self.add(key, value, name)

    def remove(self, key):
        """Drop every line of header ``key``; returns how many were removed."""
        before = len(self.headers)
        self.headers = [h for h in self.headers if h[0] != key]
        return before - len(self.headers)

    def prepend(self, key, value, name=None):
        """Insert a value in front of every existing one of ``key`` (Via, Record-Route)."""
        entry = (key, name or display_name(key), value)
        for i, h in enumerate(self.headers):
            if h[0] == key:
                self.headers.insert(i, entry)
                return
        # Via goes on top of the message; other headers near the top too.
        self.headers.insert(0, entry)

    def pop_first(self, key):
        """Remove and return the first element of a list-valued header."""
        for i, (k, n, v) in enumerate(self.headers):
            if k == key:
                parts = split_commas(v) if "," in v else [v]
                first = parts[0]
                if len(parts) > 1:
                    self.headers[i] = (k, n, ", ".join(parts[1:]))
                else:
                    del self.headers[i]
                return first
        return None

    def copy(self):
        """A copy whose header list can be changed independently."""
        other = self.__class__.__new__(self.__class__)
        for cls in type(self).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                setattr(other, slot, getattr(self, slot))
        other.headers = list(self.headers)
        return other

    # -- serializing -----------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialize with a Content-Length that matches the body."""
        body = self.body
        length = str(len(body))
        lines: list[str] = [self.start_line()]  # type: ignore[attr-defined]  # in both subclasses
        seen_length = False
        key: str
        for key, name, value in self.headers:
            if key == "content-length":
                if seen_length:
                    continue
                seen_length = True
                value = length
            lines.append(f"{name}: {value}")
        if not seen_length:
            lines.append(f"Content-Length: {length}")
        lines.append("")
        lines.append("")
        head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
        return head + body if body else head

    def __bytes__(self):
        # a method, not ``__bytes__ = to_bytes``: mypyc builds a class body
        # before its methods exist, so the alias would not compile
        return self.to_bytes()


@python_class
class Request(Message):
    """A SIP request: ``method``, ``uri`` (a parsed URI) and headers."""

    __slots__ = ("method", "uri")
    is_request = True

    def __init__(self, method, uri, headers=None, body=b""):
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    def start_line(self):
        return f"{self.method} {self.uri} SIP/2.0"

    def __repr__(self):
        return f"<Request {self.method} {self.uri} call-id={self.call_id}>"


@python_class
class Response(Message):
    """A SIP response: ``status``, ``reason`` and headers."""

    __slots__ = ("status", "reason")

    def __init__(self, status, reason="", headers=None, body=b""):
        super().__init__(headers, body)
        self.status = status
        self.reason = reason

    def start_line(self):
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self):
        return f"<Response {self.status} {self.reason} call-id={self.call_id}>"


def make_response(request, status, reason, to_tag=None, extra=(), record_route=False):
    """A response to ``request`` (RFC 3261 section 8.2.6.2): copies Via, From,
    To, Call-ID and CSeq, adds ``to_tag`` to To if To has none; with
    ``record_route`` also Record-Route, as a UAS does (section 12.1.1)."""
    rr = "record-route" if record_route and 100 < status < 300 else ""
    headers = []
    for key, name, value in request.headers:
        if key in ("via", "from", "call-id", "cseq", rr):
            headers.append((key, name, value))
        elif key == "to":
            if to_tag and request.to_tag is None and status > 100:
                value = f"{value};tag={to_tag}"
            headers.append((key, name, value))
    for key, value in extra:
        headers.append((key, display_name(key), value))
    resp = Response(status, reason, headers)
    resp.call_id = request.call_id
    resp.cseq = request.cseq
    resp.cseq_method = request.cseq_method
    resp.from_tag = request.from_tag
    resp.to_tag = request.to_tag if request.to_tag is not None or status == 100 else to_tag
    resp.via = request.via
    return resp


def header_line(name, value):
    """``(key, name, value)`` for a header created by sipdisp."""
    return (header_key(name), name, value)


__all__ = ["Message", "Request", "Response", "make_response", "header_line",
           "SipParseError"]
