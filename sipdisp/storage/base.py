"""
Errors, the queued write operation and the backend interface.
"""

import base64
import datetime
import decimal

from .query import Op


class StorageError(Exception):
    """Base class of storage errors."""


class StorageUnavailable(StorageError):
    """The database cannot be reached and no in-memory copy can answer."""


class QueueFull(StorageError):
    """The bounded write queue is full; the write was not accepted."""


class StorageStopped(StorageError):
    """The storage has been stopped."""


class UnknownTable(ValueError):
    """A table name that is not in the schema."""


class UnknownColumn(ValueError):
    """A column name that is not in the table's schema."""


class WriteOp:
    """One queued write: ``insert``, ``update``, ``delete`` or ``upsert``.

    ``row`` holds the inserted row or the values to set; ``where`` the
    condition (update, delete); ``keys`` the columns identifying an upsert.
    ``deferred`` fires when the write is committed (None for writes replayed
    from the spool). ``spooled`` says the op is journalled on disk.
    """

    __slots__ = ("seq", "kind", "table", "row", "where", "keys", "deferred",
                 "spooled")

    def __init__(self, seq, kind, table, row=None, where=None, keys=None,
                 deferred=None, spooled=False):
        self.seq = seq
        self.kind = kind
        self.table = table
        self.row = row or {}
        self.where = where or {}
        self.keys = tuple(keys or ())
        self.deferred = deferred
        self.spooled = spooled

    def to_json(self):
        """A JSON-ready dict (values tagged so types survive the round trip)."""
        out = {"seq": self.seq, "kind": self.kind, "table": self.table}
        if self.row:
            out["row"] = {k: encode(v) for k, v in self.row.items()}
        if self.where:
            out["where"] = {k: encode(v) for k, v in self.where.items()}
        if self.keys:
            out["keys"] = list(self.keys)
        return out

    @classmethod
    def from_json(cls, data):
        """The inverse of :meth:`to_json`."""
        return cls(data["seq"], data["kind"], data["table"],
                   {k: decode(v) for k, v in data.get("row", {}).items()},
                   {k: decode(v) for k, v in data.get("where", {}).items()},
                   data.get("keys"), spooled=True)

    def __repr__(self):
        return "WriteOp(%d, %s %s)" % (self.seq, self.kind, self.table)


def encode(value):
    """Tag a value for JSON: datetimes, dates, bytes, decimals, ops, sets."""
    if isinstance(value, datetime.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"$d": value.isoformat()}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, decimal.Decimal):
        return {"$dec": str(value)}
    if isinstance(value, Op):
        return {"$op": value.op, "v": encode(value.value)}
    if isinstance(value, (list, tuple, set, frozenset)):
        return {"$in": [encode(v) for v in value]}
    return value


def decode(value):
    """The inverse of :func:`encode`."""
    if not isinstance(value, dict):
        return value
    if "$dt" in value:
        return datetime.datetime.fromisoformat(value["$dt"])
    if "$d" in value:
        return datetime.date.fromisoformat(value["$d"])
    if "$b" in value:
        return base64.b64decode(value["$b"])
    if "$dec" in value:
        return decimal.Decimal(value["$dec"])
    if "$op" in value:
        return Op(value["$op"], decode(value["v"]))
    if "$in" in value:
        return [decode(v) for v in value["$in"]]
    raise ValueError("unknown tagged value %r" % (value,))


class Backend:
    """What :class:`~sipdisp.storage.core.Storage` needs from a backend.

    Every method returns a Deferred. ``write_batch`` runs its ops in one
    transaction, in order, and fires with one result per op (rows touched).
    ``is_transient(failure)`` tells a lost or unreachable database (queue
    and retry) from an error in the statement itself (fail that write).
    """

    dialect = None
    url = None

    def connect(self):
        raise NotImplementedError

    def close(self):
        raise NotImplementedError

    def ping(self):
        raise NotImplementedError

    def write_batch(self, ops):
        raise NotImplementedError

    def select(self, table, where=None, columns=None, order_by=None, limit=None):
        raise NotImplementedError

    def run_query(self, sql, params=()):
        raise NotImplementedError

    def describe(self, table):
        """Fire with ``{column: (family, length)}`` or None if no such table."""
        raise NotImplementedError

    def listen(self, channel, callback):
        raise NotImplementedError("%s has no LISTEN/NOTIFY" % self.dialect)

    def notify(self, channel, payload):
        raise NotImplementedError("%s has no LISTEN/NOTIFY" % self.dialect)

    def is_transient(self, failure):
        raise NotImplementedError


def type_family(declared):
    """Map a declared SQL type (any dialect) to a schema column family."""
    t = (declared or "").lower()
    if "int" in t or t == "serial" or t == "bigserial":
        return "int"
    if "char" in t or "text" in t or "clob" in t:
        return "string"
    if any(k in t for k in ("real", "floa", "doub", "numeric", "decimal")):
        return "float"
    if "time" in t or "date" in t:
        return "datetime"
    if "blob" in t or t in ("bytea", "binary", "varbinary"):
        return "binary"
    return t or "unknown"
