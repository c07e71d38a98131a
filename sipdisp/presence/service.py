"""The presence module as a Twisted service: builds the event packages and
the :class:`~sipdisp.presence.server.PresenceServer` from ``cfg.presence``
over the shared storage, puts it in ``root.modules.presence``, feeds it the
dialog table's calls (busy lamps, :mod:`~sipdisp.presence.dialogfeed`),
reads the publications and subscriptions back at start, and registers the
``presence.list``, ``presence.watchers``, ``presence.update_watchers`` and
``presence.stats`` commands.
"""

from twisted.application.service import Service
from twisted.internet import defer

from ..commands import CommandError
from ..logs import Logger
from ..proxy.suspend import Suspender
from ..storage.retry import STATE_LOAD, LoadRetry
from .dialogfeed import DialogFeed
from .packages import build_packages
from .server import PresenceParams, PresenceServer

log = Logger(namespace="sipdisp.presence")

#: reading the presence tables back at start: attempts (paced by storage.retry.STATE_LOAD)
LOAD_ATTEMPTS = 30


class PresenceService(Service):
    """Owns the presence server of the service tree ``root`` (built after the
    dialog table and the registrar)."""

    name = "presence"

    def __init__(self, root, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.root = root
        self.cfg = root.cfg
        section = self.cfg.presence
        core = root.sip.core
        self.server = None
        self.feed = None
        self._retry = None
        #: fires with what was restored once the tables were read back (or given up on)
        self.ready = defer.Deferred()
        storage = root.modules.storage
        wake = root.sip.switchboard.wake
        self.suspender = Suspender(core, clock=reactor.seconds, wake=wake)
        if storage is not None:
            packages = build_packages(section.force_active,
                                      max_body_size=section.max_body_size)
            self.server = PresenceServer(core, storage, packages,
                                         PresenceParams.from_config(section),
                                         clock=reactor.seconds, wake=wake,
                                         suspender=self.suspender,
                                         location=getattr(root.modules, "usrloc", None))
            dialogs = getattr(root.modules, "dialogs", None)
            # the busy lamps cost a publication (and its row) per call side: only
            # when the server answers presence
            if section.enabled and dialogs is not None and hasattr(dialogs, "callbacks"):
                self.feed = DialogFeed(self.server, dialogs, is_myself=core.is_myself)
        root.modules.presence = self.server
        register_commands(root.registry, self)

    def startService(self):
        """Read the unexpired publications and subscriptions back (with
        ``presence.enabled``; a route calling handle_publish without it
        starts from an empty state)."""
        super().startService()
        if self.server is not None and self.cfg.presence.enabled:
            self.server.loading()
            self._retry = LoadRetry(self._reactor, STATE_LOAD, self._read_tables,
                                    self._load_failed, on_loaded=self._restore,
                                    attempts=LOAD_ATTEMPTS).start()
            p = self.cfg.presence
            log.info("presence: PUBLISH and SUBSCRIBE answered for the proxy's domains "
                     "(force_active {fa}, expires {lo:g}..{hi:g} s, at most {subs} "
                     "subscriptions)", fa=p.force_active, lo=p.min_expires, hi=p.max_expires,
                     subs=p.max_subscriptions)
        else:
            self.ready.callback(None)

    def _read_tables(self):
        return self.server.read_state(self._reactor.seconds())

    def _restore(self, results):
        restored = self.server.restore(results, self._reactor.seconds())
        self.server.loaded()
        self.root.sip.switchboard.wake()
        self.ready.callback(restored)

    def _load_failed(self, f, delay):
        err = f.value.subFailure.getErrorMessage() if isinstance(
            f.value, defer.FirstError) else f.getErrorMessage()
        if delay is not None and self.running:
            log.warn("presence: cannot read the presence tables yet ({err}); retrying in "
                     "{s} s", err=err, s=delay)
            return delay
        log.error("presence: giving up reading the presence tables: {err}; starting "
                  "without the stored state", err=err)
        self.server.loaded()
        self.ready.callback(None)
        return None

    def stopService(self):
        """Disarm the timers; the rows stay for the next start."""
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self.server is not None:
            self.server.stop()
        if self.feed is not None:
            self.feed.detach()


def register_commands(registry, service):
    """``presence.list``, ``presence.watchers``, ``presence.update_watchers`` and ``presence.stats``."""

    def _server():
        if service.server is None:
            raise CommandError("presence: no storage to keep presence state with")
        return service.server

    @registry.command("presence.list")
    def presence_list(presentity: str = "") -> list:
        """Presentities with published state (one sip:user@domain, or all), with their publications."""
        return _server().list(presentity)

    @registry.command("presence.watchers")
    def presence_watchers(presentity: str = "") -> list:
        """Live subscriptions (of one presentity sip:user@domain, or all)."""
        return _server().watchers(presentity)

    @registry.command("presence.update_watchers")
    def presence_update_watchers(presentity: str, event: str = "presence") -> int:
        """Apply the watchers table's rows of one presentity (sip:user@domain) to its live subscriptions (Kamailio pres_update_watchers); how many changed."""
        return _server().update_watchers(presentity, event)

    @registry.command("presence.stats")
    def presence_stats() -> dict:
        """Presence counters: PUBLISHes by outcome, subscriptions, NOTIFYs sent and failed, limits."""
        return _server().snapshot()
