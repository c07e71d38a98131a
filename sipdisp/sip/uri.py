"""SIP and SIPS URIs (RFC 3261 section 19.1), with IPv6 references (RFC 5118).

A URI keeps the exact text it was parsed from and is only re-serialized after
a change, so forwarding never rewrites what sipdisp did not touch.
"""

import re
from urllib.parse import unquote

from .errors import SipParseError
from ._plain import python_class
from .headers import format_params, get_param, parse_params

# hostname = *( domainlabel "." ) toplabel [ "." ] (RFC 3261 section 25.1):
# no empty label, no label beginning or ending with a dash. "_" is tolerated
# (not in the grammar, but in real host names); a label may start with a digit
# (RFC 1123) but a name whose last label does must be an IPv4 literal.
_HOSTNAME_MATCH = re.compile(
    r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?\.)*"
    r"[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?\.?\Z").match
# IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT, each <= 255
_IPV4_MATCH = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\Z").match
# hosts already checked, each with its lower-case form (they repeat: the
# same peers send every message, and a completed transaction's key or a
# binding keeps one shared copy); bounded, since host names come from the
# network
_good_hosts: dict[str, str] = {}
# ports already checked, by their text: one int object each (a port above
# 256 is a new object per parse otherwise); bounded as the hosts
_good_ports: dict[str, int] = {}
# characters a user part may not hold raw
_USER_BAD_CHAR = re.compile(r'[ \t<>"]').search
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443, "sctp": 5060}


@python_class
class URI:
    """A parsed URI. ``scheme`` is lower-case; non-SIP schemes keep ``opaque``.

    For ``sip:``/``sips:``: ``user``, ``password`` (or None), ``host`` (IPv6
    without brackets), ``port`` (int or None), ``params`` (list of
    ``(name, value)``), ``headers`` (the text after ``?`` or '').
    """

    __slots__ = ("scheme", "user", "password", "host", "port", "params",
                 "headers", "opaque", "_text")

    def __init__(self, scheme="sip", user=None, host="", port=None, params=None,
                 headers="", password=None, opaque=None):
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = params if params is not None else []
        self.headers = headers
        self.opaque = opaque
        self._text = None

    @property
    def is_sip(self) -> bool:
        """True for sip: and sips: URIs."""
        return self.opaque is None

    def param(self, name):
        """Value of a URI parameter ('' when present without value, else None)."""
        return get_param(self.params, name)

    def set_param(self, name, value=None):
        """Add or replace a URI parameter."""
        low = name.lower()
        self.params = [(n, v) for n, v in self.params if n.lower() != low]
        self.params.append((name, value))
        self._text = None

    def remove_param(self, name):
        """Drop a URI parameter if present."""
        low = name.lower()
        self.params = [(n, v) for n, v in self.params if n.lower() != low]
        self._text = None

    @property
    def transport(self) -> str:
        """The lower-case ``transport`` parameter, defaulting by scheme."""
        value = self.param("transport")
        if value:
            return value.lower()
        return "tls" if self.scheme == "sips" else "udp"

    @property
    def host_port(self) -> tuple:
        """``(host, port)`` with the default port for the transport filled in."""
        port = self.port
        if port is None:
            port = 5061 if self.scheme == "sips" else DEFAULT_PORTS.get(self.transport, 5060)
        return self.host, port

    @property
    def user_unescaped(self) -> "str | None":
        """The user part with %-escapes decoded (RFC 3261 section 19.1.4)."""
        return unquote(self.user, errors="surrogateescape") if self.user else self.user

    def copy(self):
        """An independent copy."""
        other = URI.__new__(URI)
        for slot in URI.__slots__:
            setattr(other, slot, getattr(self, slot))
        other.params = list(self.params)
        return other

    def __str__(self):
        if self._text is None:
            self._text = self._format()
        return self._text

    def _format(self):
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(f"[{self.host}]" if ":" in self.host else self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers:
            out.append("?" + self.headers)
        return "".join(out)

    def __repr__(self):
        return f"<URI {self}>"

    def __eq__(self, other):
        return isinstance(other, URI) and str(self) == str(other)

    def __hash__(self):
        return hash(str(self))


def parse_uri(text: str) -> URI:
    """Parse a URI; raises SipParseError(400) when it is malformed.

    Unknown schemes parse (their text is kept opaque) so that the proxy can
    answer 416 rather than 400 (RFC 4475 section 3.3.1).
    """
    colon = text.find(":")
    if colon <= 0:
        raise SipParseError(f"Malformed URI {text[:80]!r}")
    scheme = text[:colon]
    if scheme != "sip" and scheme != "sips":  # what nearly every URI says
        if not all(ch in _SCHEME_CHARS for ch in scheme) or not scheme[0].isalpha():
            raise SipParseError(f"Malformed URI scheme {scheme[:40]!r}")
        scheme = scheme.lower()
    rest = text[colon + 1:]
    if scheme not in ("sip", "sips"):
        if not rest or " " in rest:
            raise SipParseError(f"Malformed URI {text[:80]!r}")
        uri = URI(scheme=scheme, opaque=rest)
        uri._text = text
        return uri
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1:]
        if not userinfo:
            raise SipParseError("Empty user part in URI")
        user, sep, pw = userinfo.partition(":")
        if sep:
            password = pw
        if not user or _USER_BAD_CHAR(userinfo):
            raise SipParseError(f"Malformed user part in URI {text[:80]!r}")
    headers = ""
    q = rest.find("?")
    if q >= 0:
        headers = rest[q + 1:]
        rest = rest[:q]
    semi = rest.find(";")
    if semi >= 0:
        params = parse_params(rest[semi:], "URI")
        hostport = rest[:semi]
    else:
        params = []
        hostport = rest
    host, port = parse_hostport(hostport, "URI")
    uri = URI(scheme, user, host, port, params, headers, password)
    uri._text = text
    return uri


def parse_hostport(text: str, what: str = "host") -> tuple[str, int | None]:
    """Parse ``host[:port]`` with ``[v6]`` references; returns ``(host, port)``.

    ``host`` is lower-cased and IPv6 loses its brackets; ``port`` is None when
    absent. Raises SipParseError(400) on a malformed value.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"Unterminated IPv6 reference in {what}")
        host = text[1:end]
        if not host or not all(ch in _IPV6_CHARS for ch in host) or host.count(":") < 2:
            raise SipParseError(f"Malformed IPv6 reference in {what}")
        rest = text[end + 1:]
        if rest and rest[0] != ":":
            raise SipParseError(f"Malformed {what} {text[:80]!r}")
        port_text = rest[1:] if rest else None
        lower = host.lower()
    else:
        host, sep, port_text = text.partition(":")
        if not sep:
            port_text = None
        cached = _good_hosts.get(host)
        if cached is None:
            _check_host(host, text, what)
            cached = _good_hosts.get(host) or host.lower()
        lower = cached
    if port_text is None:
        return lower, None
    port = _good_ports.get(port_text)
    if port is None:
        if not port_text.isdigit() or len(port_text) > 5 or not port_text.isascii():
            raise SipParseError(f"Malformed {what} port {text[:80]!r}")
        port = int(port_text)
        if port > 65535:
            raise SipParseError(f"{what} port out of range")
        if len(_good_ports) < 4096:
            _good_ports[port_text] = port
    return lower, port


def _check_host(host: str, text: str, what: str) -> None:
    """Raise unless ``host`` is a hostname or IPv4 literal RFC 3261 accepts."""
    ipv4 = _IPV4_MATCH(host)
    if ipv4 is not None:
        if any(int(octet) > 255 for octet in ipv4.groups()):
            raise SipParseError(f"Malformed {what} IPv4 address {text[:80]!r}")
    elif not _HOSTNAME_MATCH(host) or host.rstrip(".").rpartition(".")[2][0].isdigit():
        # the second test: "1.2.3", "1.2.3.4.5", "10.0.0.256x" are neither a
        # name (toplabel starts with a letter) nor an IPv4 literal
        raise SipParseError(f"Malformed {what} host {text[:80]!r}")
    if len(_good_hosts) < 4096:
        _good_hosts[host] = host.lower()


def format_hostport(host, port=None):
    """``host[:port]`` with IPv6 in brackets."""
    if ":" in host:
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"
