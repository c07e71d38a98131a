"""Dialog takeover: the surviving nodes of a cluster take over the answered
calls of a node that died (issue 16; OpenSIPS' dialog clustering with a
backup node is the model).

Every node writes its confirmed dialogs to the database (``dialog.db_mode``
1 or 2) with its ``cluster.node_id`` as their owner (``xdata``), and
publishes the addresses it record-routes with (its counts hash in Redis,
field :data:`ADDR_FIELD`). When a node stops refreshing its hash (its
liveness lapsed, ``cluster.node_ttl``), every survivor races for the lock
``<prefix>dlgtakeover:<node>`` (``SET NX PX cluster.takeover_lock``); the
winner reads the dead node's dialogs from the database, re-owns them (their
rows rewritten with its own id), tracks them with their remaining timeouts,
profiles and variables, and counts the dead node's addresses as its own in
the Record-Route entries that requests of those dialogs bring back
(``Identity.adopt``, ``RouteSet.holds_dialog``), so a BYE arriving with the
dead node's Route is relayed and ends the call here.

:class:`TakeoverPlanner` decides, sans-IO, which dead nodes to claim when;
:class:`DialogTakeover` does the Redis and database I/O around it.
"""

import json

from twisted.internet import defer

from ..cache.local import CacheError
from .sync import ADDR_FIELD


def encode_addresses(pairs):
    """The :data:`ADDR_FIELD` value of ``(host, port)`` pairs (sorted, unique)."""
    return json.dumps(sorted({(str(h).lower(), int(p)) for h, p in pairs}),
                      separators=(",", ":"))


def decode_addresses(text):
    """``(host, port)`` pairs of an :data:`ADDR_FIELD` value; an unreadable one gives none."""
    try:
        return {(str(h).lower(), int(p)) for h, p in json.loads(text)}
    except (TypeError, ValueError):
        return set()


def socket_address(sock):
    """``(host, port)`` of a dialog's socket ``proto:host:port``, or None."""
    _proto, sep, rest = (sock or "").partition(":")
    host, sep2, port = rest.rpartition(":")
    if not (sep and sep2 and host and port.isdigit()):
        return None
    return host.strip("[]").lower(), int(port)


class TakeoverPlanner:
    """Which dead nodes this one (``node_id``) tries to take over, and when.

    Nodes are watched once seen alive (:meth:`observe`) or found owning rows
    of the dialog table (:meth:`watch`, with a ``not_before`` time so that a
    node that is merely starting is not taken for dead). A watched node that
    is no longer live is *due*; its claim ends in :meth:`won` (forgotten
    until it lives again), :meth:`lost` (another node holds the lock: looked
    at again after ``lock_ttl`` only if that node died meanwhile) or
    :meth:`failed` (tried again after ``lock_ttl``)."""

    def __init__(self, node_id, lock_ttl):
        self.node_id = node_id
        self.lock_ttl = lock_ttl
        self.watched = {}     # node -> time before which it is not claimed
        self.holders = {}     # node -> the node holding its lock when we lost it
        self._addr_text = {}  # node -> the addresses it published last (text)
        self.busy = set()     # claims in progress

    def watch(self, node, not_before=0.0):
        """Watch ``node`` (an owner of dialog rows): claimed if not live from ``not_before``."""
        if node and node != self.node_id and node not in self.watched:
            self.watched[node] = not_before

    def observe(self, peers, now):
        """The live nodes of the last round (``{node: hash fields}``, this one
        left out): remember them and their addresses; returns the watched
        nodes to claim now (marked busy)."""
        for node, fields in peers.items():
            if node == self.node_id:
                continue
            self.watched[node] = 0.0
            self.holders.pop(node, None)
            addr = fields.get(ADDR_FIELD) if isinstance(fields, dict) else None
            if addr:
                self._addr_text[node] = addr
        due = []
        for node, not_before in list(self.watched.items()):
            if node in peers or node in self.busy or now < not_before:
                continue
            holder = self.holders.pop(node, None)
            if holder is not None and holder in peers:
                del self.watched[node]  # the live holder took it over
                continue
            due.append(node)
        self.busy.update(due)
        return due

    def addresses(self, node):
        """The ``(host, port)`` pairs ``node`` published when it was last seen alive."""
        return decode_addresses(self._addr_text.get(node, "[]"))

    def won(self, node):
        """This node took ``node`` over: forget it until it lives again."""
        self.busy.discard(node)
        self.watched.pop(node, None)
        self._addr_text.pop(node, None)

    def lost(self, node, holder, now):
        """``holder`` holds ``node``'s lock: look again after the lock's time,
        and claim then only if ``holder`` died meanwhile."""
        self.busy.discard(node)
        if node in self.watched:
            self.watched[node] = now + self.lock_ttl
            self.holders[node] = holder

    def failed(self, node, now):
        """The claim failed (Redis or the database did not answer): try again later."""
        self.busy.discard(node)
        if node in self.watched:
            self.watched[node] = now + self.lock_ttl


class DialogTakeover:
    """Runs the takeover after each cluster round (:meth:`round`): claims
    the due nodes through ``engine`` (the cluster's RedisEngine), reads
    their rows from ``storage``, hands them to ``table`` (the DialogTable)
    and adopts their addresses in the identity of ``routeset`` (the core's
    RouteSet, whose ``holds_dialog`` it sets). ``wake`` re-arms the core's
    timer; ``stats`` is the sync's counters dict."""

    def __init__(self, planner, prefix, engine, storage, table, routeset, reactor, log,
                 stats, wake=None, grace=0.0):
        self.planner = planner
        self.prefix = prefix
        self.engine = engine
        self.storage = storage
        self.table = table
        self.identity = routeset.identity
        # a dead node's Record-Route entries count as ours for the dialogs
        # tracked here (those taken over from it), no others
        routeset.holds_dialog = lambda request: table.match(request) is not None
        self.reactor = reactor
        self.log = log
        self.stats = stats
        self.wake = wake
        self.grace = grace
        self._started = reactor.seconds()
        self._owners_seen = set()
        stats.setdefault("takeovers", 0)
        stats.setdefault("dialogs_taken_over", 0)
        stats.setdefault("takeover_failures", 0)

    def lock_key(self, node):
        """The Redis key whose holder takes ``node``'s dialogs over."""
        return f"{self.prefix}dlgtakeover:{node}"

    def round(self, peers, now):
        """After an answered round: watch the owners of rows left at start,
        then claim every watched node that is no longer live."""
        new = self.table.foreign_owners - self._owners_seen
        for owner in new:
            self._owners_seen.add(owner)
            self.planner.watch(owner, self._started + self.grace)
        for node in self.planner.observe(peers, now):
            self._claim(node)

    def _claim(self, node):
        ttl_ms = max(1, int(self.planner.lock_ttl * 1000))
        try:
            d = self.engine.command("SET", self.lock_key(node), self.planner.node_id,
                                    "NX", "PX", ttl_ms)
        except CacheError as exc:
            self._failed_claim(node, str(exc))
            return
        d.addCallback(self._locked, node)
        d.addErrback(lambda f: self._failed_claim(node, f.getErrorMessage()))

    def _locked(self, reply, node):
        if reply is None:
            d = self.engine.command("GET", self.lock_key(node))
            d.addCallback(self._lost, node)
            return d
        d = defer.gatherResults([self.storage.select("dialog"),
                                 self.storage.select("dialog_vars")], consumeErrors=True)
        d.addCallback(self._loaded, node)
        return d

    def _lost(self, holder, node):
        holder = holder.decode() if isinstance(holder, bytes) else holder
        if holder is None:
            # the lock expired between our SET and GET: try again next round
            self.planner.busy.discard(node)
            return
        self.log.info("dialog: node {node} is being taken over by node {holder}",
                      node=node, holder=holder)
        self.planner.lost(node, holder, self.reactor.seconds())

    def _loaded(self, results, node):
        rows, var_rows = results
        now = self.reactor.seconds()
        taken = self.table.take_over(rows, var_rows, node, now)
        if taken:
            addresses = self.planner.addresses(node)
            for dlg in taken:
                for sock in (dlg.caller_sock, dlg.callee_sock):
                    addr = socket_address(sock)
                    if addr is not None:
                        addresses.add(addr)
            for host, port in sorted(addresses):
                self.identity.adopt(host, port)
        self.stats["takeovers"] += 1
        self.stats["dialogs_taken_over"] += len(taken)
        self.log.info("dialog: took over {n} dialogs of node {node}", n=len(taken), node=node)
        self.planner.won(node)
        if self.wake is not None:
            self.wake()

    def _failed_claim(self, node, why):
        self.stats["takeover_failures"] += 1
        self.log.warn("dialog: cannot take over the dialogs of node {node} ({why}); "
                      "trying again in {s} s", node=node, why=why, s=self.planner.lock_ttl)
        self.planner.failed(node, self.reactor.seconds())
