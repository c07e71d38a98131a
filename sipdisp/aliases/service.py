"""alias_db as a Twisted service: builds the alias table over the shared
storage from ``cfg.aliases``, puts it in ``modules.aliases`` for the route,
and registers ``alias.list``, ``alias.add`` and ``alias.rm``.

Every lookup reads the table, as alias_db does, so an alias written by
``sipdisp alias add`` (or any SQL client) is used from the next call on
without a reload. The storage also keeps a copy of the table
(``Storage.cache``) that answers the lookups only while the database is
unreachable: calls go on with their aliases through an outage instead of
waiting for it to end.
"""

from twisted.application.service import Service

from ..commands import CommandError
from ..logs import Logger, RepeatLimiter
from ..proxy.suspend import Suspender
from .aliases import AliasModule, Aliases

log = Logger(namespace="sipdisp.aliases")


class AliasService(Service):
    """Owns the alias lookups of the service tree ``root`` (when ``aliases.enabled``)."""

    name = "aliases"

    def __init__(self, root, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.root = root
        a = root.cfg.aliases
        core = root.sip.core
        self.aliases = Aliases(root.modules.storage, a.table, a.use_domain, a.domain_prefix)
        suspender = Suspender(core, clock=reactor.seconds, wake=root.sip.switchboard.wake)
        self.module = AliasModule(self.aliases, suspender,
                                  RepeatLimiter(log, stats=core.stats))
        root.modules.aliases = self.module
        register_commands(root.registry, self.aliases)

    def startService(self):
        """Keep the outage copy of the table and say where aliases come from."""
        super().startService()
        storage = self.aliases.storage
        if hasattr(storage, "cache"):
            # not readable yet: the storage loads the copy once it connects
            storage.cache(self.aliases.table).addErrback(lambda f: log.info(
                "aliases: the outage copy of {table} waits for the database ({err})",
                table=self.aliases.table, err=f.getErrorMessage()))
        log.info("aliases: alias_db_lookup reads the {table} table of {url} at each lookup "
                 "(use_domain {ud})", table=self.aliases.table,
                 url=getattr(self.aliases.storage, "url", "storage"),
                 ud="on" if self.aliases.use_domain else "off")


def register_commands(registry, aliases):
    """``alias.list``, ``alias.add`` and ``alias.rm`` over ``aliases`` (an :class:`Aliases`)."""

    @registry.command("alias.list")
    def alias_list(target: str = "") -> list:
        """Aliases (alias -> user@domain), all or those of one user."""
        try:
            return aliases.list(target or None)
        except ValueError as exc:
            raise CommandError(f"alias.list: {exc}") from None

    @registry.command("alias.add")
    def alias_add(alias: str, target: str) -> dict:
        """Point an alias at a user: 'alias.add 1000@example.com alice@example.com'."""
        try:
            d = aliases.add(alias, target)
        except ValueError as exc:
            raise CommandError(f"alias.add: {exc}") from None
        return d.addCallback(lambda new: {"alias": alias, "target": target,
                                          "added" if new else "updated": True})

    @registry.command("alias.rm")
    def alias_rm(alias: str) -> dict:
        """Remove an alias: 'alias.rm 1000@example.com'."""
        try:
            d = aliases.remove(alias)
        except ValueError as exc:
            raise CommandError(f"alias.rm: {exc}") from None

        def done(n):
            if not n:
                raise CommandError(f"alias.rm: no alias {alias}")
            return {"alias": alias, "removed": n}
        return d.addCallback(done)
