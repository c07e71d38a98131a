"""The location service (Kamailio's usrloc): bindings of addresses-of-record
to contacts, in memory and/or in the ``location`` table.

``db_mode`` has Kamailio's meaning:

0. memory only; a restart forgets every registration.
1. write-through: memory answers lookups, every change is queued to the
   database at once.
2. write-back: memory answers lookups, changes are collected and written
   every ``timer_interval`` seconds (and on stop).
3. database only: nothing is kept in memory; lookups and REGISTERs read the
   table (the route is suspended while they do, see ``suspend.py``), so
   several proxies can share one table.

Modes 1 and 2 load the table at start. All writes go through the storage's
ordered queue (spooled to disk while the database is away). Times are the
clock's seconds (``now``); the table holds local date-times as Kamailio's.
"""

import datetime
import itertools
import os

from twisted.internet import defer

from ..logs import Logger
from ..sip.uri import parse_uri

log = Logger(namespace="sipdisp.usrloc")

TABLE = "location"

# Kamailio's method bits (parser/msg_parser.h) for the ``methods`` column
METHOD_BITS = {
    "INVITE": 1, "CANCEL": 2, "ACK": 4, "BYE": 8, "INFO": 16, "REGISTER": 32,
    "SUBSCRIBE": 64, "NOTIFY": 128, "MESSAGE": 256, "OPTIONS": 512, "PRACK": 1024,
    "UPDATE": 2048, "REFER": 4096, "PUBLISH": 8192,
}
METHOD_OTHER = 16384

# binding flags (``cflags`` column, Kamailio's branch flags of the contact)
FLAG_NAT = 1 << 6        # the seed's FLB_NATB
FLAG_SIPPING = 1 << 7    # the seed's FLB_NATSIPPING

STREAM_PROTOS = frozenset(("tcp", "tls", "ws", "wss"))


def method_bit(method):
    """Kamailio's bit for ``method`` (METHOD_OTHER for the rest)."""
    return METHOD_BITS.get(method, METHOD_OTHER)


def methods_mask(names):
    """The bitmask of an ``Allow`` list or a ``methods`` contact parameter."""
    mask = 0
    for name in names:
        name = name.strip().strip('"').upper()
        if name:
            mask |= method_bit(name)
    return mask


class Binding:
    """One contact of an address-of-record (a row of ``location``).

    ``expires`` is absolute (clock seconds); ``conn_id`` names the stream
    connection the contact was registered over when it is reachable only
    through it (TCP, TLS, WS, WSS), else None; ``proto`` is the transport
    it registered over; ``received`` is ``sip:ip:port;transport=...`` of a
    NATed contact (``fix_nated_register``); ``path`` a tuple of Path values.
    """

    __slots__ = ("ruid", "aor", "username", "domain", "contact", "received", "path",
                 "expires", "q", "callid", "cseq", "flags", "cflags", "user_agent",
                 "socket", "methods", "instance", "reg_id", "conn_id", "proto",
                 "last_modified", "in_db", "_key")

    def __init__(self, ruid, aor, username, domain, contact, expires, q=1.0, callid="",
                 cseq=1, received=None, path=(), flags=0, cflags=0, user_agent="",
                 socket=None, methods=None, instance=None, reg_id=0, conn_id=None,
                 proto="udp", last_modified=0.0):
        self.ruid = ruid
        self.aor = aor
        self.username = username
        self.domain = domain
        self.contact = contact
        self.expires = expires
        self.q = q
        self.callid = callid
        self.cseq = cseq
        self.received = received
        self.path = tuple(path or ())
        self.flags = flags
        self.cflags = cflags
        self.user_agent = user_agent
        self.socket = socket
        self.methods = methods
        self.instance = instance
        self.reg_id = reg_id
        self.conn_id = conn_id
        self.proto = proto
        self.last_modified = last_modified
        self.in_db = False
        self._key = None

    def copy(self, **changes):
        """A copy with some fields changed."""
        other = Binding.__new__(Binding)
        for slot in Binding.__slots__:
            setattr(other, slot, getattr(self, slot))
        for name, value in changes.items():
            setattr(other, name, value)
        if "contact" in changes:
            other._key = None
        return other

    @property
    def key(self):
        """The contact URI normalised for comparison (RFC 3261 19.1.4, simplified)."""
        key = self._key
        if key is None:
            key = self._key = contact_key(self.contact)
        return key

    def allows(self, method):
        """True if the contact accepts ``method`` (no methods known: everything)."""
        return self.methods is None or bool(self.methods & method_bit(method))

    def to_row(self, server_id=0):
        """The ``location`` row (Kamailio's columns)."""
        return {
            "ruid": self.ruid, "username": self.username, "domain": self.domain,
            "contact": self.contact, "received": self.received,
            "path": ",".join(self.path) if self.path else None,
            "expires": _to_datetime(self.expires), "q": self.q, "callid": self.callid,
            "cseq": self.cseq, "last_modified": _to_datetime(self.last_modified),
            "flags": self.flags, "cflags": self.cflags, "user_agent": self.user_agent[:255],
            "socket": self.socket, "methods": self.methods, "instance": self.instance,
            "reg_id": self.reg_id, "server_id": server_id,
            "connection_id": self.conn_id if self.conn_id is not None else -1,
            "keepalive": 1 if self.cflags & FLAG_SIPPING else 0,
        }

    @classmethod
    def from_row(cls, row, use_domain):
        """A Binding from a ``location`` row. The connection it was bound to
        belongs to an earlier run, so a stream contact restored from the
        table is unreachable until it registers again."""
        username, domain = row.get("username") or "", row.get("domain")
        socket = row.get("socket") or None
        proto = socket.split(":", 1)[0] if socket else "udp"
        path = tuple(p for p in (row.get("path") or "").split(",") if p) if row.get("path") else ()
        b = cls(row.get("ruid") or "", aor_key(username, domain, use_domain), username, domain,
                row.get("contact") or "", _from_datetime(row.get("expires")),
                q=float(row.get("q") if row.get("q") is not None else 1.0),
                callid=row.get("callid") or "", cseq=int(row.get("cseq") or 0),
                received=row.get("received") or None, path=path,
                flags=int(row.get("flags") or 0), cflags=int(row.get("cflags") or 0),
                user_agent=row.get("user_agent") or "", socket=socket,
                methods=row.get("methods"), instance=row.get("instance") or None,
                reg_id=int(row.get("reg_id") or 0), conn_id=None, proto=proto,
                last_modified=_from_datetime(row.get("last_modified")))
        b.in_db = True
        return b

    def describe(self, now):
        """A JSON-friendly dict (``ul.dump`` / ``ul.lookup``), Kamailio's field names."""
        return {"Contact": self.contact, "Expires": max(0, int(round(self.expires - now))),
                "Q": self.q, "Call-ID": self.callid, "CSeq": self.cseq,
                "User-Agent": self.user_agent, "Received": self.received,
                "Path": ",".join(self.path) if self.path else None,
                "Socket": self.socket, "Methods": self.methods, "Ruid": self.ruid,
                "Instance": self.instance, "Reg-Id": self.reg_id,
                "Connection-Id": self.conn_id, "Cflags": self.cflags,
                "Last-Modified": int(self.last_modified)}

    def __repr__(self):
        return f"<Binding {self.aor} {self.contact} expires={self.expires}>"


def _to_datetime(t):
    return datetime.datetime.fromtimestamp(int(t)) if t else datetime.datetime(2000, 1, 1)


def _from_datetime(value):
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, str) and value:
        try:
            return datetime.datetime.fromisoformat(value).timestamp()
        except ValueError:
            return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return 0.0


def aor_key(username, domain, use_domain):
    """The address-of-record key: ``user@domain`` with ``use_domain``, else ``user``."""
    if use_domain and domain:
        return f"{username}@{domain.lower()}"
    return username


_KEY_PARAMS = ("transport", "user", "method", "maddr", "ttl")


def contact_key(text):
    """A contact URI reduced to what RFC 3261 19.1.4 compares: scheme, user,
    host (case-insensitive), port and the parameters that must match."""
    try:
        uri = parse_uri(text)
    except Exception:
        return text
    return uri_key(uri)


def uri_key(uri):
    """:func:`contact_key` of an already parsed URI."""
    if not uri.is_sip:
        return str(uri).lower()
    if not uri.params:
        return f"{uri.scheme}:{uri.user or ''}@{uri.host}:{uri.port or ''};"
    params = ";".join(f"{n.lower()}={(v or '').lower()}" for n, v in sorted(uri.params)
                      if n.lower() in _KEY_PARAMS)
    return f"{uri.scheme}:{uri.user or ''}@{uri.host}:{uri.port or ''};{params}"


class Location:
    """The ``location`` table of one process (see the module docstring).

    ``storage`` is a :class:`~sipdisp.storage.Storage` (needed for db_mode
    1-3); ``timers`` makes this object an owner in the core's timer heap:
    ``start(now, heap)`` arms the periodic ``timer`` (expiry sweep, write-back
    flush and the deletion of expired rows) every ``timer_interval`` seconds.
    """

    def __init__(self, db_mode=0, storage=None, use_domain=False, timer_interval=60.0,
                 server_id=0):
        if db_mode not in (0, 1, 2, 3):
            raise ValueError(f"db_mode must be 0..3, got {db_mode!r}")
        if db_mode and storage is None:
            raise ValueError(f"db_mode {db_mode} needs a storage")
        self.db_mode = db_mode
        self.storage = storage
        self.use_domain = use_domain
        self.timer_interval = timer_interval
        self.server_id = server_id
        self.records = {}      # aor -> (Binding, ...) (memory modes)
        self.count = 0         # bindings in memory
        self.timers = {}
        self._timer = None
        self._dirty = {}       # db_mode 2: ruid -> Binding to write, or None to delete
        self._ruid_prefix = f"ul{os.urandom(5).hex()}-"
        self._ruid_seq = itertools.count(1)
        self.stats = {"inserted": 0, "updated": 0, "deleted": 0, "expired": 0,
                      "db_errors": 0, "flushes": 0}
        # registrations shared with other nodes (usrloc.shared_url): a
        # shared.SharedLocation sets itself here and hears of every change
        self.shared = None

    # -- keys and ids ------------------------------------------------------------
    def aor(self, username, domain):
        """The AOR key for ``username`` at ``domain`` under ``use_domain``."""
        return aor_key(username, domain, self.use_domain)

    def new_ruid(self):
        """A record unique id (Kamailio's ``ruid``)."""
        return f"{self._ruid_prefix}{next(self._ruid_seq):x}"

    def owns(self, ruid):
        """True if this run created ``ruid`` (so its connection id is ours)."""
        return ruid.startswith(self._ruid_prefix)

    # -- reading -----------------------------------------------------------------
    @property
    def in_memory(self):
        """True when lookups are answered from memory (db_mode 0-2)."""
        return self.db_mode != 3

    def bindings(self, aor, now):
        """The live (unexpired) bindings of ``aor`` from memory."""
        record = self.records.get(aor)
        if not record:
            return []
        return [b for b in record if b.expires > now]

    def fetch(self, aor, now):
        """A Deferred firing with the live bindings of ``aor`` read from the
        table (db_mode 3)."""
        username, _, domain = aor.partition("@") if self.use_domain else (aor, "", "")
        where = {"username": username}
        if self.use_domain:
            where["domain"] = domain
        d = self.storage.select(TABLE, where=where)
        use_domain = self.use_domain

        def convert(rows):
            out = []
            for row in rows:
                b = Binding.from_row(row, use_domain)
                if b.expires <= now:
                    continue
                if b.proto in STREAM_PROTOS:
                    # a connection id means something only to the run that wrote it
                    conn = row.get("connection_id")
                    b.conn_id = conn if self.owns(b.ruid) and conn is not None and conn >= 0 else -1
                out.append(b)
            return out
        return d.addCallback(convert)

    def aors(self):
        """Every AOR held in memory."""
        return list(self.records)

    # -- writing -----------------------------------------------------------------
    def apply(self, aor, inserts=(), updates=(), deletes=(), memory_only=False):
        """Apply one REGISTER's changes: new Bindings, ``(old, new)`` pairs and
        Bindings to remove. Returns a Deferred firing when the database has
        them (db_mode 1 and 3) or None (nothing to wait for)."""
        writes = []
        if self.db_mode != 3:
            # a tuple per AOR: half a list's memory (no over-allocation, one block)
            record = self.records.get(aor)
            if record is None and not updates:
                if inserts:
                    self.records[aor] = tuple(inserts)
                    self.count += len(inserts)
            else:
                record = list(record or ())
                gone = {id(b) for b in deletes}
                if gone:
                    before = len(record)
                    record = [b for b in record if id(b) not in gone]
                    self.count -= before - len(record)
                for old, new in updates:
                    for i, b in enumerate(record):
                        if b is old:
                            record[i] = new
                            break
                    else:
                        record.append(new)
                        self.count += 1
                for b in inserts:
                    record.append(b)
                    self.count += 1
                if record:
                    self.records[aor] = tuple(record)
                else:
                    self.records.pop(aor, None)
        self.stats["inserted"] += len(inserts)
        self.stats["updated"] += len(updates)
        self.stats["deleted"] += len(deletes)
        if self.shared is not None:
            self.shared.write(aor, inserts, updates, deletes)
        if self.db_mode == 0 or memory_only:
            return None
        for b in deletes:
            writes.append(self._db_delete(b))
        for old, new in updates:
            new.in_db = old.in_db
            writes.append(self._db_write(new))
        for b in inserts:
            writes.append(self._db_write(b))
        writes = [d for d in writes if d is not None]
        if not writes or self.db_mode == 2:
            return None
        return defer.gatherResults(writes, consumeErrors=True)

    def _db_write(self, b):
        if self.db_mode == 2:
            self._dirty[b.ruid] = b
            return None
        if b.in_db:
            d = self.storage.update(TABLE, _without(b.to_row(self.server_id), "ruid"),
                                    where={"ruid": b.ruid})
        else:
            b.in_db = True
            d = self.storage.insert(TABLE, b.to_row(self.server_id))
        return d.addErrback(self._db_error, "write", b.ruid)

    def _db_delete(self, b):
        if self.db_mode == 2:
            if b.in_db:
                self._dirty[b.ruid] = None
            else:
                self._dirty.pop(b.ruid, None)
            return None
        if not b.in_db and self.db_mode != 3:
            return None
        d = self.storage.delete(TABLE, where={"ruid": b.ruid})
        return d.addErrback(self._db_error, "delete", b.ruid)

    def _db_error(self, f, what, ruid):
        self.stats["db_errors"] += 1
        log.warn("usrloc: cannot {what} {ruid} in {table}: {err}", what=what, ruid=ruid,
                 table=TABLE, err=f.getErrorMessage())
        return None

    def remove_aor(self, aor, now):
        """Delete every binding of ``aor`` (``ul.rm``); a Deferred or None."""
        if self.db_mode == 3:
            username, _, domain = aor.partition("@") if self.use_domain else (aor, "", "")
            where = {"username": username}
            if self.use_domain:
                where["domain"] = domain
            return self.storage.delete(TABLE, where=where)
        record = list(self.records.get(aor, ()))
        if not record:
            return None
        return self.apply(aor, deletes=record)

    # -- time ---------------------------------------------------------------------
    def start(self, now, timer):
        """Arm the periodic timer; ``timer`` is the core's
        (:meth:`~sipdisp.proxy.interface.Core.timer`)."""
        self._timer = timer(self, "timer")
        self._timer.arm(now + self.timer_interval)

    def stop(self):
        """Disarm the timer."""
        self.timers.clear()

    def on_timer(self, name, now):
        """The core's timer heap fired ``timer``: sweep, flush, re-arm."""
        if name != "timer":
            return
        self.tick(now)
        if self._timer is not None:
            self._timer.arm(now + self.timer_interval)

    def tick(self, now):
        """One timer round: expire bindings in memory, flush (db_mode 2),
        delete expired rows (db_mode 1-3, as Kamailio's timer does)."""
        self.expire(now)
        if self.db_mode == 2:
            self.flush()
        if self.db_mode in (1, 2, 3):
            from ..storage import lt
            d = self.storage.delete(TABLE, where={"expires": lt(_to_datetime(now))})
            d.addErrback(self._db_error, "delete expired rows from", TABLE)

    def expire(self, now):
        """Remove expired bindings from memory (their rows are deleted by the
        table sweep, not one by one); returns how many."""
        expired = 0
        for aor in list(self.records):
            record = self.records[aor]
            live = [b for b in record if b.expires > now]
            if len(live) != len(record):
                expired += len(record) - len(live)
                for b in record:
                    if b.expires <= now and self.db_mode == 2:
                        self._dirty.pop(b.ruid, None)
                if live:
                    self.records[aor] = tuple(live)
                else:
                    del self.records[aor]
        self.count -= expired
        self.stats["expired"] += expired
        return expired

    def flush(self):
        """Write the changes collected in db_mode 2; a Deferred firing when queued
        writes are committed (None when nothing was dirty)."""
        if not self._dirty:
            return None
        dirty, self._dirty = self._dirty, {}
        self.stats["flushes"] += 1
        writes = []
        for ruid, b in dirty.items():
            if b is None:
                d = self.storage.delete(TABLE, where={"ruid": ruid})
            elif b.in_db:
                d = self.storage.update(TABLE, _without(b.to_row(self.server_id), "ruid"),
                                        where={"ruid": ruid})
            else:
                b.in_db = True
                d = self.storage.insert(TABLE, b.to_row(self.server_id))
            writes.append(d.addErrback(self._db_error, "flush", ruid))
        return defer.gatherResults(writes, consumeErrors=True)

    @property
    def dirty(self):
        """How many changes wait for the next write-back (db_mode 2)."""
        return len(self._dirty)

    # -- start-up -------------------------------------------------------------------
    def load(self, now):
        """Fill memory from the table (db_mode 1 and 2); a Deferred firing
        with the number of live bindings loaded."""
        if self.db_mode not in (1, 2):
            return defer.succeed(0)
        d = self.storage.select(TABLE)

        def fill(rows):
            loaded = 0
            for row in rows:
                b = Binding.from_row(row, self.use_domain)
                if b.expires <= now:
                    continue
                if b.proto in STREAM_PROTOS:
                    b.conn_id = -1  # its connection died with the previous run
                record = self.records.get(b.aor, ())
                # a contact registered again while the table was loading wins
                if any(x.ruid == b.ruid or x.key == b.key for x in record):
                    continue
                self.records[b.aor] = record + (b,)
                loaded += 1
            self.count += loaded
            return loaded
        return d.addCallback(fill)

    def dump(self, now):
        """``{aor: [binding dicts]}`` of every live binding in memory."""
        return {aor: [b.describe(now) for b in record if b.expires > now]
                for aor, record in self.records.items()}


def _without(row, key):
    out = dict(row)
    out.pop(key, None)
    return out
