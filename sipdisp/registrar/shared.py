"""Registrations shared by several sipdisp nodes through Redis, in the spirit
of OpenSIPS' usrloc full-sharing ``cachedb`` mode (issue 16).

With ``usrloc.shared_url`` every save, refresh and removal of a binding is
also written to Redis, and every lookup reads Redis, so a REGISTER at node A
is found by a lookup at node B. The data model: one hash per
address-of-record, ``{prefix}ul:{aor}``, one field per binding (its
``ruid``) holding the binding as JSON with its absolute expiry; the hash's
TTL is kept at the longest expiry it holds, so the bindings of a node that
died expire by themselves. Readers skip (and delete) expired fields.

The database (``db_mode`` 1-2) stays the system of record as before; the
local table is the cache for when Redis is unreachable: lookups then answer
from it and from the last Redis answers (the other nodes' bindings seen
so far), the outage is logged once and counted, and what was saved meanwhile
is written again (``resync``) as soon as the connection is back.

A binding registered over a stream connection (TCP, TLS, WS) is reachable
only through the node that holds the connection: the stored copy carries a
Path-like route to that node, ``<sip:HOST:PORT;transport=udp;lr;ob;flow=TOKEN>``
(RFC 3327/5626 style; TOKEN names the connection, signed with the node
secret, see :meth:`sipdisp.proxy.routeset.RouteSet.flow_token`). Another
node's lookup uses it as the route set; the owning node's core recognises
its Route and sends the request over the connection (430 when it is gone).

The engine is injected (``sipdisp/service.py`` builds a
:class:`sipdisp.cache.redis.RedisEngine`): anything with ``connected`` and
``command(*args)`` returning a Deferred (raising while disconnected).
"""

import json

from twisted.internet import defer

from ..logs import Logger
from .usrloc import Binding

log = Logger(namespace="sipdisp.usrloc")

#: HSET the binding unless the hash holds a newer version of it (a node
#: writing its copy again after an outage must not undo a refresh another
#: node made meanwhile), then raise the hash's TTL to this binding's when it
#: is shorter (TTL is -1 for a new hash): one round trip, atomic. ARGV: ruid,
#: JSON, TTL, last-modified. Returns 1 when written, 0 when a newer one won.
SAVE_SCRIPT = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local ok, o = pcall(cjson.decode, old)
  if ok and type(o) == 'table' and tonumber(o['modified']) ~= nil
     and tonumber(o['modified']) > tonumber(ARGV[4]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ttl = redis.call('TTL', KEYS[1])
if ttl < tonumber(ARGV[3]) then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1
"""

#: the Binding fields stored, as (JSON name, attribute)
_FIELDS = (("contact", "contact"), ("expires", "expires"), ("q", "q"), ("callid", "callid"),
           ("cseq", "cseq"), ("received", "received"), ("flags", "flags"),
           ("cflags", "cflags"), ("ua", "user_agent"), ("socket", "socket"),
           ("methods", "methods"), ("instance", "instance"), ("reg_id", "reg_id"),
           ("proto", "proto"), ("modified", "last_modified"))


def binding_to_json(b, node, relay):
    """The stored form of a binding: its fields, its Path, the node that
    saved it and, for a stream binding, the route through that node."""
    data = {name: getattr(b, attr) for name, attr in _FIELDS}
    data["path"] = list(b.path)
    data["node"] = node
    data["relay"] = relay
    data["bound"] = b.conn_id is not None
    data["username"] = b.username
    data["domain"] = b.domain
    return json.dumps(data, separators=(",", ":"))


def binding_from_json(ruid, aor, text, node):
    """A Binding from its stored form, as another node's binding is reached
    from this one: a stream binding of another node gets the route through
    that node first in its Path (no connection of ours); one this node
    saved in an earlier run is unreachable (its connection died with that
    run: ``conn_id`` -1). ValueError for something that is not a binding."""
    try:
        data = json.loads(text)
        b = Binding(ruid, aor, data.get("username") or "", data.get("domain"),
                    str(data["contact"]), float(data["expires"]))
        for name, attr in _FIELDS[2:]:
            if name in data:
                setattr(b, attr, data[name])
        b.q = float(b.q if b.q is not None else 1.0)
        b.cseq, b.flags, b.cflags, b.reg_id = (int(b.cseq or 0), int(b.flags or 0),
                                               int(b.cflags or 0), int(b.reg_id or 0))
        b.last_modified = float(b.last_modified or 0.0)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a stored binding: {exc}") from None
    b.path = tuple(str(p) for p in data.get("path") or ())
    if data.get("bound"):
        relay = data.get("relay")
        if relay and data.get("node") != node:
            b.path = (str(relay),) + b.path
        else:
            b.conn_id = -1
    return b


class SharedLocation:
    """Write-through and read-through of one :class:`~.usrloc.Location` to Redis.

    ``node`` names this node (``host:port`` of its UDP listener, given by
    ``node_id()`` once the listeners are bound); ``relay_route(conn_id)``
    is the Path-like route through this node to one of its connections.
    ``counters`` (the core's stats, for /metrics) get ``usrloc_shared_*``.
    """

    def __init__(self, location, engine, clock, prefix="sipdisp:", node_id=None,
                 relay_route=None, counters=None, resync_interval=1.0, resync_batch=1000,
                 connect_grace=2.0, queue_max=10000):
        self.location = location
        self.engine = engine
        self.clock = clock
        self.prefix = prefix
        self._node_id = node_id or (lambda: "")
        self.relay_route = relay_route or (lambda conn: None)
        self.counters = counters
        self.resync_interval = resync_interval
        self.resync_batch = resync_batch
        # the first connection is being made for this long after start: not an outage yet
        self.connect_grace = connect_grace
        # writes sent without their answer yet (cache.redis_queue_max): past
        # it a change waits for the resync instead of piling up on the socket
        self.queue_max = queue_max
        self.in_flight = 0
        self._queue_full = False
        self._started_at = None
        self._ever_connected = False
        self.timers = {}
        self._timer = None
        self.remote = {}      # aor -> bindings of other nodes, as Redis last gave them
        self._pending = {}    # aor -> {ruid} to write again as they are here now (or delete)
        self.down = False     # in an outage (logged once, until it ends)
        self._disconnects = getattr(engine, "disconnects", 0)
        self.stats = {"shared_writes": 0, "shared_write_errors": 0, "shared_reads": 0,
                      "shared_read_errors": 0, "shared_local_answers": 0,
                      "shared_resynced": 0, "shared_outages": 0, "shared_bad_entries": 0,
                      "shared_queue_full": 0}
        location.shared = self

    @property
    def node(self):
        """This node's name in the stored bindings."""
        return self._node_id()

    def key(self, aor):
        """The Redis hash of ``aor``."""
        return f"{self.prefix}ul:{aor}"

    @property
    def available(self):
        """True while the engine is connected (lookups read Redis)."""
        return self.engine.connected

    def _count(self, name, n=1):
        self.stats[name] += n
        if self.counters is not None:
            self.counters["usrloc_" + name] += n

    # -- outages ----------------------------------------------------------------------
    def _outage(self, why):
        if not self._ever_connected:
            if self.engine.connected:
                self._ever_connected = True
            elif self._started_at is not None and \
                    self.clock() - self._started_at < self.connect_grace:
                return  # still connecting at start-up (what waits is written once up)
        if not self.down:
            self.down = True
            self._count("shared_outages")
            log.warn("usrloc: Redis unreachable ({why}); routing on the local copy and "
                     "writing the changes again when it is back", why=why)

    def _recovered(self):
        if self.down:
            self.down = False
            log.info("usrloc: Redis reachable again; {n} address(es)-of-record to write again",
                     n=len(self._pending))

    # -- writing ------------------------------------------------------------------------
    def write(self, aor, inserts=(), updates=(), deletes=()):
        """Send one REGISTER's changes (as :meth:`Location.apply` took them);
        what cannot be sent now is kept for :meth:`resync`."""
        now = self.clock()
        for b in deletes:
            self._send(aor, b.ruid, None, now)
        for _, b in updates:
            self._send(aor, b.ruid, b, now)
        for b in inserts:
            self._send(aor, b.ruid, b, now)

    def _send(self, aor, ruid, b, now):
        if not self.engine.connected:
            self._keep(aor, ruid, b)
            self._outage("not connected")
            return
        self._ever_connected = True
        if self.in_flight >= self.queue_max:
            self._keep(aor, ruid, b)
            self._count("shared_queue_full")
            if not self._queue_full:
                self._queue_full = True
                log.warn("usrloc: {n} writes to Redis wait for their answer "
                         "(cache.redis_queue_max); later changes are written by the resync",
                         n=self.in_flight)
            return
        try:
            if b is None:
                d = self.engine.command("HDEL", self.key(aor), ruid)
            else:
                ttl = int(b.expires - now + 0.999)
                if ttl <= 0:
                    d = self.engine.command("HDEL", self.key(aor), ruid)
                else:
                    relay = self.relay_route(b.conn_id) if b.conn_id is not None else None
                    d = self.engine.command("EVAL", SAVE_SCRIPT, 1, self.key(aor), ruid,
                                            binding_to_json(b, self.node, relay), ttl,
                                            repr(float(b.last_modified)))
        except Exception as exc:  # NotConnected at the last moment
            self._keep(aor, ruid, b)
            self._outage(str(exc))
            return
        self._count("shared_writes")
        self.in_flight += 1
        d.addCallbacks(self._written, self._write_failed, errbackArgs=(aor, ruid, b))

    def _written(self, result):
        self.in_flight -= 1
        if self._queue_full and self.in_flight < self.queue_max // 2:
            self._queue_full = False
        return None

    def _write_failed(self, f, aor, ruid, b):
        self.in_flight -= 1
        self._count("shared_write_errors")
        self._keep(aor, ruid, b)
        self._outage(f.getErrorMessage())
        return None

    def _keep(self, aor, ruid, b):
        # the binding's latest state is written then, not this one: a late
        # failure of an old write must not overwrite a newer one
        self._pending.setdefault(aor, set()).add(ruid)

    @property
    def pending(self):
        """How many changes wait to be written again."""
        return sum(len(v) for v in self._pending.values())

    def resync(self):
        """Write again what could not be written (the latest state of each
        binding; expired ones are deleted instead), at most ``resync_batch``
        per call so a large table goes back in steps of the timer, not in
        one burst; returns how many were sent."""
        if not self._pending or not self.engine.connected:
            return 0
        now = self.clock()
        n = 0
        budget = self.resync_batch
        records = self.location.records
        for aor in list(self._pending):
            ruids = self._pending.pop(aor)
            here = {b.ruid: b for b in records.get(aor, ())}
            while ruids and n < budget:
                ruid = ruids.pop()
                b = here.get(ruid)
                self._send(aor, ruid, b if b is not None and b.expires > now else None, now)
                n += 1
            if ruids:  # the rest waits for the next round
                self._pending.setdefault(aor, set()).update(ruids)
            if n >= budget:
                break
        self._count("shared_resynced", n)
        return n

    # -- reading ------------------------------------------------------------------------
    def local(self, aor, now):
        """The bindings known here without Redis: this node's own and the
        other nodes' as Redis last gave them (still live)."""
        if not self.engine.connected:
            self._outage("not connected")
        own = self.location.bindings(aor, now)
        seen = {b.ruid for b in own}
        others = [b for b in self.remote.get(aor, ()) if b.expires > now and b.ruid not in seen]
        self._count("shared_local_answers")
        return own + others if others else own

    def fetch(self, aor, now):
        """A Deferred firing with the live bindings of ``aor`` read from
        Redis; it never fails: without Redis it fires with :meth:`local`."""
        if not self.engine.connected:
            self._outage("not connected")
            return defer.succeed(self.local(aor, now))
        self._ever_connected = True
        try:
            d = self.engine.command("HGETALL", self.key(aor))
        except Exception as exc:
            self._outage(str(exc))
            return defer.succeed(self.local(aor, now))
        self._count("shared_reads")
        return d.addCallbacks(self._convert, self._read_failed, callbackArgs=(aor, now),
                              errbackArgs=(aor, now))

    def _read_failed(self, f, aor, now):
        self._count("shared_read_errors")
        self._outage(f.getErrorMessage())
        return self.local(aor, now)

    def _convert(self, reply, aor, now):
        if self.down and not self._pending:
            self._recovered()
        if isinstance(reply, dict):
            items = list(reply.items())
        else:
            reply = list(reply or ())
            items = list(zip(reply[0::2], reply[1::2]))
        location = self.location
        mine = {b.ruid: b for b in location.records.get(aor, ())}
        node = self.node
        out, others, expired = [], [], []
        for ruid, text in items:
            ruid = ruid.decode() if isinstance(ruid, bytes) else str(ruid)
            try:
                b = binding_from_json(ruid, aor, text.decode() if isinstance(text, bytes)
                                      else text, node)
            except ValueError:
                self._count("shared_bad_entries")
                continue
            own = mine.pop(ruid, None)
            if own is not None and own.last_modified >= b.last_modified:
                # ours as we last wrote it: the local object (its connection
                # id, and the identity Location.apply matches updates by)
                if own.expires > now:
                    out.append(own)
                continue
            if b.expires <= now:
                expired.append(ruid)
                continue
            if location.db_mode:
                b.in_db = True  # the node that saved it wrote it to the table
            out.append(b)
            others.append(b)
        # ours and waiting to be written again: Redis does not know them yet
        waiting = self._pending.get(aor)
        if waiting:
            out.extend(b for ruid, b in mine.items() if ruid in waiting and b.expires > now)
        if others:
            self.remote[aor] = others
        else:
            self.remote.pop(aor, None)
        if expired:
            try:
                self.engine.command("HDEL", self.key(aor), *expired).addErrback(lambda f: None)
            except Exception:
                pass  # the next reader deletes them
        return out

    # -- time -----------------------------------------------------------------------------
    def start(self, now, timer):
        """Arm the resync timer (``timer`` is the core's)."""
        self._started_at = now
        self._timer = timer(self, "resync")
        self._timer.arm(now + self.resync_interval)

    def stop(self):
        """Disarm the timer."""
        self.timers.clear()
        self._timer = None

    def resync_all(self, now):
        """Write every live binding of this node again (after the connection
        to Redis was lost: the server may have restarted empty); how many."""
        for aor, record in self.location.records.items():
            for b in record:
                if b.expires > now:
                    self._keep(aor, b.ruid, b)
        return self.resync()

    def on_timer(self, name, now):
        """Write again what waits (everything after a lost connection),
        forget the other nodes' expired bindings, re-arm."""
        engine = self.engine
        if engine.connected:
            self._ever_connected = True
            disconnects = getattr(engine, "disconnects", 0)
            if disconnects != self._disconnects:
                self._disconnects = disconnects
                n = self.resync_all(now)
                log.info("usrloc: connected to Redis again; wrote {n} binding(s) again", n=n)
            elif self._pending:
                self.resync()
            if not self._pending:
                self._recovered()
        for aor in [a for a, bs in self.remote.items() if all(b.expires <= now for b in bs)]:
            del self.remote[aor]
        if self._timer is not None:
            self._timer.arm(now + self.resync_interval)
