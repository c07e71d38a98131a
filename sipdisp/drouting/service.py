"""drouting as a Twisted service: builds :class:`DRouting` from
``cfg.drouting`` when enabled, loads OpenSIPS' four tables from storage once
it answers (retrying), starts gateway probing, and registers ``dr.reload``,
``dr.gw_status``, ``dr.carrier_status`` and ``dr.number_routing``.

Rows that cannot be loaded (a time recurrence it cannot evaluate, a gwlist
naming an unknown gateway ...) are refused with one line naming the row:
at start the tables stay empty (do_routing fails, nothing routes by a rule
half read), on ``dr.reload`` the running tables stay.
"""

from twisted.application.service import Service
from twisted.internet import defer

from ..commands import CommandError
from ..logs import Logger
from ..storage.retry import CONFIG_LOAD, LoadRetry
from .router import DRouting, LoadError
from .settings import zone

log = Logger(namespace="sipdisp.drouting")

#: the tables, in the order they are read, with their ordering column
TABLES = (("dr_gateways", "id"), ("dr_carriers", "id"), ("dr_rules", "ruleid"),
          ("dr_groups", "id"))


def drouting_from_config(cfg, core=None):
    """A :class:`DRouting` with the parameters of ``cfg.drouting``."""
    c = cfg.drouting
    return DRouting(core, probing_interval=c.probing_interval, probing_method=c.probing_method,
                    probing_from=c.probing_from, probing_reply_codes=c.probing_reply_codes,
                    probing_timeout=c.probing_timeout, default_group=c.default_group,
                    use_domain=c.use_domain, tz=zone(c.timezone), log=log)


class DRoutingService(Service):
    """Owns the drouting tables of the service tree ``root`` (None when disabled)."""

    name = "drouting"

    def __init__(self, root, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.root = root
        self.cfg = root.cfg
        self.storage = root.modules.storage
        self.router = None
        self.loaded = False
        self._retry = None
        if self.cfg.drouting.enabled:
            self.router = drouting_from_config(self.cfg, root.sip.core)
            root.modules.drouting = self.router
        register_commands(root.registry, self)

    def read_tables(self):
        """A Deferred firing with ``{table: rows}`` of the four tables."""
        if self.storage is None:
            return defer.fail(CommandError("drouting: no storage for the dr_* tables"))
        ds = [self.storage.select(table, order_by=[key]) for table, key in TABLES]
        d = defer.gatherResults(ds, consumeErrors=True)
        d.addErrback(lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError)
                     else f)
        return d.addCallback(lambda results: dict(zip((t for t, _ in TABLES), results)))

    def apply(self, tables):
        """Load read rows into the router; LoadError leaves the running tables."""
        summary = self.router.load(tables["dr_gateways"], tables["dr_rules"],
                                   tables["dr_carriers"], tables["dr_groups"])
        self.loaded = True
        log.info("drouting: loaded {gateways} gateway(s), {carriers} carrier(s), {rules} "
                 "rule(s), {groups} group member(s)", **summary)
        return summary

    def reload(self):
        """Re-read the tables; a Deferred firing with the summary, or failing
        with a CommandError naming the row that cannot be loaded."""
        if self.router is None:
            return defer.fail(CommandError("drouting is off (drouting.enabled: false)"))

        def refused(f):
            f.trap(LoadError)
            self.router.stats["loads_refused"] += 1
            log.error("drouting: tables refused, the running ones stay: {err}",
                      err=f.getErrorMessage())
            raise CommandError(f"dr.reload: {f.getErrorMessage()}")
        return self.read_tables().addCallback(self.apply).addErrback(refused)

    def startService(self):
        """Read the tables (retrying while storage cannot answer) and start probing."""
        super().startService()
        if self.router is None:
            return
        self._retry = LoadRetry(self._reactor, CONFIG_LOAD, self._first_load,
                                self._load_failed).start()
        self.router.start_probing(self._reactor.seconds())
        self.root.sip.switchboard.wake()

    def _first_load(self):
        d = self.read_tables().addCallback(self.apply)

        def refused(f):
            # bad rows stay bad until an operator fixes them: no retry, one line
            f.trap(LoadError)
            self.router.stats["loads_refused"] += 1
            log.error("drouting: tables refused, no rule routes until dr.reload: {err}",
                      err=f.getErrorMessage())
        return d.addErrback(refused)

    def _load_failed(self, f, delay):
        log.warn("drouting: cannot read the dr_* tables yet ({err}); retrying in {s} s",
                 err=f.getErrorMessage(), s=delay)
        return delay if not self.loaded and self.running else None

    def stopService(self):
        """Stop probing and any pending load."""
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self.router is not None:
            self.router.stop_probing()


def register_commands(registry, service):
    """``dr.reload``, ``dr.gw_status``, ``dr.carrier_status`` and ``dr.number_routing``
    (OpenSIPS' dr_reload, dr_gw_status, dr_carrier_status, dr_number_routing)."""

    def router(command):
        if service.router is None:
            raise CommandError(f"{command}: drouting is off (drouting.enabled: false)")
        return service.router

    @registry.command("dr.reload")
    def dr_reload() -> dict:
        """Re-read dr_gateways, dr_rules, dr_carriers and dr_groups; bad rows refuse the whole reload."""
        return service.reload()

    @registry.command("dr.gw_status")
    def dr_gw_status(gw_id: str = None, status: int = None) -> list:
        """Gateways with their state; with a gateway id, that one; with a status (0 disable, 1 enable, 2 probing), set it."""
        dr = router("dr.gw_status")
        if gw_id is not None and gw_id not in dr.gateways:
            raise CommandError(f"dr.gw_status: no gateway {gw_id!r}")
        if status is not None:
            if gw_id is None:
                raise CommandError("dr.gw_status: a status needs a gateway id")
            try:
                dr.set_gw_status(gw_id, status)
            except ValueError as exc:
                raise CommandError(f"dr.gw_status: {exc}") from None
        return dr.gw_listing(gw_id)

    @registry.command("dr.carrier_status")
    def dr_carrier_status(carrier_id: str, status: int = None) -> dict:
        """A carrier's status (1 enabled, 0 disabled); with a status, set it."""
        dr = router("dr.carrier_status")
        if carrier_id not in dr.carriers:
            raise CommandError(f"dr.carrier_status: no carrier {carrier_id!r}")
        if status is not None:
            try:
                dr.set_carrier_status(carrier_id, status)
            except ValueError as exc:
                raise CommandError(f"dr.carrier_status: {exc}") from None
        carrier = dr.carriers[carrier_id]
        return {"id": carrier.carrierid, "enabled": int(carrier.enabled)}

    @registry.command("dr.number_routing")
    def dr_number_routing(group: int, number: str) -> dict:
        """The rule and gateways (with the user each would get) a number would use now in a group."""
        dr = router("dr.number_routing")
        return dr.number_routing(group, number, service._reactor.seconds())
