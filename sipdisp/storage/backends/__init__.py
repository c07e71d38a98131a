"""
Storage backends, chosen by the scheme of the database URL.

Each module is imported only when its URL is used, so a sipdisp on SQLite
never needs psycopg2 or pymysql.
"""

import importlib

_MODULES = {
    "memory": ("memory", "MemoryBackend"),
    "sqlite": ("sqlite", "SQLiteBackend"),
    "postgres": ("postgres", "PostgresBackend"),
    "mysql": ("mysql", "MySQLBackend"),
}


def make_backend(url, schema, reactor):
    """A backend for a parsed :class:`~sipdisp.storage.url.DatabaseURL`."""
    module, name = _MODULES[url.backend]
    cls = getattr(importlib.import_module(__name__ + "." + module), name)
    return cls(url, schema, reactor=reactor)
