"""The cluster sync as a Twisted service: when ``cluster.redis`` is set,
connects to that Redis (sipdisp/cache's engine, which reconnects by itself)
and runs one :class:`~.sync.ClusterSync` round every ``cluster.sync_interval``,
each followed by the dialog takeover check (:mod:`.takeover`, with
``dialog.db_mode`` 1 or 2); registers ``cluster.status``.

Routes never wait on Redis: they read the dialog profiles (and pike its
table), whose other-node counts the last round left there. While Redis is away the node keeps
routing on what it has (its own calls always, the others' until that view is
``cluster.node_ttl`` old), logs one line when it goes and one when it is
back, and counts the failed rounds.
"""

import hashlib
import os
import secrets
import socket

import txredisapi

from twisted.application.service import Service
from twisted.internet.task import LoopingCall

from ..cache.local import CacheError
from ..cache.redis import RedisEngine
from ..cache.url import parse_cache_url
from ..logs import Logger
from .sync import SCRIPT, ClusterSync
from .takeover import DialogTakeover, TakeoverPlanner, encode_addresses

#: the script's name in Redis' script cache (EVALSHA sends 40 bytes, not the script)
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode("utf-8")).hexdigest()

log = Logger(namespace="sipdisp.shared")


def default_node_id():
    """``host:pid``: unique per running process, so a restarted node is a new one
    (the old one's counts expire with it)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ClusterService(Service):
    """Owns the cluster sync of the service tree ``root`` (built after the
    dialog, dispatcher and auth services it shares state of)."""

    name = "cluster"

    def __init__(self, root, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.root = root
        c = root.cfg.cluster
        modules = root.modules
        self.interval = c.sync_interval
        auth = modules.auth
        # a configured auth.secret is already the same on every node: keep it
        nonces = auth.nonces if auth is not None and root.cfg.auth.secret is None else None
        dialogs = modules.dialogs
        guard = modules.flood.guard if modules.flood is not None else None
        if guard is not None:
            guard.pike.share_min = c.pike_share_min
            guard.pike.share_max = c.pike_share_max
        node_id = c.node_id or default_node_id()
        identity = root.sip.core.identity
        self.sync = ClusterSync(node_id, c.key_prefix, c.node_ttl,
                                profiles=dialogs.profiles if dialogs is not None else None,
                                dispatcher=modules.dispatcher, nonces=nonces,
                                secret=secrets.token_hex(32), flood=guard,
                                balancer=modules.load_balancer, log=log,
                                addresses=_AddressText(identity))
        self.engine = RedisEngine("cluster", parse_cache_url(c.redis), reactor,
                                  timeout=c.redis_timeout, queue_max=1,
                                  reconnect_max=min(5.0, max(1.0, c.node_ttl / 2)))
        self.takeover = None
        if dialogs is not None:
            # every dialog says which node acts on it; another node's rows are
            # not restored here
            dialogs.node_id = node_id
            if (c.dialog_takeover and root.cfg.dialog.db_mode
                    and modules.storage is not None):
                self.takeover = DialogTakeover(
                    TakeoverPlanner(node_id, c.takeover_lock), c.key_prefix, self.engine,
                    modules.storage, dialogs, root.sip.core.routeset, reactor, log,
                    self.sync.stats,
                    wake=root.dialogs.wake, grace=c.node_ttl)
        self._loop = LoopingCall(self._round)
        self._loop.clock = reactor
        self._pending = False
        self._down = False
        self._connect_timeout = c.redis_timeout
        self._started_at = None
        self._ever_answered = False
        self._script_loaded = False
        modules.shared = self.sync
        register_commands(root.registry, self)

    def startService(self):
        """Connect and start the rounds."""
        super().startService()
        log.info("cluster: node {node} shares its counts and states through {url} "
                 "(prefix {prefix!r}, every {interval} s)", node=self.sync.node_id,
                 url=self.engine.url.safe, prefix=self.sync.prefix, interval=self.interval)
        self._started_at = self._reactor.seconds()
        self.engine.start()
        self._loop.start(self.interval, now=False)

    def stopService(self):
        """Stop the rounds and close the connection."""
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        return self.engine.stop()

    def _round(self):
        if self._pending:
            return  # the last round is still waiting for its answer (at most redis_timeout)
        now = self._reactor.seconds()
        if (not self._ever_answered and not self.engine.connected
                and now - self._started_at < self._connect_timeout):
            return  # still connecting at start-up: not an outage yet
        request = self.sync.request(now)
        try:
            if self._script_loaded:
                d = self.engine.command("EVALSHA", SCRIPT_SHA, *request[2:])
                d.addErrback(self._not_cached, request)
            else:
                d = self.engine.command(*request)
        except CacheError as exc:
            self._failed(now, str(exc))
            return
        self._pending = True
        # an answer that does not apply (a node running another script version)
        # fails the round like a lost connection instead of escaping as unhandled
        d.addCallback(self._answered)
        d.addErrback(self._errback)

    def _not_cached(self, failure, request):
        """Redis lost its script cache (a restart): send the script itself once
        (EVAL caches it again)."""
        failure.trap(txredisapi.ResponseError)
        if "NOSCRIPT" not in failure.getErrorMessage():
            return failure
        self._script_loaded = False
        return self.engine.command(*request)

    def _answered(self, reply):
        self._pending = False
        self._script_loaded = True
        self._ever_answered = True
        now = self._reactor.seconds()
        self.sync.answered(reply, now)
        if self.takeover is not None:
            try:
                self.takeover.round(self.sync.peers, now)
            except Exception:
                log.failure("cluster: the dialog takeover check failed")
        if self._down:
            self._down = False
            log.info("cluster: Redis answers again; this node's counts are written again "
                     "and the other nodes' read ({n} node(s) live)", n=self.sync.stats["nodes"])

    def _errback(self, failure):
        self._pending = False
        self._failed(self._reactor.seconds(), failure.getErrorMessage())

    def _failed(self, now, why):
        if not self.running:
            return  # the round cut short by our own shutdown
        dropped = self.sync.failed(now)
        if not self._down:
            self._down = True
            log.warn("cluster: cannot sync with Redis ({why}); routing on this node's counts "
                     "and the last view of the others until it answers", why=why)
        if dropped:
            log.warn("cluster: no answer from Redis for {ttl} s: the other nodes' calls no "
                     "longer count here", ttl=self.sync.ttl)


class _AddressText:
    """The addresses this node record-routes with (its listeners' own and
    advertised ones), as written into its counts hash; computed again only
    when the listener list changes."""

    def __init__(self, identity):
        self.identity = identity
        self._listeners = None
        self._text = ""

    def __call__(self):
        listeners = self.identity.listeners
        if listeners is not self._listeners:
            pairs = set()
            for lst in listeners:
                for host, port in ((lst.host, lst.port),
                                   (lst.advertised_host, lst.advertised_port)):
                    if host and host not in ("0.0.0.0", "::") and port:
                        pairs.add((host, port))
            self._listeners = listeners
            self._text = encode_addresses(pairs) if pairs else ""
        return self._text


def register_commands(registry, service):
    """``cluster.status``."""
    sync = service.sync

    @registry.command("cluster.status")
    def status() -> dict:
        """This node's id, whether Redis answers, the live nodes with their counts, the sync counters and the addresses of the nodes whose dialogs it took over."""
        identity = service.root.sip.core.identity
        return {"node": sync.node_id, "connected": service.engine.connected,
                "synced": not service._down, "peers": sync.peers, "stats": dict(sync.stats),
                "adopted": [f"{host}:{port}" for host, port in identity.adopted]}
