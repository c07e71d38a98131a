"""Flood protection as a Twisted service: builds the
:class:`~sipdisp.flood.guard.FloodGuard` and the hash tables from the
``flood`` section, hands the edge its check (``switchboard.flood``), puts
the module in ``root.modules.flood``, sweeps expired items on the core's
timer heap and registers ``ipban.*``, ``pike.top`` and ``htable.*``.
"""

import ipaddress

from twisted.application.service import Service

from ..commands import CommandError
from ..logs import Logger
from .guard import FloodGuard
from .htable import HTable
from .module import Flood
from .pike import Pike

log = Logger(namespace="sipdisp.flood")

#: seconds between sweeps of expired items and quiet sources
SWEEP_INTERVAL = 10.0


class Trust:
    """Who is never banned: ``auth.trusted`` addresses and networks, the
    proxy's own addresses (Kamailio's ``src_ip!=myself``), and whatever
    the ``checks`` say (dispatcher destinations, drouting gateways)."""

    def __init__(self, trusted=(), own=lambda: (), checks=()):
        self.own = own
        self.checks = list(checks)
        self.set_trusted(trusted)

    def set_trusted(self, trusted):
        """Replace the configured addresses and networks (also on SIGHUP)."""
        hosts, nets = set(), []
        for item in trusted:
            try:
                net = ipaddress.ip_network(item, strict=False)
            except ValueError:
                hosts.add(item.lower())
                continue
            if net.num_addresses == 1:
                hosts.add(str(net.network_address))
            else:
                nets.append(net)
        self.hosts, self.nets = hosts, nets

    def __call__(self, host):
        """True if ``host`` is never banned."""
        if host in self.hosts or host in self.own():
            return True
        if self.nets:
            try:
                addr = ipaddress.ip_address(host)
            except ValueError:
                addr = None
            if addr is not None and any(addr in n for n in self.nets if n.version == addr.version):
                return True
        return any(check(host) for check in self.checks)


def build_flood(section, trusted=lambda host: False, stats=None):
    """The :class:`Flood` module of a loaded ``cfg.flood`` section."""
    tables = {name: HTable(name, spec["autoexpire"], spec["max_items"])
              for name, spec in section.htables.items()}
    bans = tables.get(section.ban_table)
    if bans is None:
        bans = HTable(section.ban_table, section.ban_time, section.max_bans)
    pike = Pike(section.sampling_time_unit, section.reqs_density_per_unit,
                section.remove_latency, section.max_sources)
    guard = FloodGuard(bans, pike, trusted=trusted, stats=stats, automatic=section.enabled,
                       ban_time=section.ban_time, scanners=section.scanner_user_agents)
    return Flood(guard, tables)


class _Sweeper:
    """A timer-heap owner freeing expired items every SWEEP_INTERVAL seconds."""

    def __init__(self, flood, timer):
        self.flood = flood
        self.timers = {}
        self._timer = timer(self, "sweep")

    def start(self, now):
        """Arm the first sweep."""
        self._timer.arm(now + SWEEP_INTERVAL)

    def stop(self):
        """Disarm."""
        self._timer.cancel()

    def on_timer(self, name, now):
        """Sweep, then re-arm."""
        items, sources = self.flood.sweep(now)
        if items or sources:
            log.debug("flood: freed {items} expired item(s), {sources} quiet source(s)",
                      items=items, sources=sources)
        self._timer.arm(now + SWEEP_INTERVAL)


class FloodService(Service):
    """Owns the flood module of the service tree ``root``."""

    name = "flood"

    def __init__(self, root, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.root = root
        cfg = root.cfg
        core = root.sip.core
        modules = root.modules
        own = _own_hosts(core)
        self.trust = Trust(cfg.auth.trusted, own,
                           [_dispatcher_check(modules), _drouting_check(modules)])
        self.flood = build_flood(cfg.flood, self.trust, core.stats)
        modules.flood = self.flood
        # the edge: a banned source is dropped before parsing, refused at accept
        root.sip.switchboard.flood = self.flood.guard
        root.always_hooks.append(lambda new: self.trust.set_trusted(new.auth.trusted))
        self._sweeper = _Sweeper(self.flood, core.timer)
        register_commands(root.registry, self)
        if cfg.flood.enabled:
            log.info("flood protection on: more than {n} requests in {unit:g} s from one "
                     "source bans it for {ban:g} s", n=cfg.flood.reqs_density_per_unit,
                     unit=cfg.flood.sampling_time_unit, ban=cfg.flood.ban_time)

    def startService(self):
        """Arm the sweep."""
        super().startService()
        self._sweeper.start(self._reactor.seconds())
        self.root.sip.switchboard.wake()

    def stopService(self):
        """Disarm."""
        super().stopService()
        self._sweeper.stop()


def _own_hosts(core):
    cache = [None, frozenset()]

    def own():
        listeners = core.listeners
        if cache[0] is not listeners:
            cache[0] = listeners
            cache[1] = frozenset(h for lst in listeners
                                 for h in (lst.host, lst.advertised_host) if h)
        return cache[1]
    return own


def _dispatcher_check(modules):
    def check(host):
        dispatcher = modules.dispatcher
        return dispatcher is not None and any(
            host in dest.addrs for dest in dispatcher.destinations())
    return check


def _drouting_check(modules):
    def check(host):
        router = modules.drouting
        return router is not None and router.is_from_gw(host, None, ignore_port=True)
    return check


def register_commands(registry, service):
    """``ipban.list``, ``ipban.add``, ``ipban.remove``, ``pike.top``, ``htable.dump``."""
    flood = service.flood
    clock = service._reactor.seconds

    @registry.command("ipban.list")
    def ban_list() -> list:
        """The banned source addresses and how many seconds each ban has left."""
        now = clock()
        return [{"address": k, "value": v, "expires_in": round(e - now, 1) if e else None}
                for k, v, e in flood.bans.live(now)]

    @registry.command("ipban.add")
    def ban_add(address: str, seconds: float = 0) -> dict:
        """Ban an address for 'seconds' (default flood.ban_time): 'ipban.add 192.0.2.7 600'."""
        if seconds < 0:
            raise CommandError("ipban.add: seconds must be >= 0")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise CommandError(f"ipban.add: {address!r} is not an IP address") from None
        if not flood.guard.ban(address, clock(), seconds or None, reason="ipban.add"):
            raise CommandError(f"ipban.add: {address} is trusted (auth.trusted, a dispatcher "
                               "destination, a gateway or this proxy) and is never banned")
        return {"address": address, "banned": True}

    @registry.command("ipban.remove")
    def ban_remove(address: str) -> dict:
        """Lift the ban of an address: 'ipban.remove 192.0.2.7' (removed: 0 when not banned)."""
        return {"address": address, "removed": int(flood.guard.unban(address))}

    @registry.command("pike.top")
    def top(limit: int = 20) -> list:
        """The busiest source addresses: requests in the last sampling_time_unit, hot or not."""
        now = clock()
        guard = flood.guard
        return [{"address": host, "requests": round(rate, 1),
                 "hot": rate > guard.pike.density,
                 "banned": flood.bans.get(host, now) is not None}
                for host, rate in guard.pike.top(now, limit)]

    @registry.command("htable.dump")
    def dump(table: str) -> list:
        """The live items of a hash table: 'htable.dump ipban'."""
        try:
            t = flood.table(table)
        except KeyError as exc:
            raise CommandError(f"htable.dump: {exc.args[0]}") from None
        now = clock()
        return [{"name": k, "value": v, "expires_in": round(e - now, 1) if e else None}
                for k, v, e in t.live(now)]
