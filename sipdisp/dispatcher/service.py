"""The dispatcher as a Twisted service: builds the :class:`Dispatcher` from
``cfg.dispatcher``, loads the sets (list file at construction, so a bad file
stops start-up; the table once storage answers, retrying), starts probing,
and registers the ``dispatcher.*`` commands in the root's registry.
"""

from twisted.application.service import Service
from twisted.internet import defer
from twisted.python.failure import Failure

from ..commands import CommandError
from ..logs import Logger
from ..storage.retry import CONFIG_LOAD, LoadRetry
from .dispatcher import Dispatcher
from .sources import FileSource, TableSource

log = Logger(namespace="sipdisp.dispatcher")

#: dispatcher keys a SIGHUP reload applies to the running dispatcher
RELOADABLE = ("list_file", "ping_interval", "ping_timeout", "ping_method", "ping_from",
              "ping_reply_codes", "probing_mode", "probing_threshold", "inactive_threshold",
              "load_expire", "load_init_expire", "ping_latency_stats", "latency_estimator_alpha")


def dispatcher_params(cfg):
    """The Dispatcher keyword arguments of ``cfg.dispatcher``."""
    d = cfg.dispatcher
    return dict(ping_interval=d.ping_interval, ping_timeout=d.ping_timeout,
                ping_method=d.ping_method, ping_from=d.ping_from,
                ping_reply_codes=d.ping_reply_codes, probing_mode=d.probing_mode,
                probing_threshold=d.probing_threshold, inactive_threshold=d.inactive_threshold,
                load_expire=d.load_expire, load_init_expire=d.load_init_expire,
                ping_latency_stats=d.ping_latency_stats,
                latency_estimator_alpha=d.latency_estimator_alpha / 1000.0)


def dispatcher_from_config(cfg, core=None):
    """A :class:`Dispatcher` with the parameters of ``cfg.dispatcher``."""
    return Dispatcher(core, **dispatcher_params(cfg))


class DispatcherService(Service):
    """Owns the dispatcher module of the service tree ``root``."""

    name = "dispatcher"

    def __init__(self, root, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.root = root
        self.cfg = root.cfg
        core = root.sip.core
        self.dispatcher = dispatcher_from_config(self.cfg, core)
        root.modules.dispatcher = self.dispatcher
        self._storage = None
        self._own_storage = None
        self._retry = None
        self.loaded = False
        if self.cfg.dispatcher.source == "file":
            self.source = FileSource(self.cfg.dispatcher.list_file, self.cfg.proxy.next_hop)
            self._load_now()
        else:
            self.source = None  # the table, once storage is known (startService)
        register_commands(root.registry, self)
        # SIGHUP (sipdisp/reload.py): new probing parameters apply at once, and
        # every reload re-reads the sets
        for key in RELOADABLE:
            root.reload_hooks[f"dispatcher.{key}"] = self.apply_config
        root.always_hooks.append(self.reload_for_sighup)

    def _load_now(self):
        """Load the list file synchronously (its errors are ConfigErrors)."""
        result = []
        self.source.load().addBoth(result.append)
        outcome = result[0]
        if isinstance(outcome, Failure):
            outcome.raiseException()
        self._apply(outcome)

    def _apply(self, rows):
        summary = self.dispatcher.load(rows, self._reactor.seconds(), self.source.describe())
        self.loaded = True
        fallback = (isinstance(self.source, FileSource) and len(rows) == 1
                    and rows[0].get("description") == "proxy.next_hop")
        if fallback:
            log.warn("dispatcher: list file {path} not found; set 0 is proxy.next_hop {uri}",
                     path=self.source.path, uri=rows[0]["destination"])
        log.info("dispatcher: loaded {sets} set(s), {destinations} destination(s) from "
                 "{source} ({kept} kept, {added} added, {removed} removed)",
                 source=self.source.describe(), **summary)
        return summary

    # -- storage (database source) ---------------------------------------------
    def _find_storage(self):
        storage = self.root.modules.storage
        if storage is None:
            from ..storage import open_storage
            storage = open_storage(self.cfg.storage.url, reactor=self._reactor)
            self._own_storage = storage
        return storage

    # -- life cycle --------------------------------------------------------------
    def startService(self):
        """Read the table (database source) and start probing."""
        super().startService()
        if self.source is None:
            self._storage = self._find_storage()
            self.source = TableSource(self._storage,
                                      table_format=self.cfg.dispatcher.table_format)
            start = self._own_storage.start() if self._own_storage else defer.succeed(None)
            start.addCallback(lambda _: self._load_table())
        self.dispatcher.start(self._reactor.seconds())
        self.root.sip.switchboard.wake()

    def _load_table(self):
        """Read the table, retrying (storage.retry.CONFIG_LOAD) until it loads."""
        if self.running:
            self._retry = LoadRetry(self._reactor, CONFIG_LOAD, self.reload,
                                    self._load_failed).start()

    def _load_failed(self, f, delay):
        log.warn("dispatcher: cannot read the dispatcher table yet ({err}); "
                 "retrying in {s} s", err=f.getErrorMessage(), s=delay)
        return delay if not self.loaded and self.running else None

    def stopService(self):
        """Stop probing and any storage of our own."""
        super().stopService()
        self.dispatcher.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._own_storage is not None:
            return self._own_storage.stop()
        return None

    # -- commands and reloads ------------------------------------------------------
    def reload(self):
        """Re-read the source; a Deferred firing with the summary."""
        d = self.source.load()
        d.addCallback(self._apply)
        return d

    def apply_config(self, cfg):
        """A SIGHUP changed ``dispatcher.*`` keys: apply them to the running dispatcher."""
        self.cfg = cfg
        self.dispatcher.reconfigure(self._reactor.seconds(), **dispatcher_params(cfg))
        if isinstance(self.source, FileSource):
            self.source = FileSource(cfg.dispatcher.list_file, cfg.proxy.next_hop)
        self.root.sip.switchboard.wake()

    def reload_for_sighup(self, cfg):
        """On every SIGHUP: re-read the sets; fires with a phrase for the reload line."""
        if self.source is None:
            return None
        d = self.reload()
        d.addCallback(lambda summary: "dispatcher sets re-read ({kept} kept, {added} added, "
                                      "{removed} removed)".format(**summary))
        return d


def register_commands(registry, service):
    """``dispatcher.list``, ``reload``, ``set_state``, ``add``, ``remove``, ``ping_active``."""
    dispatcher = service.dispatcher
    reactor = service._reactor

    @registry.command("dispatcher.list")
    def list_sets() -> dict:
        """Destination sets with each destination's URI, FLAGS (AP, IP, TX ...), PRIORITY, ATTRS and LOAD."""
        return dispatcher.listing(reactor.seconds())

    @registry.command("dispatcher.reload")
    def reload() -> dict:
        """Re-read the list file or table, keeping each destination's state, counters and load."""
        if service.source is None:
            raise CommandError("dispatcher.reload: the source is not ready yet")
        return service.reload()

    @registry.command("dispatcher.set_state")
    def set_state(state: str, group: int, address: str) -> dict:
        """Set a destination's state: a, i, t or d, optionally followed by p (probing); address 'all' for the whole set."""
        try:
            count = dispatcher.set_state(state, group, address)
        except (KeyError, ValueError) as exc:
            raise CommandError(f"dispatcher.set_state: {exc.args[0]}") from None
        return {"changed": count}

    @registry.command("dispatcher.add")
    def add(group: int, address: str, flags: int = 0, priority: int = 0,
            attrs: str = "") -> dict:
        """Add a destination in memory (a reload drops it, as in Kamailio)."""
        try:
            dest = dispatcher.add(group, address, flags, priority, attrs, reactor.seconds())
        except ValueError as exc:
            raise CommandError(f"dispatcher.add: {exc}") from None
        service.root.sip.switchboard.wake()
        return {"URI": dest.uri, "FLAGS": dest.letters}

    @registry.command("dispatcher.remove")
    def remove(group: int, address: str) -> dict:
        """Remove a destination from memory (a reload brings it back if the source has it)."""
        count = dispatcher.remove(group, address)
        if not count:
            raise CommandError(f"dispatcher.remove: no destination {address} in set {group}")
        return {"removed": count}

    @registry.command("dispatcher.ping_active")
    def ping_active(state: int = None) -> dict:
        """Turn pinging on (1) or off (0); without a state, show it."""
        old = int(dispatcher.ping_active)
        if state is None:
            return {"state": old}
        if state not in (0, 1):
            raise CommandError("dispatcher.ping_active: state must be 0 or 1")
        dispatcher.ping_active = bool(state)
        return {"old": old, "new": state}
