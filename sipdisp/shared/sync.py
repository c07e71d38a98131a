"""The exchange of one node with the cluster's Redis, sans-IO.

Every ``cluster.sync_interval`` the node runs one Lua script (:data:`SCRIPT`,
one round trip, atomic on the server) that

* writes this node's dialog profile counts into its own hash
  ``<prefix>counts:<node>`` (rewritten whole when they changed, else only
  kept alive), with a time to live of ``cluster.node_ttl``, and the node in
  the sorted set ``<prefix>nodes`` scored by its expiry;
* writes the dispatcher states this node changed into ``<prefix>ds``;
* sets ``<prefix>secret`` (the nonce secret) unless a node did first;
* answers the other live nodes' counts, every dispatcher state and the secret.

A node that dies stops refreshing: its hash expires and its score falls
behind the clock, so its calls stop counting on the others ``node_ttl``
later. Counts are per node, never incremented by others, so a lost write,
a Redis restart or a flush only needs this node's next full write to be
correct again: the script says when the hash was missing (``lost``).

:class:`ClusterSync` builds the script's arguments from the local state and
applies its answer; it never reads a clock nor does I/O.
"""

from collections import Counter

from ..logs import Logger

#: separates a profile's name from its value in a hash field
SEP = "\x1f"

SCRIPT = """
local p, node = ARGV[1], ARGV[2]
local ttl = tonumber(ARGV[3])
local full = ARGV[4] == '1'
local n = tonumber(ARGV[5])
local i = 6
local key = p .. 'counts:' .. node
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lost = 0
if full then
  redis.call('DEL', key)
  for j = 1, n do
    redis.call('HSET', key, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
elseif redis.call('EXISTS', key) == 0 then
  lost = 1
end
-- the empty field keeps the hash alive when this node has no call at all
redis.call('HSET', key, '', tostring(now))
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
local out = {lost, redis.call('GET', p .. 'secret'), redis.call('HGETALL', p .. 'ds')}
for _, other in ipairs(redis.call('ZRANGE', nodes, 0, -1)) do
  if other ~= node then
    out[#out + 1] = other
    out[#out + 1] = redis.call('HGETALL', p .. 'counts:' .. other)
  end
end
return out
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
    gives one). ``stats`` is a dict of counters.
    """

    def __init__(self, node_id, prefix, ttl, profiles=None, dispatcher=None, nonces=None,
                 secret=b"", log=None):
        self.node_id = node_id
        self.prefix = prefix
        self.ttl = ttl
        self.profiles = profiles
        self.dispatcher = dispatcher
        self.nonces = nonces
        self.secret = secret
        self.log = log or Logger(namespace="sipdisp.shared")
        self.stats = {"rounds": 0, "failures": 0, "full_writes": 0, "lost": 0,
                      "ds_applied": 0, "nodes": 0}
        self._written_version = None  # profiles.version last written whole
        self._ds_changed = {}         # field -> state this node set, not written yet
        self._ds_seen = {}            # field -> state last read from Redis
        self._applying = False
        self._nonce_secret = None
        self._sent = (None, {})
        self._last_ok = None
        self.peers = {}               # node -> {field: count} (the last answer)
        if dispatcher is not None:
            dispatcher.prober.listeners.append(self._ds_changed_here)

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

    # -- outgoing -----------------------------------------------------------------------
    def request(self):
        """The ``EVAL`` arguments of the next round."""
        args = [self.prefix, self.node_id, int(self.ttl * 1000)]
        profiles = self.profiles
        full = profiles is not None and profiles.version != self._written_version
        fields = []
        if full:
            for name, counter in profiles.counts.items():
                for value, count in counter.items():
                    if count:
                        fields += [name + SEP + value, str(count)]
        args += ["1" if full else "0", len(fields) // 2] + fields
        changed = self._ds_changed
        ds = []
        for field, state in changed.items():
            ds += [field, str(state)]
        args += [len(ds) // 2] + ds + [self.secret]
        self._sent = (profiles.version if full else None, dict(changed))
        changed.clear()
        return ["EVAL", SCRIPT, 0] + args

    def _ds_changed_here(self, change):
        """A dispatcher state changed on this node (probe, ds_mark_dst, command)."""
        if self._applying:
            return
        dest = change.target
        self._ds_changed[f"{dest.setid} {dest.uri}"] = dest.state

    # -- incoming -----------------------------------------------------------------------
    def answered(self, reply, now):
        """Apply the script's answer (the other nodes' counts, dispatcher states, secret)."""
        version, ds_sent = self._sent
        self.stats["rounds"] += 1
        self._last_ok = now
        if version is not None:
            self._written_version = version
            self.stats["full_writes"] += 1
        for field, state in ds_sent.items():
            self._ds_seen[field] = str(state)
        lost, secret, ds_flat = reply[0], reply[1], reply[2]
        if int(lost):
            # Redis lost our hash (restart, flush, a long outage): write it whole next round
            self.stats["lost"] += 1
            self._written_version = None
        if secret is not None:
            self._use_secret(secret)
        self._apply_ds(ds_flat)
        peers = {}
        rest = reply[3:]
        for node, flat in zip(rest[0::2], rest[1::2]):
            peers[_text(node)] = {_text(k): _text(v) for k, v in _pairs(flat)}
        self.peers = peers
        self.stats["nodes"] = len(peers) + 1
        self._set_remote(peers)

    def failed(self, now):
        """A round failed (no connection, timeout): keep the last view of the
        other nodes until it is ``ttl`` old, then count this node's calls only;
        write everything again once Redis answers."""
        self.stats["failures"] += 1
        # the lost round's dispatcher changes are sent again
        _version, ds_sent = self._sent
        self._sent = (None, {})
        for field, state in ds_sent.items():
            self._ds_changed.setdefault(field, state)
        self._written_version = None
        if self.peers and (self._last_ok is None or now - self._last_ok > self.ttl):
            self.peers = {}
            self._set_remote({})
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
        if dispatcher is None:
            return
        for field, state in _pairs(flat):
            field, state = _text(field), _text(state)
            if self._ds_seen.get(field) == state:
                continue
            self._ds_seen[field] = state
            if field in self._ds_changed:
                continue  # changed here since: ours goes out next round
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

    def _use_secret(self, secret):
        secret = secret if isinstance(secret, bytes) else str(secret).encode()
        if self.nonces is not None and secret != self._nonce_secret:
            self.nonces.use_secret(secret)
            self.log.info("cluster: nonces are signed with the cluster's shared secret")
        self._nonce_secret = secret
        self.secret = secret


__all__ = ["ClusterSync", "SCRIPT", "SEP"]
