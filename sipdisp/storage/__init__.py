"""
sipdisp storage: one asynchronous, table-oriented API over SQLite,
PostgreSQL (txpostgres), MySQL/MariaDB (pymysql) or memory.

    storage = open_storage("postgres://sipdisp:pw@127.0.0.1/sipdisp",
                           spool_dir="var/spool")
    yield storage.start()
    yield storage.insert("acc", {"method": "INVITE", "callid": cid, ...})
    rows = yield storage.select("dispatcher", where={"setid": 1})

See docs/storage.md for the API, the backends and outage behaviour.
"""

from .base import (QueueFull, StorageError, StorageStopped, StorageUnavailable,
                   UnknownColumn, UnknownTable)
from .core import Storage, TableCache
from .query import ge, gt, le, lt, ne
from .retry import RECONNECT
from .schema import SCHEMA, TABLES
from .service import StorageService
from .url import DatabaseURL, redact

__all__ = [
    "open_storage", "Storage", "StorageService", "TableCache", "DatabaseURL",
    "StorageError", "StorageUnavailable", "QueueFull", "StorageStopped",
    "UnknownTable", "UnknownColumn", "SCHEMA", "TABLES", "redact",
    "lt", "le", "gt", "ge", "ne",
]


def open_storage(url, spool_dir=None, write_queue_max=100000, reactor=None,
                 schema=None, **options):
    """A :class:`Storage` for a database URL (not started yet).

    *spool_dir* enables the disk spool of call records and registrations;
    *options* are passed to :class:`Storage` (``batch_max``,
    ``retry_initial``, ``retry_max``, ``ping_interval``, ``fsync_interval``,
    ``stop_timeout``, ``spool_tables``).
    """
    from .backends import make_backend

    if reactor is None:
        from twisted.internet import reactor
    parsed = url if isinstance(url, DatabaseURL) else DatabaseURL(url)
    schema = schema if schema is not None else SCHEMA
    backend = make_backend(parsed, schema, reactor)
    if hasattr(backend, "retry"):
        backend.retry = (options.get("retry_initial", RECONNECT.initial),
                         options.get("retry_max", RECONNECT.maximum))
    return Storage(backend, schema=schema, spool_dir=spool_dir,
                   write_queue_max=write_queue_max, reactor=reactor, **options)
