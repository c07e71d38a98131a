"""Which web pages may open a SIP WebSocket: the ``Origin`` allowlist
(``websocket.allowed_origins``), plain Python without a reactor.

A browser names the page that opens a WebSocket in ``Origin`` (RFC 6455
section 4.1, RFC 6454) and lets any page connect anywhere, so without this
check a page on any site could use the proxy from inside a network it
trusts (``auth.trusted``). Clients that are not browsers send no Origin;
whether they are let in is ``websocket.allow_missing_origin``.
"""

import re

from ..config.model import ConfigError

# scheme://host[:port]; the host may be a bracketed IPv6 literal
_ORIGIN = re.compile(r"^([a-z][a-z0-9+.-]*)://(\[[0-9a-f:.]+\]|[^/:\[\]@?#\s]+)(?::(\d{1,5}))?/?$")
_HOST = re.compile(r"^(\[[0-9a-f:.]+\]|[^/:\[\]@?#\s*]+)$")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


def parse_origin(value):
    """``(scheme, host, port)`` of an Origin value, lower case, the port filled
    in from the scheme when absent; None for anything else ("null" included)."""
    match = _ORIGIN.match(value.strip().lower())
    if match is None:
        return None
    scheme, host, port = match.groups()
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    else:
        port = int(port)
        if port > 65535:
            return None
    return scheme, host.rstrip("."), port


def _bracket(host):
    """A host as it appears in an Origin: IPv6 literals in brackets."""
    host = host.lower().rstrip(".")
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class OriginPolicy:
    """Decides on the Origin of one handshake.

    ``allowed`` are ``websocket.allowed_origins`` entries; ``own_hosts`` the
    proxy's own names and addresses, accepted with any scheme and port like
    localhost. An entry that does not parse raises ConfigError naming
    ``key``."""

    def __init__(self, allowed=(), own_hosts=(), allow_missing=True,
                 key="websocket.allowed_origins"):
        self.allow_missing = allow_missing
        self.any = False
        self.exact = set()        # (scheme, host, port)
        self.hosts = set()        # any scheme and port
        self.suffixes = []        # ".example.com" from "*.example.com"
        for host in LOCAL_HOSTS:
            self.hosts.add(host)
        for host in own_hosts:
            if host and host.lower() not in _WILDCARD_HOSTS:
                self.hosts.add(_bracket(host))
        for index, entry in enumerate(allowed):
            self._add(entry, f"{key}[{index}]")

    def _add(self, entry, where):
        text = entry.strip().lower()
        if text == "*":
            self.any = True
        elif text.startswith("*.") and _HOST.match(text[2:]):
            self.suffixes.append(text[1:].rstrip("."))
        elif "://" in text:
            parsed = parse_origin(text)
            if parsed is None or parsed[2] is None:
                raise ConfigError(where, f"expected scheme://host[:port], got {entry!r}")
            self.exact.add(parsed)
        elif _HOST.match(text):
            self.hosts.add(_bracket(text))
        else:
            raise ConfigError(where, "expected scheme://host[:port], a host name, "
                                     f"*.domain or *, got {entry!r}")

    def allows(self, values):
        """True if a handshake with Origin header ``values`` (a list of str,
        empty when the header is absent) may proceed."""
        if not values:
            return self.allow_missing
        if len(values) != 1:
            return False  # one page opens one socket: several Origins are forged
        if self.any:
            return True
        parsed = parse_origin(values[0])
        if parsed is None:
            return False  # "null" (sandboxed frames, file://) and junk
        if parsed in self.exact:
            return True
        host = parsed[1]
        return host in self.hosts or any(host.endswith(s) for s in self.suffixes)

    @classmethod
    def from_config(cls, cfg):
        """The policy of a loaded configuration: its own hosts are the WS and
        WSS listen addresses and ``advertise.host``."""
        own = [host for proto in ("ws", "wss") for host, _ in getattr(cfg.listen, proto)]
        if cfg.advertise.host:
            own.append(cfg.advertise.host)
        ws = cfg.websocket
        return cls(ws.allowed_origins, own, ws.allow_missing_origin)
