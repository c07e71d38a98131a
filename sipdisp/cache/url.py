"""OpenSIPS' cachedb URL: ``scheme[:group]://[user:password@]host[:port][/database]``.

    local://
    redis://127.0.0.1:6379/0
    redis:prod://root:Aa123456@192.168.10.114:6379/0
"""

import re
from urllib.parse import unquote

#: the engines sipdisp has
SCHEMES = ("local", "redis")

REDIS_PORT = 6379

_URL = re.compile(r"(?P<scheme>[A-Za-z][\w-]*)(?::(?P<group>[\w.-]+))?://(?P<rest>.*)\Z")


class CacheUrl:
    """A parsed cachedb URL (``password`` is never shown by ``repr``/``safe``)."""

    __slots__ = ("scheme", "group", "user", "password", "host", "port", "database")

    def __init__(self, scheme, group=None, user=None, password=None, host=None, port=None,
                 database=0):
        self.scheme = scheme
        self.group = group
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.database = database

    @property
    def safe(self):
        """The URL with the password masked, for log lines and commands."""
        scheme = self.scheme + (f":{self.group}" if self.group else "")
        if self.scheme == "local":
            return f"{scheme}://"
        auth = ""
        if self.user or self.password:
            auth = (self.user or "") + (":***" if self.password else "") + "@"
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.database}"

    def __repr__(self):
        return f"<CacheUrl {self.safe}>"


def parse_cache_url(text):
    """A :class:`CacheUrl` from ``text``; ValueError with a one-line reason."""
    if not isinstance(text, str):
        raise ValueError(f"expected a cachedb URL such as redis://127.0.0.1:6379/0, got {text!r}")
    m = _URL.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a cachedb URL (scheme://..., such as "
                         "local:// or redis://127.0.0.1:6379/0)")
    scheme, group, rest = m.group("scheme").lower(), m.group("group"), m.group("rest")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown cachedb engine {scheme!r} in {text!r} "
                         f"(known: {', '.join(SCHEMES)})")
    if scheme == "local":
        if rest.strip("/"):
            raise ValueError(f"local:// takes no host or database, got {text!r}")
        return CacheUrl("local", group)
    hostpart, _, path = rest.partition("/")
    auth, at, hostport = hostpart.rpartition("@")
    user = password = None
    if at:
        # as in any URL a lone word is the user; redis://:secret@host is a password alone
        user, colon, password = auth.partition(":")
        user, password = unquote(user) or None, (unquote(password) or None) if colon else None
    host, port = hostport, REDIS_PORT
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ValueError(f"unclosed IPv6 address in {text!r}")
        host, tail = hostport[1:end], hostport[end + 1:]
        if tail:
            if not tail.startswith(":"):
                raise ValueError(f"junk after the IPv6 address in {text!r}")
            port = tail[1:]
    elif ":" in hostport:
        host, port = hostport.rsplit(":", 1)
    if not host:
        raise ValueError(f"no host in {text!r}")
    try:
        port = int(port)
    except ValueError:
        raise ValueError(f"bad port {port!r} in {text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range in {text!r}")
    path = path.strip("/")
    try:
        database = int(path) if path else 0
    except ValueError:
        raise ValueError(f"the database of {text!r} must be a number, got {path!r}") from None
    if database < 0:
        raise ValueError(f"the database of {text!r} must be >= 0")
    return CacheUrl(scheme, group, user, password, host, port, database)
