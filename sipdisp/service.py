"""The sipdisp Service tree: the SIP core with its listeners, and later the
storage, dispatcher, registrar and console services beside it."""

import gc

from twisted.application.service import MultiService, Service
from twisted.internet.defer import gatherResults, maybeDeferred
from sipdisp.logs import Logger

from . import __version__
from .collector import CollectorSchedule
from .commands import CommandRegistry
from .console import add_management
from .dispatcher.service import DispatcherService
from .dns.client import DnsClient
from .registrar.service import RegistrarService
from .dialog.service import DialogService
from .loadbalancer.service import LoadBalancerService
from .msilo.service import MsiloService
from .rtpengine.service import RtpengineService
from .drouting.service import DRoutingService
from .accounting.service import AccountingService
from .aliases.service import AliasService
from .dialplan.service import DialplanService
from .cache.service import CacheService
from .flood.service import FloodService
from .presence.service import PresenceService
from .shared.service import ClusterService
from .config import ConfigError
from .routing import Modules, build_routing, routing_spec
from .sip import BUILD as sip_build
from .shipped import shipped_functions
from .console.namespace import stat_name
from .nodesecret import load_node_secret
from .proxy import ProxyCore
from .storage import StorageService, open_storage
from .storage.admin import init_schema
from .transport.edge import ConnectionLimits, Switchboard
from .transport.listeners import Connector, bind_listeners, server_tls_options

log = Logger()


def no_route_configured(ctx):
    """The core's route until the service tree sets the compiled one: answers 500."""
    ctx.reply(500, "No route configured")


class SipService(Service):
    """Binds the listeners and runs the proxy core on the reactor; ``route`` is
    the request route (``core.route``, set later when None)."""

    def __init__(self, cfg, route=None, reactor=None, modules=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.cfg = cfg
        # dns/: next hops given as names (RFC 3263), resolved without blocking the core
        self.dns = DnsClient(cfg.dns, reactor)
        self.core = ProxyCore(
            [], route or no_route_configured, t1=cfg.sip.t1, t2=cfg.sip.t2, t4=cfg.sip.t4,
            fr_timer=cfg.sip.fr_timer, fr_inv_timer=cfg.sip.fr_inv_timer,
            max_message_size=cfg.sip.max_message_size, domains=cfg.proxy.domains,
            max_forwards=cfg.proxy.max_forwards, server_header=cfg.sip.server_header,
            secret=load_node_secret(cfg.proxy.secret, cfg.proxy.secret_file), modules=modules,
            record_route=cfg.proxy.record_route, resolver=self.dns.next_hops,
            max_transactions=cfg.sip.max_transactions,
            max_via_headers=cfg.sip.max_via_headers, max_route_headers=cfg.sip.max_route_headers)
        self.switchboard = Switchboard(
            self.core, reactor, limits=ConnectionLimits.from_config(cfg.connections))
        self.dns.use_stats(self.core.stats)
        self.dns.set_wake(self.switchboard.wake)
        self.switchboard.resolve_name = self.dns.address
        self.switchboard.connector = Connector(reactor, self.switchboard, cfg)
        self.listeners = []
        self._ports = []
        # a worker process (sipdisp/workers): public port -> its own port
        self.worker_ports = None
        # a worker process: transport/handoff.py's Handoff of the shared UDP listeners
        self.handoff = None

    def privilegedStartService(self):
        if self._ports:  # bound already (tap.makeService binds early to report errors)
            return super().privilegedStartService()
        cfg = self.cfg
        tls = None
        if cfg.listen.tls or cfg.listen.wss:
            tls = server_tls_options(cfg.tls.certificate, cfg.tls.private_key,
                                     cfg.tls.ca_file, cfg.tls.require_client_certificate)
        self.listeners, self._ports = bind_listeners(self._reactor, self.switchboard, cfg, tls,
                                                     worker_ports=self.worker_ports,
                                                     handoff=self.handoff)
        if self.handoff is not None:
            self.handoff.start()
        self.core.set_listeners(self.listeners)
        super().privilegedStartService()

    def startService(self):
        if not self._ports:
            self.privilegedStartService()
        super().startService()
        log.info("sipdisp proxy running; {routing}; SIP parser: {parser}",
                 routing=routing_in_use(self.cfg), parser=sip_build)

    def stopService(self):
        super().stopService()
        if self.handoff is not None:
            self.handoff.stop()
        self.switchboard.stop()
        for conn in list(self.switchboard.connections.values()):
            if conn.transport is not None:
                conn.transport.loseConnection()
        ports, self._ports = self._ports, []
        return gatherResults([maybeDeferred(p.stopListening) for p in ports])

    def listener(self, proto):
        """The first listener of ``proto`` (tests use it to find bound ports)."""
        for lst in self.listeners:
            if lst.proto == proto:
                return lst
        return None


class EmbeddedAwareStorageService(StorageService):
    """StorageService that also creates the tables of the embedded SQLite
    default, so ``make run`` needs no database set-up. Server databases
    (PostgreSQL, MySQL) are created with ``sipdisp db init`` or already exist
    (Kamailio's own tables)."""

    def startService(self):
        Service.startService(self)
        storage = self.storage
        d = storage.start()
        if storage.dialect == "sqlite":
            d.addCallback(lambda _: init_schema(storage))
            d.addCallback(lambda result: result[0] and log.info(
                "created tables in the embedded database: {tables}",
                tables=", ".join(result[0])))
        d.addErrback(self._start_failed)

    def _start_failed(self, failure):
        if not self.running:  # stopped while starting: the storage closed under it
            log.info("storage start-up cut short by the stop: {err}",
                     err=failure.getErrorMessage())
            return
        log.failure("storage start-up failed", failure)


class SipdispService(MultiService):
    """The root of the service tree: config, the command registry shared by
    every management front-end, and the subsystems as named children.

    Subsystem services are built here in dependency order and take what
    they need from the services built before them (``root.sip.core`` the
    proxy core, ``root.storage`` the database, ``root.dispatcher`` ...);
    ``root.registry`` is the command registry, ``root.reload_hooks`` what a
    SIGHUP re-applies, ``root.modules`` the subsystems routes may call
    (:class:`~sipdisp.routing.plugin.Modules`, also ``core.modules`` for
    Python routes) and ``root.functions`` the route function table.
    """

    def __init__(self, cfg, reactor=None, route=None):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.cfg = cfg
        self.registry = CommandRegistry()
        self.started_at = None
        # what sipdisp/reload.py re-applies on SIGHUP: key -> hook(new_cfg) when
        # that key changed, and hook(new_cfg) on every reload
        self.reload_hooks = {}
        self.always_hooks = []
        # storage/: the database every subsystem writes through
        try:
            self.storage = open_storage(cfg.storage.url, spool_dir=cfg.storage.spool_dir,
                                        write_queue_max=cfg.storage.write_queue_max,
                                        reactor=reactor)
        except ValueError as exc:  # a URL that does not parse: one line naming the key
            raise ConfigError("storage.url", str(exc)) from None
        # whether the route challenges requests itself (the registrar's warning)
        self.route_authenticates = route_authenticates(cfg)
        self.modules = Modules(storage=self.storage)
        self.functions = shipped_functions()
        self.sip = SipService(cfg, route=route, reactor=reactor, modules=self.modules)
        self.sip.setName("sip")
        self.sip.setServiceParent(self)
        register_core_commands(self)
        self.storage_service = EmbeddedAwareStorageService(self.storage)
        self.storage_service.setServiceParent(self)
        # dispatcher/ and routing/: the destination sets, then the compiled route
        self.dispatcher = DispatcherService(self, reactor)
        self.dispatcher.setServiceParent(self)
        # registrar/ and auth/: usrloc, save/lookup and digest auth (before routing compiles)
        self.registrar = RegistrarService(self, reactor, shared_engine=usrloc_engine(cfg, reactor))
        self.registrar.setServiceParent(self)
        # dialog/, loadbalancer/, accounting/: dialogs, resource-based balancing, acc and CDRs
        self.dialogs = DialogService(self, reactor)
        self.dialogs.setServiceParent(self)
        self.load_balancer = LoadBalancerService(self, reactor)
        self.load_balancer.setServiceParent(self)
        # msilo/: offline messages (m_store, m_dump) over storage and the location table
        self.msilo = MsiloService(self, reactor)
        self.msilo.setServiceParent(self)
        # rtpengine/: the media relay's ng control (after the dialogs, whose end deletes)
        self.rtpengine = RtpengineService(self, reactor)
        self.rtpengine.setServiceParent(self)
        # drouting/: PSTN gateways and rules (OpenSIPS drouting), when drouting.enabled
        self.drouting = DRoutingService(self, reactor)
        self.drouting.setServiceParent(self)
        self.accounting = AccountingService(self, reactor)
        self.accounting.setServiceParent(self)
        # cache/: cachedb engines (local://, redis://) for cache_store, cache_fetch ...
        self.cache = CacheService(self, reactor)
        self.cache.setServiceParent(self)
        # aliases/ and dialplan/: alias_db_lookup and dp_translate, when enabled
        if cfg.aliases.enabled:
            self.aliases = AliasService(self, reactor)
            self.aliases.setServiceParent(self)
        if cfg.dialplan.enabled:
            self.dialplan = DialplanService(self, reactor)
            self.dialplan.setServiceParent(self)
        # flood/: pike, the ipban table the edge checks before parsing, $sht tables
        self.flood = FloodService(self, reactor)
        self.flood.setServiceParent(self)
        # presence/: PUBLISH, SUBSCRIBE and NOTIFY (presence, presence_xml), busy lamps
        # fed by the dialog table
        self.presence = PresenceService(self, reactor)
        self.presence.setServiceParent(self)
        # shared/: counters, dispatcher states and the nonce secret shared through Redis
        if cfg.cluster.redis:
            self.cluster = ClusterService(self, reactor)
            self.cluster.setServiceParent(self)
        if route is None:
            self.sip.core.route = build_routing(cfg, self.functions, self.modules,
                                                self.sip.core).entry
        add_management(self, reactor)  # console/: SSH Manhole, JSON-RPC and /metrics

    def startService(self):
        self.started_at = self._reactor.seconds()
        super().startService()
        tune_gc()
        proxy = self.cfg.proxy
        self.collector = CollectorSchedule(proxy.gc_freeze_interval, proxy.gc_full_interval,
                                           self.sip.core.stats)
        self._collector_loop = self.collector.start(self._reactor)

    def stopService(self):
        loop, self._collector_loop = getattr(self, "_collector_loop", None), None
        if loop is not None and loop.running:
            loop.stop()
            self.collector.stop()
        return super().stopService()


def usrloc_engine(cfg, reactor):
    """The Redis engine of shared registrations (``usrloc.shared_url``,
    sipdisp/registrar/shared.py), or None; ConfigError for a URL that is not
    redis:// or with db_mode 3 (the table itself is shared then)."""
    url = cfg.usrloc.shared_url
    if not url:
        return None
    from .cache.redis import RedisEngine
    from .cache.url import parse_cache_url
    try:
        parsed = parse_cache_url(url)
    except ValueError as exc:
        raise ConfigError("usrloc.shared_url", str(exc)) from None
    if parsed.scheme != "redis":
        raise ConfigError("usrloc.shared_url", f"registrations are shared through Redis: "
                                               f"redis://HOST:PORT/DB, got {url!r}")
    if cfg.usrloc.db_mode == 3:
        raise ConfigError("usrloc.shared_url", "db_mode 3 already shares the location table; "
                                               "use db_mode 0-2 with shared_url")
    c = cfg.cache
    return RedisEngine("usrloc", parsed, reactor, timeout=c.redis_timeout,
                       queue_max=c.redis_queue_max, reconnect_max=c.redis_reconnect_max)


def tune_gc():
    """Move the objects built at start-up out of the collector's sight.

    The collector otherwise keeps its default thresholds: a finished call
    is freed by reference counting (the transaction objects break their
    cycles when they end, ProxyTransaction.on_server_terminated), so no
    garbage waits for a collection. Raising the thresholds (50000/50/100
    once) only let other cyclic garbage pile up until one full collection
    stalled the proxy for seconds. What is made later is frozen in turn
    by the :class:`~sipdisp.collector.CollectorSchedule`.
    """
    gc.collect()
    gc.freeze()


#: route functions that challenge or check credentials (Kamailio auth, auth_db)
AUTH_FUNCTIONS = frozenset(("www_authorize", "www_authenticate", "pv_www_authorize",
                            "auth_check", "www_challenge", "proxy_authorize",
                            "proxy_authenticate", "proxy_challenge", "auth_challenge"))


def route_authenticates(cfg):
    """True if the configured YAML route calls an authentication function
    (www_authorize, auth_check ...) anywhere, as the seeds do for REGISTER
    (the built-in route: when auth.enabled); with routing.module set, whether
    a Python route does cannot be known."""
    if cfg.routing.module:
        return False
    if cfg.routing.request_route is None:
        return cfg.auth.enabled  # the built-in route challenges only then

    def calls(node):
        if isinstance(node, dict):
            return any(k in AUTH_FUNCTIONS or calls(v) for k, v in node.items())
        if isinstance(node, (list, tuple)):
            return any(calls(v) for v in node)
        return isinstance(node, str) and node in AUTH_FUNCTIONS
    return calls(routing_spec(cfg))


def routing_in_use(cfg):
    """The start-up line's account of the routing: the Python module, the
    YAML route of the configuration, or the built-in one and where it sends calls."""
    if cfg.routing.module:
        return f"routing: Python module {cfg.routing.module} (routing.module)"
    if cfg.routing.request_route is not None:
        return "routing: the YAML route of the configuration (routing.request_route)"
    if cfg.dispatcher.source == "db":
        return "routing: the built-in route, dispatcher set 0 from the dispatcher table"
    return (f"routing: the built-in route, dispatcher set 0 from {cfg.dispatcher.list_file} "
            f"(proxy.next_hop {cfg.proxy.next_hop} when the file is missing)")


def register_core_commands(root):
    """``core.*``, ``stats.*`` and ``tm.*`` commands."""
    registry = root.registry
    core = root.sip.core

    @registry.command("core.version")
    def version() -> str:
        """The sipdisp version."""
        return f"sipdisp {__version__}"

    @registry.command("core.uptime")
    def uptime() -> dict:
        """Seconds since start-up."""
        started = root.started_at
        now = root._reactor.seconds()
        return {"now": now, "up_since": started,
                "uptime": None if started is None else now - started}

    @registry.command("stats.get")
    def stats(prefix: str = "") -> dict:
        """Core counters (messages, transactions, errors), optionally filtered by prefix."""
        names = ((stat_name(k), v) for k, v in list(core.stats.items()))
        out = {k: v for k, v in names if k.startswith(prefix)}
        out["transactions_server"] = len(core.layer.servers)
        out["transactions_client"] = len(core.layer.clients)
        out["retransmissions_sent"] = core.layer.stats_retransmitted
        return out

    @registry.command("tm.list")
    def transactions() -> list:
        """Live transactions: kind, method, branch/key and state."""
        rows = [{"kind": "server", "method": t.method, "key": str(t.key[0]),
                 "call_id": t.call_id, "state": t.state}
                for t in core.layer.servers.values()]
        rows += [{"kind": "client", "method": t.method, "key": t.branch,
                  "call_id": t.call_id, "state": t.state}
                 for t in core.layer.clients.values()]
        return rows


def make_service(cfg, reactor=None, route=None):
    """The whole sipdisp service tree for a loaded Config."""
    return SipdispService(cfg, reactor=reactor, route=route)
