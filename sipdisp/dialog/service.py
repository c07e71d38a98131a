"""The dialog table as a Twisted service: builds it from ``cfg.dialog``, puts
it in ``root.modules.dialogs``, reloads the answered calls of the dialog
table at start (``db_mode`` 1 and 2), writes the last changes at stop, and
registers the ``dlg.list``, ``dlg.end``, ``dlg.stats`` and
``dlg.profile_get_size`` commands.
"""

from twisted.application.service import Service
from twisted.internet import defer

from ..commands import CommandError
from ..config.values import parse_status_line
from ..logs import Logger
from ..storage.retry import STATE_LOAD, LoadRetry
from .profiles import Profiles
from .table import DialogTable

log = Logger(namespace="sipdisp.dialog")

#: loading the dialog table at start: attempts (paced by storage.retry.STATE_LOAD)
LOAD_ATTEMPTS = 30


def table_from_config(cfg, core=None, storage=None):
    """A :class:`DialogTable` with the parameters of ``cfg.dialog``."""
    d = cfg.dialog
    return DialogTable(
        core, default_timeout=d.default_timeout, early_timeout=d.early_timeout,
        bye_on_timeout=d.bye_on_timeout, keepalive_interval=d.keepalive_interval,
        keepalive_timeout=d.keepalive_timeout, keepalive_failed_limit=d.keepalive_failed_limit,
        db_mode=d.db_mode, db_update_period=d.db_update_period,
        storage=storage if d.db_mode else None,
        profiles=Profiles(d.profiles_with_value, d.profiles_no_value),
        unmatched_reply=parse_status_line(d.unmatched_reply) if d.unmatched_reply else None,
        max_dialogs=d.max_dialogs)


class DialogService(Service):
    """Owns the dialog table of the service tree ``root``."""

    name = "dialog"

    def __init__(self, root, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.root = root
        self.cfg = root.cfg
        self.storage = root.modules.storage
        self.table = table_from_config(self.cfg, root.sip.core, self.storage)
        root.modules.dialogs = self.table
        self._retry = None
        self.ready = defer.Deferred()
        register_commands(root.registry, self)

    def wake(self):
        """Send what the table queued (BYEs from a command) and re-arm the core's timer."""
        self.root.sip.switchboard.wake()

    def startService(self):
        """Arm the table's timers and, with db_mode 1 or 2, reload the answered calls."""
        super().startService()
        self.table.start(self._reactor.seconds())
        self.wake()
        if self.table.db_mode and self.storage is not None:
            self._retry = LoadRetry(self._reactor, STATE_LOAD, self._read_tables,
                                    self._load_failed, on_loaded=self._restore,
                                    attempts=LOAD_ATTEMPTS).start()
        else:
            self.ready.callback(None)

    def _read_tables(self):
        return defer.gatherResults([self.storage.select("dialog"),
                                    self.storage.select("dialog_vars")], consumeErrors=True)

    def _restore(self, results):
        rows, var_rows = results
        skipped = self.table.stats["foreign_skipped"]
        n = self.table.restore(rows, var_rows, self._reactor.seconds())
        log.info("dialog: restored {n} answered call(s) from the dialog table", n=n)
        skipped = self.table.stats["foreign_skipped"] - skipped
        if skipped:
            # a node taken over while it was away finds its calls re-owned here
            log.info("dialog: left {n} answered call(s) of the dialog table to their "
                     "cluster node(s) {nodes}", n=skipped,
                     nodes=", ".join(sorted(self.table.foreign_owners)))
        self.wake()
        self.ready.callback(n)

    def _load_failed(self, f, delay):
        err = f.value.subFailure.getErrorMessage() if isinstance(
            f.value, defer.FirstError) else f.getErrorMessage()
        if delay is not None and self.running:
            log.warn("dialog: cannot read the dialog table yet ({err}); retrying in {s} s",
                     err=err, s=delay)
            return delay
        log.error("dialog: giving up reading the dialog table: {err}", err=err)
        self.ready.callback(0)
        return None

    def stopService(self):
        """Write the pending changes (db_mode 2) and stop the timers."""
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self.table.db_mode == 2 and self.storage is not None:
            self.table.flush()
        self.table.stop()


def register_commands(registry, service):
    """``dlg.list``, ``dlg.end``, ``dlg.stats`` and ``dlg.profile_get_size``."""
    table = service.table
    reactor = service._reactor

    @registry.command("dlg.list")
    def dlg_list(callid: str = "") -> list:
        """Dialogs in memory (optionally of one Call-ID or id) with both parties, state, times and profiles."""
        now = reactor.seconds()
        dialogs = table.find(callid) if callid else list(table.dialogs.values())
        return [dlg.describe(now) for dlg in dialogs]

    @registry.command("dlg.end")
    def dlg_end(id: str) -> dict:
        """Hang up a call: BYE to both parties; id is 'hash_entry:hash_id' from dlg.list or a Call-ID."""
        dialogs = table.find(id)
        if not dialogs:
            raise CommandError(f"dlg.end: no dialog {id}")
        now = reactor.seconds()
        ended = []
        for dlg in dialogs:
            try:
                table.end(dlg, now)
            except ValueError as exc:
                if len(dialogs) == 1:
                    raise CommandError(f"dlg.end: {exc}") from None
                continue
            ended.append(dlg.id)
        service.wake()
        return {"ended": ended}

    @registry.command("dlg.stats")
    def dlg_stats() -> dict:
        """Dialogs by state (active = answered), profile sizes and counters."""
        return table.snapshot()

    @registry.command("dlg.profile_get_size")
    def profile_get_size(profile: str, value: str = "") -> dict:
        """Dialogs in a profile (with one value, or all)."""
        try:
            size = table.profiles.size(profile, value or None)
        except KeyError as exc:
            raise CommandError(f"dlg.profile_get_size: {exc.args[0]}") from None
        return {"profile": profile, "value": value, "size": size}
