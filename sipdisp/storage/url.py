"""
Database URLs: ``sqlite:///relative.db``, ``sqlite:////absolute.db``,
``postgres://user:pw@host:port/db`` (also ``postgresql://``),
``mysql://user:pw@host:port/db`` (also ``mariadb://``), ``memory://[name]``.
Query parameters (``?pool=4&timeout=0.5``) carry backend options.
"""

from urllib.parse import parse_qsl, unquote, urlsplit

SCHEMES = {
    "sqlite": "sqlite", "memory": "memory",
    "postgres": "postgres", "postgresql": "postgres",
    "mysql": "mysql", "mariadb": "mysql",
}


class DatabaseURL:
    """A parsed database URL (``backend`` is sqlite/postgres/mysql/memory)."""

    def __init__(self, text):
        self.text = text
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise ValueError("unsupported database URL %r (use sqlite://, "
                             "postgres://, mysql:// or memory://)" % (redact(text),))
        self.backend = SCHEMES[scheme]
        self.params = dict(parse_qsl(parts.query))
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.host = parts.hostname
        self.port = parts.port
        if self.backend == "sqlite":
            # SQLAlchemy's convention: three slashes then a relative path,
            # four for an absolute one.
            path = parts.path[1:] if parts.path.startswith("/") else parts.path
            self.database = unquote(parts.netloc + path) or ":memory:"
        elif self.backend == "memory":
            self.database = (parts.netloc + parts.path).strip("/")
        else:
            self.database = unquote(parts.path.lstrip("/")) or None

    def __str__(self):
        return redact(self.text)


def redact(text):
    """The URL with its password replaced by ``***`` (for logs)."""
    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
