"""The dialplan as a Twisted service: builds the rules from ``cfg.dialplan``,
puts them in ``modules.dialplan`` for the route, loads the table at start
(retrying while the storage is not ready, storage.retry.CONFIG_LOAD) and
registers ``dp.reload``, ``dp.translate``, ``dp.dump`` and ``dp.list``
(also under Kamailio's names ``dialplan.reload|translate|dump``).

As Kamailio and OpenSIPS do, the rules live in memory: a change to the
table applies at the next ``dp.reload`` (or restart). A row that cannot be
compiled is refused with one log line naming its id and the reason, and
counted (``sipdisp_dialplan_rules_refused_total``); the other rows load.
"""

from twisted.application.service import Service

from ..commands import CommandError
from ..logs import Logger
from ..storage.retry import CONFIG_LOAD, LoadRetry
from .dialplan import Dialplan

log = Logger(namespace="sipdisp.dialplan")


class DialplanService(Service):
    """Owns the dialplan rules of the service tree ``root`` (when ``dialplan.enabled``)."""

    name = "dialplan"

    def __init__(self, root, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.root = root
        self.table = root.cfg.dialplan.table
        self.storage = root.modules.storage
        self.dialplan = Dialplan(root.functions.variables)
        self.loaded = False
        self._retry = None
        root.modules.dialplan = self.dialplan
        register_commands(root.registry, self)

    def reload(self):
        """Read the table again and replace the rules; a Deferred firing with
        ``{"rules", "dpids", "refused"}``. On failure the rules stay as they were."""
        d = self.storage.select(self.table, order_by=["dpid", "pr", "id"])
        return d.addCallback(self._apply)

    def _apply(self, rows):
        summary = self.dialplan.load(rows)
        self.loaded = True
        for row_id, reason in summary["refused"]:
            log.error("dialplan: row id {id} of {table} refused, rule skipped: {why}",
                      id=row_id, table=self.table, why=reason)
        log.info("dialplan: loaded {rules} rule(s) of {dpids} dialplan id(s) from {table}"
                 "{refused}", rules=summary["rules"], dpids=summary["dpids"], table=self.table,
                 refused=f" ({len(summary['refused'])} refused)" if summary["refused"] else "")
        return summary

    def startService(self):
        """Load the table, retrying until it loads."""
        super().startService()
        self._retry = LoadRetry(self._reactor, CONFIG_LOAD, self.reload, self._load_failed)
        self._retry.start()

    def _load_failed(self, f, delay):
        log.warn("dialplan: cannot read the {table} table yet ({err}); retrying in {s} s",
                 table=self.table, err=f.getErrorMessage(), s=delay)
        return delay if not self.loaded and self.running else None

    def stopService(self):
        """Stop retrying the load."""
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()


def register_commands(registry, service):
    """``dp.reload``, ``dp.translate``, ``dp.dump``/``dp.list``, and the same under ``dialplan.``."""
    dialplan = service.dialplan

    def reload() -> dict:
        """Re-read the dialplan table; rows that do not compile are refused and listed."""
        d = service.reload()

        def shape(summary):
            return {"rules": summary["rules"], "dpids": summary["dpids"],
                    "refused": [{"id": i, "reason": r} for i, r in summary["refused"]]}

        def failed(f):
            raise CommandError(f"dp.reload: cannot read {service.table}: "
                               f"{f.getErrorMessage()}; the rules in memory stay")
        return d.addCallbacks(shape, failed)

    def translate(dpid: int, input: str) -> dict:
        """Translate a number with the rules of a dialplan id: 'dp.translate 0 0049301234'."""
        if isinstance(input, str) and input.startswith("s:"):
            input = input[2:]  # kamcmd's marker for a string that looks like a number
        result = dialplan.translate(int(dpid), str(input))
        if result is None:
            raise CommandError(f"dp.translate: no rule of dialplan id {dpid} matches {input!r}")
        if result.output is None:
            raise CommandError(f"dp.translate: rule id {result.rule.id} matched {input!r} but "
                               f"its subst_exp {result.rule.subst_exp!r} does not")
        return {"Output": result.output, "Attributes": result.attrs, "Rule": result.rule.id}

    def dump(dpid: int = None) -> list:
        """The rules in memory (of one dialplan id), in the order they are tried."""
        return dialplan.dump(dpid)

    for prefix in ("dp", "dialplan"):
        registry.register(f"{prefix}.reload", reload)
        registry.register(f"{prefix}.translate", translate)
        registry.register(f"{prefix}.dump", dump)
    registry.register("dp.list", dump)
