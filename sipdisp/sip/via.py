"""Via header values (RFC 3261 section 20.42, RFC 3581 rport)."""

import re

from .errors import SipParseError
from ._plain import python_class
from .headers import format_params, get_param, parse_params
from .uri import DEFAULT_PORTS, format_hostport, parse_hostport

MAGIC_COOKIE = "z9hG4bK"

# transport = "UDP" / "TCP" / "TLS" / "SCTP" / other-transport (a token);
# RFC 4475 3.1.1.10 has unknown ones, letters, digits and dashes are enough
_TRANSPORT_MATCH = re.compile(r"[A-Za-z0-9\-]+\Z").match
# sent-by = host [ COLON port ], COLON = SWS ":" SWS: LWS only around the colon
_SENT_BY_COLON = re.compile(r"[ \t]*:[ \t]*")


@python_class
class Via:
    """One Via value: ``SIP/2.0/<transport> host[:port];params``.

    ``branch`` is the branch parameter (None if absent), read once here: the
    transaction layer and the core ask for it about 17 times per call.
    Change ``params`` through :meth:`set_param`, which keeps it current."""

    __slots__ = ("transport", "host", "port", "params", "_text", "branch")

    def __init__(self, transport, host, port=None, params=None):
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params if params is not None else []
        self._text = None
        self.branch = get_param(self.params, "branch")

    def param(self, name):
        """A parameter's value ('' if bare, None if absent)."""
        return get_param(self.params, name)

    def set_param(self, name, value=None):
        """Add or replace a parameter, keeping the others in order."""
        low = name.lower()
        for i, (n, _) in enumerate(self.params):
            if n.lower() == low:
                self.params[i] = (n, value)
                break
        else:
            self.params.append((name, value))
        self._text = None
        if low == "branch":
            self.branch = "" if value is None else value

    @property
    def sent_by(self) -> tuple:
        """``(host, port)`` as written, with the transport's default port."""
        return self.host, self.port or DEFAULT_PORTS.get(self.transport.lower(), 5060)

    def response_address(self):
        """Where a response to this hop goes (RFC 3261 18.2.2, RFC 3581 section 4):
        ``received`` if present, else sent-by host; ``rport`` value if set."""
        host = self.param("received") or self.host
        if host.startswith("["):
            host = host[1:-1]
        rport = self.param("rport")
        if rport:
            return host, int(rport)
        return host, self.port or DEFAULT_PORTS.get(self.transport.lower(), 5060)

    def __str__(self):
        if self._text is None:
            self._text = (f"SIP/2.0/{self.transport} {format_hostport(self.host, self.port)}"
                          f"{format_params(self.params)}")
        return self._text

    def __repr__(self):
        return f"<Via {self}>"


def parse_via(text: str) -> Via:
    """Parse one Via value; LWS around ``/`` is allowed (RFC 4475 3.1.1.1)."""
    text = text.strip()
    if text.startswith("SIP/2.0/"):
        proto_end = text.find(" ", 8)
        if proto_end < 0:
            raise SipParseError("Malformed Via: no sent-by")
        transport = text[8:proto_end]
        rest = text[proto_end + 1:]
    else:
        parts = text.split("/", 2)
        if len(parts) != 3:
            raise SipParseError("Malformed Via protocol")
        name, version, tail = (p.strip() for p in parts)
        if name.upper() != "SIP" or version != "2.0":
            raise SipParseError("Malformed Via protocol")
        tail_parts = tail.split(None, 1)
        if len(tail_parts) != 2:
            raise SipParseError("Malformed Via: no sent-by")
        transport, rest = tail_parts
    if not _TRANSPORT_MATCH(transport):  # str.isalnum() would take non-ASCII letters
        raise SipParseError("Malformed Via transport")
    rest = rest.strip()
    semi = rest.find(";")
    if semi >= 0:
        sent_by, params_text = rest[:semi].strip(), rest[semi:]
        params = parse_params(params_text, "Via")
    else:
        sent_by, params = rest, []
    if " " in sent_by or "\t" in sent_by:
        # "host : port" with LWS is legal (sent-by = host [ COLON port ]);
        # "host:50 60" is not: spaces anywhere else stay and fail below
        sent_by = _SENT_BY_COLON.sub(":", sent_by)
        if " " in sent_by or "\t" in sent_by:
            raise SipParseError("Malformed Via sent-by: spaces inside")
    host, port = parse_hostport(sent_by, "Via sent-by")
    branch: str | None = None
    for name, value in params:
        if len(name) == 6 and branch is None and name.lower() == "branch":
            branch = "" if value is None else value  # as get_param: the first one
        elif value and len(name) == 5 and name.lower() == "rport":
            # response-port = "rport" [EQUAL 1*DIGIT] (RFC 3581): the value is
            # a port responses are sent to, so it must be one
            if not value.isdigit() or not value.isascii() or len(value) > 5 or int(value) > 65535:
                raise SipParseError("Malformed Via rport")
    via = Via.__new__(Via)  # Via() without its get_param pass over params
    via.transport = transport if transport == "UDP" else transport.upper()
    via.host = host
    via.port = port
    via.params = params
    via.branch = branch
    via._text = text
    return via
