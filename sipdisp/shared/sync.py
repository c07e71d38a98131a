"""The exchange of one node with the cluster's Redis, sans-IO.

Every ``cluster.sync_interval`` the node runs one Lua script (:data:`SCRIPT`,
one round trip, atomic on the server) that

* writes this node's dialog profile counts into its own hash
  ``<prefix>counts:<node>`` (rewritten whole when they changed, else only
  kept alive), with a time to live of ``cluster.node_ttl``, and the node in
  the sorted set ``<prefix>nodes`` scored by its expiry;
* writes the dispatcher and load-balancer destination states this node
  changed into ``<prefix>ds``;
* sets ``<prefix>secret`` (the nonce secret) unless a node did first;
* writes this node's pike counts of its busy sources (``<prefix>pike:<node>``,
  per sampling unit) and the bans made or lifted here (``<prefix>bans``
  scored by when they were written, ``<prefix>banexp`` by when they end,
  ``<prefix>banx`` their end and value), forgetting ended bans;
* answers the other live nodes' counts (only those written since this node
  last read them: the hash's empty field dates its last write) and pike
  counts, every dispatcher state, the bans written since the last round,
  and the secret.

A node that dies stops refreshing: its hash expires and its score falls
behind the clock, so its calls stop counting on the others ``node_ttl``
later. Counts are per node, never incremented by others, so a lost write,
a Redis restart or a flush only needs this node's next full write to be
correct again: the script says when the hash was missing (``lost``).

:class:`ClusterSync` builds the script's arguments from the local state and
applies its answer; it never reads a clock nor does I/O.
"""

from collections import Counter

from ..logs import Logger, RepeatLimiter

#: separates a profile's name from its value in a hash field
SEP = "\x1f"
#: prefix of the load balancer's destinations in the ``<prefix>ds`` hash
#: (the dispatcher's fields start with their set id, a number)
LB_FIELD = "lb "
#: field of a node's counts hash holding the addresses it record-routes
#: with (no SEP in it: not a count), read by a node taking its dialogs over
ADDR_FIELD = "addr"

SCRIPT = """
local p, node = ARGV[1], ARGV[2]
local ttl = tonumber(ARGV[3])
local full = ARGV[4] == '1'
local n = tonumber(ARGV[5])
local i = 6
local key = p .. 'counts:' .. node
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lost, clash = 0, 0
-- ARGV's last: the mark of this node's last write ('' when it has none): a
-- different one means another process writes under the same node id
local mine = ARGV[#ARGV]
local mark = redis.call('HGET', key, '')
if mine ~= '' and mark and mark ~= mine then
  clash = 1
end
if full then
  redis.call('DEL', key)
  for j = 1, n do
    redis.call('HSET', key, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  -- the empty field dates the write (the readers' version of it) and keeps
  -- the hash alive when this node has no call at all
  mark = tostring(now)
  redis.call('HSET', key, '', mark)
elseif redis.call('EXISTS', key) == 0 then
  lost = 1
end
redis.call('PEXPIRE', key, ttl)
local nodes = p .. 'nodes'
redis.call('ZADD', nodes, now + ttl, node)
redis.call('ZREMRANGEBYSCORE', nodes, '-inf', now)
local nds = tonumber(ARGV[i])
i = i + 1
for j = 1, nds do
  redis.call('HSET', p .. 'ds', ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('SET', p .. 'secret', ARGV[i], 'NX')
local cursor = ARGV[i + 1]
i = i + 2
-- pike: this node's counts of its notable sources, per unit
local pkey = p .. 'pike:' .. node
redis.call('DEL', pkey)
local np = tonumber(ARGV[i])
i = i + 1
for j = 1, np do
  redis.call('HSET', pkey, ARGV[i], ARGV[i + 1])
  i = i + 2
end
if np > 0 then
  redis.call('PEXPIRE', pkey, ttl)
end
-- bans made (seconds > 0, or 0 forever) or lifted (-1) here
local bans, banexp, banx = p .. 'bans', p .. 'banexp', p .. 'banx'
local nb = tonumber(ARGV[i])
i = i + 1
for j = 1, nb do
  local host, secs, value = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  i = i + 3
  local exp, ends = now + ttl, -1
  if secs > 0 then
    exp = now + math.floor(secs * 1000)
    ends = exp
  elseif secs == 0 then
    exp, ends = '+inf', 0
  end
  redis.call('ZADD', bans, now, host)
  redis.call('ZADD', banexp, exp, host)
  redis.call('HSET', banx, host, tostring(ends) .. '\\31' .. value)
end
for _, host in ipairs(redis.call('ZRANGEBYSCORE', banexp, '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', bans, host)
  redis.call('ZREM', banexp, host)
  redis.call('HDEL', banx, host)
end
local newbans = {}
for _, host in ipairs(redis.call('ZRANGEBYSCORE', bans, cursor, '+inf')) do
  newbans[#newbans + 1] = host
  newbans[#newbans + 1] = redis.call('HGET', banx, host) or ''
end
-- the other nodes' counts: only those written since this node last read them
local known = {}
local nk = tonumber(ARGV[i])
i = i + 1
for j = 1, nk do
  known[ARGV[i]] = ARGV[i + 1]
  i = i + 2
end
local counts, pikes = {}, {}
for _, other in ipairs(redis.call('ZRANGE', nodes, 0, -1)) do
  if other ~= node then
    local okey = p .. 'counts:' .. other
    local version = redis.call('HGET', okey, '')
    counts[#counts + 1] = other
    if version and known[other] == version then
      counts[#counts + 1] = 0
    else
      counts[#counts + 1] = redis.call('HGETALL', okey)
    end
    pikes[#pikes + 1] = redis.call('HGETALL', p .. 'pike:' .. other)
  end
end
return {lost, redis.call('GET', p .. 'secret'), redis.call('HGETALL', p .. 'ds'),
        tostring(now), newbans, pikes, counts, clash, mark or ''}
"""


def _pairs(flat):
    """``[k1, v1, k2, v2]`` -> ``[(k1, v1), (k2, v2)]``."""
    return list(zip(flat[0::2], flat[1::2]))


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class ClusterSync:
    """What one node shares and what it sees of the others.

    ``profiles`` is the dialog table's :class:`~sipdisp.dialog.profiles.Profiles`
    (its ``counts`` are this node's; its ``remote`` gets the other nodes'
    sums); ``dispatcher`` is a Dispatcher or None; ``nonces`` a
    NonceFactory whose secret is the cluster's, or None (the configuration
    gives one); ``flood`` the FloodGuard whose pike counts and bans are
    shared, or None. ``addresses`` is None or a callable giving the text
    written with this node's counts under ``addr`` (the addresses it
    record-routes with, for a node taking its dialogs over). ``stats`` is a
    dict of counters.
    """

    def __init__(self, node_id, prefix, ttl, profiles=None, dispatcher=None, nonces=None,
                 secret=b"", flood=None, balancer=None, log=None, addresses=None):
        self.node_id = node_id
        self.prefix = prefix
        self.ttl = ttl
        self.profiles = profiles
        self.dispatcher = dispatcher
        self.nonces = nonces
        self.secret = secret
        self.log = log or Logger(namespace="sipdisp.shared")
        self._limited = RepeatLimiter(self.log, limit=1, interval=60.0)
        self._skipped_seen = 0
        self.stats = {"rounds": 0, "failures": 0, "full_writes": 0, "lost": 0,
                      "ds_applied": 0, "nodes": 0, "bans_applied": 0,
                      "pike_shared": 0, "node_id_clashes": 0}
        self._written_version = None  # profiles.version last written whole
        self.addresses = addresses
        self._addr_written = None     # the addresses text last written whole
        self._addr_sent = None
        self._ds_changed = {}         # field -> state this node set, not written yet
        self._ds_seen = {}            # field -> state last read from Redis
        self._applying = False
        self._nonce_secret = None
        self._sent = (None, {}, {})
        self._last_ok = None
        self.peers = {}               # node -> {field: count} (the last answer)
        self._peer_versions = {}      # node -> its hash's write time we hold
        self._my_mark = ""            # the write time of this node's own hash
        self.flood = flood
        self._bans_out = {}           # host -> (seconds, value) banned or lifted here
        self._ban_cursor = "-inf"     # Redis time (ms) of the last round's answer
        if dispatcher is not None:
            dispatcher.prober.listeners.append(self._ds_changed_here)
        if flood is not None:
            flood.listeners.append(self._banned_here)
        self.balancer = balancer
        if balancer is not None:
            balancer.state_listeners.append(self._lb_changed_here)

    def metrics(self):
        """The sync's counters and the live nodes, for /metrics."""
        st = self.stats
        yield ("sipdisp_cluster_sync_rounds_total", "counter",
               "Exchanges with the cluster's Redis that were answered.", st["rounds"])
        yield ("sipdisp_cluster_sync_failures_total", "counter",
               "Exchanges with the cluster's Redis that failed (no connection, timeout).",
               st["failures"])
        yield ("sipdisp_cluster_counts_lost_total", "counter",
               "Times Redis had lost this node's counts (restart, flush) and they were written again.",
               st["lost"])
        yield ("sipdisp_cluster_nodes", "gauge", "Live nodes seen in Redis, this one included.",
               st["nodes"])
        yield ("sipdisp_cluster_node_id_clashes_total", "counter",
               "Rounds that found this node's counts written by another process with the same cluster.node_id.",
               st["node_id_clashes"])
        if "takeovers" in st:
            yield ("sipdisp_cluster_takeovers_total", "counter",
                   "Dead nodes whose dialogs this node took over.", st["takeovers"])
            yield ("sipdisp_cluster_dialogs_taken_over_total", "counter",
                   "Dialogs of dead nodes this node took over.", st["dialogs_taken_over"])
            yield ("sipdisp_cluster_takeover_failures_total", "counter",
                   "Takeovers that failed (Redis or the database did not answer) and were retried.",
                   st["takeover_failures"])
        if self.flood is not None:
            pike = self.flood.pike
            yield ("sipdisp_cluster_pike_shared", "gauge",
                   "Sources whose pike counts this node shares now.", len(pike.notable))
            yield ("sipdisp_cluster_pike_share_skipped_total", "counter",
                   "Busy sources not shared because cluster.pike_share_max were already.",
                   pike.share_skipped)

    # -- outgoing -----------------------------------------------------------------------
    def request(self, now=0.0):
        """The ``EVAL`` arguments of the next round (``now`` dates the pike counts)."""
        args = [self.prefix, self.node_id, int(self.ttl * 1000)]
        profiles = self.profiles
        addr = self.addresses() if self.addresses is not None else ""
        full = profiles is not None and (profiles.version != self._written_version
                                         or addr != self._addr_written)
        fields = []
        if full:
            for name, counter in profiles.counts.items():
                for value, count in counter.items():
                    if count:
                        fields += [name + SEP + value, str(count)]
            if addr:
                fields += [ADDR_FIELD, addr]
            self._addr_sent = addr
        args += ["1" if full else "0", len(fields) // 2] + fields
        changed = self._ds_changed
        ds = []
        for field, state in changed.items():
            ds += [field, str(state)]
        args += [len(ds) // 2] + ds + [self.secret, self._ban_cursor]
        pike = self._pike_fields(now)
        args += [len(pike) // 2] + pike
        bans = self._bans_out
        args.append(len(bans))
        for host, (seconds, value) in bans.items():
            args += [host, repr(float(seconds)), "" if value is None else str(value)]
        versions = self._peer_versions
        args.append(len(versions))
        for node, version in versions.items():
            args += [node, version]
        args.append(self._my_mark)
        self._sent = (profiles.version if full else None, dict(changed), dict(bans))
        changed.clear()
        bans.clear()
        return ["EVAL", SCRIPT, 0] + args

    def _pike_fields(self, now):
        """``slot<SEP>host, count`` of the sources busy enough here to share."""
        if self.flood is None:
            return []
        pike = self.flood.pike
        if pike.share_skipped != self._skipped_seen:
            self._skipped_seen = pike.share_skipped
            self._limited.warn("cluster.pike_share_max", "cluster: {n} busy sources are shared "
                               "already (cluster.pike_share_max); busier ones are counted by "
                               "each node alone", n=pike.share_max)
        notable = pike.notable
        if not notable:
            return []
        slot = int(now // pike.unit)
        fields = []
        for host, src in list(notable.items()):
            if src.slot < slot - 1 or pike.sources.get(host) is not src:
                del notable[host]  # quiet for a whole unit, or forgotten
                continue
            fields += [f"{src.slot}{SEP}{host}", str(src.cur)]
            if src.prev:
                fields += [f"{src.slot - 1}{SEP}{host}", str(src.prev)]
        self.stats["pike_shared"] = len(notable)
        return fields

    def _banned_here(self, host, seconds, value):
        """The FloodGuard banned ``host`` (or lifted its ban: seconds -1)."""
        if self._applying:
            return
        self._bans_out[host] = (seconds, value)

    def _lb_changed_here(self, dest):
        """A load-balancer destination's state changed here (probe, lb_disable_dst, lb.status)."""
        if not self._applying:
            self._ds_changed[f"{LB_FIELD}{dest.id}"] = dest.probe.state

    def _ds_changed_here(self, change):
        """A dispatcher state changed on this node (probe, ds_mark_dst, command)."""
        if self._applying:
            return
        dest = change.target
        self._ds_changed[f"{dest.setid} {dest.uri}"] = dest.state

    # -- incoming -----------------------------------------------------------------------
    def answered(self, reply, now):
        """Apply the script's answer (the other nodes' counts, dispatcher states, secret)."""
        version, ds_sent, _bans = self._sent
        self._sent = (None, {}, {})
        self.stats["rounds"] += 1
        self._last_ok = now
        if version is not None:
            self._written_version = version
            self._addr_written = self._addr_sent
            self.stats["full_writes"] += 1
        for field, state in ds_sent.items():
            self._ds_seen[field] = str(state)
        lost, secret, ds_flat = reply[0], reply[1], reply[2]
        if int(lost):
            # Redis lost our hash (restart, flush, a long outage): write it whole next round
            self.stats["lost"] += 1
            self._written_version = None
            self._addr_written = None
        if secret is not None:
            self._use_secret(secret)
        self._apply_ds(ds_flat)
        redis_now, bans, pikes, counts = reply[3], reply[4], reply[5], reply[6]
        if int(reply[7]):
            # another process wrote our hash: both count wrong until one is renamed
            self.stats["node_id_clashes"] += 1
            self._limited.error("cluster.node_id", "cluster: another process writes its counts "
                                "as node {node} too; give every node its own cluster.node_id",
                                node=self.node_id)
        self._my_mark = _text(reply[8])
        self._apply_bans(bans, int(_text(redis_now)), now)
        self._ban_cursor = _text(redis_now)
        self._set_pike(pikes)
        old, peers, versions = self.peers, {}, {}
        changed = False
        for node, flat in zip(counts[0::2], counts[1::2]):
            node = _text(node)
            if isinstance(flat, list):
                fields = {_text(k): _text(v) for k, v in _pairs(flat)}
                changed = True
            elif node in old:
                fields = old[node]  # not written since we last read it
            else:
                continue  # cannot happen: we never claim a version we do not hold
            peers[node] = fields
            if "" in fields:
                versions[node] = fields[""]
        self.peers = peers
        self._peer_versions = versions
        self.stats["nodes"] = len(peers) + 1
        if changed or len(peers) != len(old):
            self._set_remote(peers)

    def _set_pike(self, pikes):
        if self.flood is None:
            return
        remote = {}
        for flat in pikes:
            for field, count in _pairs(flat):
                slot, _, host = _text(field).partition(SEP)
                try:
                    slot, count = int(slot), int(count)
                except ValueError:
                    continue
                per_slot = remote.setdefault(host, {})
                per_slot[slot] = per_slot.get(slot, 0) + count
        self.flood.pike.remote = remote

    def _apply_bans(self, flat, redis_now, now):
        """Bans other nodes made (or lifted) since the last round, applied here."""
        guard = self.flood
        if guard is None:
            return
        for host, entry in _pairs(flat):
            host, entry = _text(host), _text(entry)
            until, sep, value = entry.partition(SEP)
            try:
                until = int(until)
            except ValueError:
                continue
            self._applying = True
            try:
                if until == -1:
                    if guard.bans.delete(host):
                        self.stats["bans_applied"] += 1
                    continue
                left = 0 if until == 0 else (until - redis_now) / 1000.0
                if until and left <= 0:
                    continue
                current = guard.bans.get(host, now)
                expires = guard.bans.expires(host, now)
                if current is not None and str(current) == value and (
                        (until == 0 and expires == 0) or
                        (until and expires and abs(expires - (now + left)) < 1.0)):
                    continue  # this node has it already (its own, or read before)
                if guard.ban(host, now, seconds=left, reason="a ban by another cluster node",
                             value=value):
                    self.stats["bans_applied"] += 1
            finally:
                self._applying = False

    def failed(self, now):
        """A round failed (no connection, timeout): keep the last view of the
        other nodes until it is ``ttl`` old, then count this node's calls only;
        write everything again once Redis answers."""
        self.stats["failures"] += 1
        # the lost round's dispatcher changes are sent again
        _version, ds_sent, bans_sent = self._sent
        self._sent = (None, {}, {})
        for field, state in ds_sent.items():
            self._ds_changed.setdefault(field, state)
        for host, ban in bans_sent.items():
            self._bans_out.setdefault(host, ban)
        self._written_version = None
        self._addr_written = None
        self._my_mark = ""  # the lost round may have written it: do not take it for a clash
        if self.peers and (self._last_ok is None or now - self._last_ok > self.ttl):
            self.peers = {}
            self._peer_versions = {}
            self._set_remote({})
            self._set_pike([])
            return True  # the view was dropped
        return False

    def _set_remote(self, peers):
        if self.profiles is None:
            return
        remote = {}
        for fields in peers.values():
            for field, count in fields.items():
                name, sep, value = field.partition(SEP)
                if not sep:
                    continue  # the keep-alive field
                try:
                    n = int(count)
                except ValueError:
                    continue
                remote.setdefault(name, Counter())[value] += n
        self.profiles.remote = remote

    def _apply_ds(self, flat):
        dispatcher = self.dispatcher
        if dispatcher is None and self.balancer is None:
            return
        for field, state in _pairs(flat):
            field, state = _text(field), _text(state)
            if self._ds_seen.get(field) == state:
                continue
            self._ds_seen[field] = state
            if field in self._ds_changed:
                continue  # changed here since: ours goes out next round
            if field.startswith(LB_FIELD):
                self._apply_lb(field[len(LB_FIELD):], state)
                continue
            if dispatcher is None:
                continue
            setid, _, uri = field.partition(" ")
            try:
                dests = dispatcher.find(int(setid), uri)
                bits = int(state)
            except ValueError:
                continue
            for dest in dests:
                if dest.state == bits:
                    continue
                self._applying = True
                try:
                    dispatcher.prober.set_state(dest, bits, "state set by another cluster node")
                finally:
                    self._applying = False
                self.stats["ds_applied"] += 1

    def _apply_lb(self, dest_id, state):
        balancer = self.balancer
        if balancer is None:
            return
        try:
            dest = balancer.by_id.get(int(dest_id))
            bits = int(state)
        except ValueError:
            return
        if dest is None or dest.probe.state == bits:
            return
        self._applying = True
        try:
            balancer.apply_state(dest.id, bits, "state set by another cluster node")
        finally:
            self._applying = False
        self.stats["ds_applied"] += 1

    def _use_secret(self, secret):
        secret = secret if isinstance(secret, bytes) else str(secret).encode()
        if self.nonces is not None and secret != self._nonce_secret:
            self.nonces.use_secret(secret)
            self.log.info("cluster: nonces are signed with the cluster's shared secret")
        self._nonce_secret = secret
        self.secret = secret


__all__ = ["ADDR_FIELD", "ClusterSync", "LB_FIELD", "SCRIPT", "SEP"]
