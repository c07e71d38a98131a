"""The load balancer as a Twisted service: builds it from
``cfg.load_balancer`` on the dialog table, loads the destinations (from the
config at once, from the ``load_balancer`` table once storage answers,
retrying), starts probing, and registers ``lb.list``, ``lb.status``,
``lb.reload`` and ``lb.resize``.
"""

from twisted.application.service import Service
from twisted.internet import defer

from ..commands import CommandError
from ..logs import Logger
from ..storage.retry import CONFIG_LOAD, LoadRetry
from .balancer import LoadBalancer, rows_from_config

log = Logger(namespace="sipdisp.loadbalancer")


def balancer_from_config(cfg, dialogs, core=None):
    """A :class:`LoadBalancer` with the parameters of ``cfg.load_balancer``."""
    c = cfg.load_balancer
    return LoadBalancer(dialogs, core, probing_interval=c.probing_interval,
                        probing_method=c.probing_method, probing_from=c.probing_from,
                        probing_reply_codes=c.probing_reply_codes,
                        probing_timeout=c.probing_timeout)


class LoadBalancerService(Service):
    """Owns the load balancer of the service tree ``root`` (after the dialog service)."""

    name = "load_balancer"

    def __init__(self, root, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.root = root
        self.cfg = root.cfg
        self.balancer = balancer_from_config(self.cfg, root.modules.dialogs, root.sip.core)
        root.modules.load_balancer = self.balancer
        self.storage = root.modules.storage
        self._source = self.cfg.load_balancer.source  # kept until a restart
        self._retry = None
        self.loaded = False
        if self._source == "config":
            self._apply(rows_from_config(self.cfg.load_balancer.destinations), "config")
        register_commands(root.registry, self)
        # the dialog table reloads answered calls after a restart (db_mode 1/2):
        # count their loads again once it has (see LoadBalancer.rebind)
        dialog_service = getattr(root, "dialogs", None)
        ready = getattr(dialog_service, "ready", None)
        if ready is not None:
            ready.addCallback(self._dialogs_restored)
        # SIGHUP (sipdisp/reload.py): new destinations and probing parameters apply at once
        root.reload_hooks["load_balancer"] = self.apply_config

    def apply_config(self, cfg):
        """A SIGHUP changed ``load_balancer.*``: new probing parameters, and the
        destinations re-read (from the new config, or the table); a Deferred.
        A new ``source`` waits for a restart."""
        c = cfg.load_balancer
        if c.source != self._source:
            log.warn("load_balancer: source {new} applies at the next restart; still {old}",
                     new=c.source, old=self._source)
        self.balancer.reconfigure(self._reactor.seconds(), probing_interval=c.probing_interval,
                                  probing_method=c.probing_method, probing_from=c.probing_from,
                                  probing_reply_codes=c.probing_reply_codes,
                                  probing_timeout=c.probing_timeout)
        self.cfg = cfg
        d = self.reload()
        self.root.sip.switchboard.wake()
        return d

    def _dialogs_restored(self, result):
        """The dialog table finished its reload: count the restored calls' loads."""
        self.balancer.rebind()
        self.root.sip.switchboard.wake()
        return result

    def _apply(self, rows, source):
        summary = self.balancer.load(rows, source)
        self.loaded = True
        log.info("load_balancer: loaded {groups} group(s), {destinations} destination(s) from "
                 "{source} ({kept} kept, {added} added, {removed} removed)",
                 source=source, **summary)
        return summary

    def reload(self):
        """Re-read the destinations (the table, or the configuration as last
        loaded); a Deferred firing with the summary."""
        if self._source == "config":
            rows = rows_from_config(self.cfg.load_balancer.destinations)
            return defer.succeed(self._apply(rows, "config"))
        if self.storage is None:
            return defer.fail(CommandError("lb.reload: no storage for the load_balancer table"))
        d = self.storage.select("load_balancer", order_by=["id"])
        return d.addCallback(self._apply, "the load_balancer table")

    def startService(self):
        """Read the table (source db) and start probing."""
        super().startService()
        if self._source == "db":
            self._load_table()
        self.balancer.start_probing(self._reactor.seconds())
        self.root.sip.switchboard.wake()

    def _load_table(self):
        """Read the table, retrying (storage.retry.CONFIG_LOAD) until it loads."""
        if self.running:
            self._retry = LoadRetry(self._reactor, CONFIG_LOAD, self.reload,
                                    self._load_failed).start()

    def _load_failed(self, f, delay):
        log.warn("load_balancer: cannot read the load_balancer table yet ({err}); "
                 "retrying in {s} s", err=f.getErrorMessage(), s=delay)
        return delay if not self.loaded and self.running else None

    def stopService(self):
        """Stop probing."""
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self.balancer.stop_probing()


def register_commands(registry, service):
    """``lb.list``, ``lb.status``, ``lb.reload`` and ``lb.resize`` (OpenSIPS' lb_* MI commands)."""
    balancer = service.balancer

    @registry.command("lb.list")
    def lb_list() -> dict:
        """Destinations with group, URI, enabled, probe mode and each resource's capacity (max) and load."""
        return balancer.listing()

    @registry.command("lb.status")
    def lb_status(id: int, status: int = None) -> dict:
        """A destination's status (1 enabled, 0 disabled); with a status, set it."""
        dest = balancer.by_id.get(id)
        if dest is None:
            raise CommandError(f"lb.status: no destination {id}")
        if status is not None:
            if status not in (0, 1):
                raise CommandError("lb.status: status must be 0 or 1")
            balancer.set_status(id, bool(status))
        return {"id": id, "uri": dest.uri, "enabled": int(dest.enabled)}

    @registry.command("lb.reload")
    def lb_reload() -> dict:
        """Re-read the destinations, keeping the calls counted on each (by id) and their health."""
        return service.reload()

    @registry.command("lb.resize")
    def lb_resize(id: int, resource: str, capacity: int) -> dict:
        """Change a destination's capacity of one resource (until the next reload)."""
        try:
            dest = balancer.resize(id, resource, capacity)
        except (KeyError, ValueError) as exc:
            raise CommandError(f"lb.resize: {exc.args[0]}") from None
        return {"id": dest.id, "resource": resource, "max": dest.resources[resource],
                "load": balancer.load_of(dest, resource)}
