"""The registrar, location service and authentication as a Twisted service:
builds them from ``cfg.registrar``, ``cfg.usrloc``, ``cfg.auth`` and
``cfg.nat``, puts them in ``core.modules`` (``registrar``, ``usrloc``,
``auth``), loads the location table (db_mode 1 and 2) and the domain table,
arms their timers in the core's timer heap, and registers the ``ul.*``,
``subscriber.*`` and ``domain.*`` commands.
"""

from twisted.application.service import Service
from twisted.internet import defer

from ..auth.auth import Auth
from ..auth.subscribers import Subscribers, load_domains, split_user
from ..commands import CommandError
from ..logs import Logger
from ..storage import StorageUnavailable
from ..storage.retry import STATE_LOAD, LoadRetry
from .nat import NatPinger
from .registrar import Registrar, RegistrarParams
from ..proxy.suspend import Suspender
from .shared import SharedLocation
from .usrloc import Location

log = Logger(namespace="sipdisp.registrar")

#: seconds between sweeps of the replay table of expired nonces
NONCE_SWEEP = 60.0
#: loading the location table at start: attempts (paced by storage.retry.STATE_LOAD),
#: and seconds between looks at a storage still making its first connection
LOAD_ATTEMPTS = 100
LOAD_WAIT = 0.2


class _StorageStarting(Exception):
    """The storage has not finished its first connection attempt yet."""


class _Housekeeping:
    """A timer-heap owner forgetting the nonce-counts of expired nonces."""

    def __init__(self, auth, timer, interval):
        self.auth = auth
        self.interval = interval
        self.timers = {}
        self._sweep = timer(self, "nonces")

    def start(self, now):
        """Arm the first sweep."""
        self._sweep.arm(now + self.interval)

    def on_timer(self, name, now):
        """Sweep, then re-arm."""
        self.auth.expire(now)
        self._sweep.arm(now + self.interval)


def needs_storage(cfg):
    """True if the configuration reads or writes tables (db_mode 1-3,
    authentication, or the domain table)."""
    return cfg.usrloc.db_mode > 0 or cfg.auth.enabled or cfg.auth.domain_table


class RegistrarService(Service):
    """Owns the registrar, usrloc and auth modules of the service tree ``root``."""

    name = "registrar"

    def __init__(self, root, reactor=None, shared_engine=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.root = root
        cfg = self.cfg = root.cfg
        core = self.core = root.sip.core
        self._own_storage = None
        self._retry = None
        self.storage = root.modules.storage
        if self.storage is None and needs_storage(cfg):
            self.storage = self._find_storage()
        self.suspender = Suspender(core, clock=reactor.seconds, wake=root.sip.switchboard.wake)
        u = cfg.usrloc
        self.location = Location(u.db_mode, self.storage, u.use_domain, u.timer_interval)
        # usrloc.shared_url: the Redis engine sipdisp/service.py built for it
        self.shared_engine = shared_engine
        self.shared = None
        if shared_engine is not None:
            self.shared = SharedLocation(self.location, shared_engine, reactor.seconds,
                                         prefix=u.shared_prefix, node_id=self._node_id,
                                         relay_route=self._relay_route, counters=core.stats,
                                         resync_interval=u.shared_resync_interval,
                                         resync_batch=u.shared_resync_batch,
                                         connect_grace=cfg.cache.redis_timeout,
                                         queue_max=cfg.cache.redis_queue_max)
        r = cfg.registrar
        params = RegistrarParams(default_expires=r.default_expires, min_expires=r.min_expires,
                                 max_expires=r.max_expires, max_contacts=r.max_contacts,
                                 use_path=r.use_path,
                                 append_branches=r.append_branches,
                                 method_filtering=r.method_filtering)
        # unless told otherwise, an unauthenticated REGISTER may only bind an
        # AOR of a local domain (proxy.domains, the listen and advertised
        # addresses, the domain table): Auth knows them, and is built below
        local = None if r.accept_any_domain else (lambda host: self.auth.is_domain_local(host))
        self.registrar = Registrar(self.location, params, core, self.suspender,
                                   is_local_domain=local,
                                   max_unauthenticated_aors=r.max_unauthenticated_aors
                                   ) if r.enabled else None
        a = cfg.auth
        self.subscribers = Subscribers(self.storage, a.use_domain) if self.storage else None
        self.auth = Auth(core, self._lookup_subscriber, self.suspender, secret=a.secret,
                         nonce_expire=a.nonce_expire, algorithms=a.algorithms, qop=a.qop,
                         realm=a.realm, calculate_ha1=a.calculate_ha1, use_domain=a.use_domain,
                         bind_address=a.nonce_bind_address, domains=cfg.proxy.domains,
                         trusted=a.trusted,
                         dispatcher=root.modules.dispatcher if a.trust_dispatcher else None)
        n = cfg.nat
        self.pinger = NatPinger(self.location, core, n.natping_interval, n.natping_method,
                                n.sipping_from, n.ping_nated_only)
        self._housekeeping = _Housekeeping(self.auth, core.timer, NONCE_SWEEP)
        root.modules.usrloc = self.location
        root.modules.auth = self.auth
        root.modules.registrar = self.registrar
        # SIGHUP (sipdisp/reload.py) may change who is trusted without a restart
        root.reload_hooks["auth.trusted"] = lambda new: self.auth.set_trusted(new.auth.trusted)
        self.ready = defer.Deferred()
        register_commands(root.registry, self)

    # -- shared registrations (shared.py) ------------------------------------------------
    def _relay_listener(self):
        """The UDP listener other nodes reach this one on (for stream flows)."""
        return self.core.listener_for("udp", "0.0.0.0")

    def _node_id(self):
        lst = self._relay_listener()
        return f"{lst.advertised_host}:{lst.advertised_port}" if lst is not None else ""

    def _relay_route(self, conn):
        """The Path-like route through this node to its connection ``conn``
        (RFC 3327/5626 style: ``;ob`` and a signed flow token); None
        without a UDP listener (the binding is then unreachable elsewhere)."""
        lst = self._relay_listener()
        if lst is None:
            return None
        host = lst.advertised_host
        if ":" in host:
            host = f"[{host}]"
        return (f"<sip:{host}:{lst.advertised_port};transport=udp;lr;ob;"
                f"flow={self.core.flow_token(conn)}>")

    # -- storage ----------------------------------------------------------------------
    def _find_storage(self):
        modules = self.root.modules
        storage = modules.storage
        if storage is None:
            from ..storage import open_storage
            s = self.cfg.storage
            storage = open_storage(s.url, spool_dir=s.spool_dir,
                                   write_queue_max=s.write_queue_max, reactor=self._reactor)
            self._own_storage = storage
            modules.storage = storage  # later subsystems share it
        return storage

    def _lookup_subscriber(self, username, domain):
        if self.subscribers is None:
            return defer.fail(StorageUnavailable(
                "no storage for the subscriber table (set auth.enabled)"))
        return self.subscribers.lookup(username, domain)

    # -- life cycle ---------------------------------------------------------------------
    def startService(self):
        """Arm the timers, then load the tables (db_mode 1, 2; domain table)."""
        super().startService()
        now = self._reactor.seconds()
        self.location.start(now, self.core.timer)
        if self.shared is not None:
            self.shared_engine.start()
            self.shared.start(now, self.core.timer)
        self.pinger.start(now, self.core.timer)
        self._housekeeping.start(now)
        self.root.sip.switchboard.wake()
        if self.storage is None:
            self.ready.callback(None)
            return
        if (self.cfg.registrar.enabled and not self.cfg.auth.enabled
                and not getattr(self.root, "route_authenticates", False)):
            log.warn("registrar without authentication (auth.enabled is false): anyone can "
                     "register any address-of-record of {domains}",
                     domains="any domain (registrar.accept_any_domain)"
                     if self.cfg.registrar.accept_any_domain
                     else "the local domains (proxy.domains and the listen addresses)")
        if not (self.location.db_mode in (1, 2) or self.cfg.auth.domain_table):
            self.ready.callback(None)
            return
        d = self._own_storage.start() if self._own_storage else defer.succeed(None)
        d.addCallback(lambda _: self._prepare_tables())
        d.addBoth(lambda _: self._start_loading())

    def _prepare_tables(self):
        """On an embedded SQLite storage of our own, create missing tables
        (the root's storage service does it for the shared one)."""
        if self._own_storage is None or self.storage.dialect != "sqlite":
            return None
        from ..storage.admin import init_schema
        return init_schema(self.storage)

    def _start_loading(self):
        """Load the location table (db_mode 1, 2) and the domain table,
        retrying (storage.retry.STATE_LOAD) while the storage is not ready."""
        if not self.running:
            return
        self._retry = LoadRetry(self._reactor, STATE_LOAD, self._load_tables, self._load_failed,
                                on_loaded=lambda _: self.ready.callback(None),
                                attempts=LOAD_ATTEMPTS)
        self._retry.start()

    def _load_tables(self):
        if getattr(self.storage, "state", "connected") in ("stopped", "connecting") \
                and not self._retry.last_attempt:
            # the shared storage is still connecting (and creating the embedded tables)
            return defer.fail(_StorageStarting())
        d = defer.succeed(None)
        if self.location.db_mode in (1, 2):
            d.addCallback(lambda _: self.location.load(self._reactor.seconds()))
            d.addCallback(lambda n: log.info(
                "usrloc: loaded {n} binding(s) from the location table", n=n))
        if self.cfg.auth.domain_table:
            d.addCallback(lambda _: self.reload_domains())
        return d

    def _load_failed(self, f, delay):
        if f.check(_StorageStarting):
            return LOAD_WAIT
        if delay is not None and self.running:
            log.warn("usrloc: cannot read the tables yet ({err}); retrying in {s} s",
                     err=f.getErrorMessage(), s=delay)
            return delay
        log.error("usrloc: giving up loading the tables: {err}", err=f.getErrorMessage())
        self.ready.callback(None)
        return None

    def reload_domains(self):
        """Re-read the domain table into the local domains; fires with their count."""
        d = load_domains(self.storage)

        def apply(domains):
            self.auth.table_domains = domains
            return len(domains)

        def failed(f):
            log.warn("auth: cannot read the domain table: {err}", err=f.getErrorMessage())
            return f
        return d.addCallbacks(apply, failed)

    def stopService(self):
        """Disarm, write back what db_mode 2 still holds, stop our own storage."""
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self.location.stop()
        self.pinger.stop()
        d = self.location.flush() if self.location.db_mode == 2 else None
        d = d if d is not None else defer.succeed(None)
        if self.shared is not None:
            self.shared.stop()
            d.addBoth(lambda _: self.shared_engine.stop())
        if self._own_storage is not None:
            d.addBoth(lambda _: self._own_storage.stop())
        return d


def _aor(service, text):
    """An AOR key from ``alice``, ``alice@example.com`` or ``sip:alice@...``."""
    text = text.strip()
    if text.lower().startswith(("sip:", "sips:")):
        text = text.split(":", 1)[1]
    user, sep, domain = text.partition("@")
    domain = domain.split(";", 1)[0].split(":", 1)[0]
    return service.location.aor(user, domain if sep else None)


def register_commands(registry, service):
    """``ul.dump``, ``ul.lookup``, ``ul.rm``, ``ul.stats``, ``subscriber.add|rm|list``
    and ``domain.reload``."""
    location = service.location
    reactor = service._reactor

    def _table_and_aor(first, second):
        # Kamailio's form is "ul.lookup location AOR"; "ul.lookup AOR" works too
        if second:
            if first != "location":
                raise CommandError(f"unknown table {first!r} (only 'location')")
            return second
        return first

    @registry.command("ul.dump")
    def dump(brief: bool = False) -> dict:
        """Every address-of-record with its bindings (brief: AORs and contact counts)."""
        now = reactor.seconds()
        if not location.in_memory:
            raise CommandError("ul.dump: db_mode 3 keeps nothing in memory; read the location table")
        records = location.dump(now)
        if brief:
            return {"AORs": len(records), "Contacts": sum(len(v) for v in records.values()),
                    "Records": {aor: len(v) for aor, v in records.items()}}
        return {"AORs": len(records), "Contacts": sum(len(v) for v in records.values()),
                "Records": [{"AoR": aor, "Contacts": v} for aor, v in sorted(records.items())]}

    @registry.command("ul.lookup")
    def lookup(table_or_aor: str, aor: str = "") -> dict:
        """The bindings of one AOR (every node's with usrloc.shared_url): 'ul.lookup location alice@example.com' or 'ul.lookup alice@example.com'."""
        key = _aor(service, _table_and_aor(table_or_aor, aor))
        now = reactor.seconds()
        shared = service.shared
        if shared is not None and shared.available:
            # every node's bindings, as a lookup sees them (shared.py)
            def shape_shared(bindings):
                if not bindings:
                    raise CommandError(f"ul.lookup: AOR {key} not found")
                return {"AoR": key, "Contacts": [b.describe(now) for b in bindings]}
            return shared.fetch(key, now).addCallback(shape_shared)
        if location.in_memory:
            bindings = location.bindings(key, now)
            if not bindings:
                raise CommandError(f"ul.lookup: AOR {key} not found")
            return {"AoR": key, "Contacts": [b.describe(now) for b in bindings]}
        d = location.fetch(key, now)

        def shape(bindings):
            if not bindings:
                raise CommandError(f"ul.lookup: AOR {key} not found")
            return {"AoR": key, "Contacts": [b.describe(now) for b in bindings]}
        return d.addCallback(shape)

    @registry.command("ul.rm")
    def rm(table_or_aor: str, aor: str = "") -> dict:
        """Remove every binding of one AOR: 'ul.rm location alice@example.com'."""
        key = _aor(service, _table_and_aor(table_or_aor, aor))
        now = reactor.seconds()
        count = len(location.bindings(key, now)) if location.in_memory else None
        if location.in_memory and not count:
            raise CommandError(f"ul.rm: AOR {key} not found")
        d = location.remove_aor(key, now)
        result = {"AoR": key, "removed": count}
        if d is None:
            return result
        return d.addCallback(lambda n: dict(result, removed=n if count is None else count))

    @registry.command("ul.stats")
    def stats() -> dict:
        """Bindings and AORs in memory, db_mode, pending write-back changes and counters."""
        out = {"db_mode": location.db_mode, "contacts": location.count,
               "aors": len(location.records), "dirty": location.dirty,
               "suspended": service.suspender.suspended, "resumed": service.suspender.resumed,
               "suspend_timeouts": service.suspender.timed_out,
               "suspended_now": service.suspender.pending}
        out.update(location.stats)
        if service.shared is not None:
            out.update(service.shared.stats)
            out["shared_connected"] = service.shared.available
            out["shared_pending"] = service.shared.pending
            out["shared_remote_aors"] = len(service.shared.remote)
        if service.registrar is not None:
            out.update({f"registrar_{k}": v for k, v in service.registrar.stats.items()})
        out.update({f"auth_{k}": v for k, v in service.auth.stats.items()})
        out["nonces_tracked"] = len(service.auth.replay)
        out["natpings_sent"] = service.pinger.sent
        return out

    def _subscribers():
        if service.subscribers is None:
            raise CommandError("no storage for the subscriber table: enable auth or a db_mode")
        return service.subscribers

    @registry.command("subscriber.add")
    def sub_add(user: str, password: str) -> dict:
        """Add or replace a subscriber: 'subscriber.add alice@example.com PASSWORD'."""
        try:
            username, domain = split_user(user)
        except ValueError as exc:
            raise CommandError(f"subscriber.add: {exc}") from None
        d = _subscribers().add(username, domain, password)
        return d.addCallback(lambda new: {"user": f"{username}@{domain}",
                                          "added" if new else "updated": True})

    @registry.command("subscriber.rm")
    def sub_rm(user: str) -> dict:
        """Remove a subscriber: 'subscriber.rm alice@example.com'."""
        try:
            username, domain = split_user(user)
        except ValueError as exc:
            raise CommandError(f"subscriber.rm: {exc}") from None
        d = _subscribers().remove(username, domain)

        def done(n):
            if not n:
                raise CommandError(f"subscriber.rm: no subscriber {username}@{domain}")
            return {"user": f"{username}@{domain}", "removed": n}
        return d.addCallback(done)

    @registry.command("subscriber.list")
    def sub_list(domain: str = "") -> list:
        """Subscribers (user@domain), optionally of one domain; passwords are not shown."""
        d = _subscribers().list(domain or None)
        return d.addCallback(lambda rows: [f"{r['username']}@{r['domain']}" for r in rows])

    @registry.command("domain.reload")
    def domain_reload() -> dict:
        """Re-read the domain table (with auth.domain_table) into the local domains."""
        if not service.cfg.auth.domain_table or service.storage is None:
            raise CommandError("domain.reload: auth.domain_table is off")
        return service.reload_domains().addCallback(lambda n: {"domains": n})

    @registry.command("domain.dump")
    def domain_dump() -> dict:
        """The local domains: configured (proxy.domains), from the table, and the listeners'."""
        auth = service.auth
        return {"configured": sorted(auth.domains), "table": sorted(auth.table_domains),
                "listeners": sorted(auth.my_hosts())}
