"""The msilo module as a Twisted service: builds the
:class:`~sipdisp.msilo.silo.MessageSilo` from ``cfg.msilo`` over the shared
storage and the registrar's location table, puts it in
``root.modules.msilo``, arms its expiry sweep (at start with ``msilo.enabled``,
else at the first stored message), and registers the ``msilo.list`` and
``msilo.stats`` commands.
"""

from twisted.application.service import Service

from ..commands import CommandError
from ..logs import Logger
from ..proxy.suspend import Suspender
from .silo import MessageSilo, SiloParams

log = Logger(namespace="sipdisp.msilo")


class MsiloService(Service):
    """Owns the message silo of the service tree ``root`` (built after the registrar)."""

    name = "msilo"

    def __init__(self, root, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.root = root
        self.cfg = root.cfg
        core = root.sip.core
        wake = root.sip.switchboard.wake
        self.suspender = Suspender(core, clock=reactor.seconds, wake=wake)
        self.silo = None
        storage, location = root.modules.storage, root.modules.usrloc
        if storage is not None and location is not None:
            self.silo = MessageSilo(core, storage, location, self.suspender,
                                    SiloParams.from_config(self.cfg.msilo),
                                    clock=reactor.seconds, wake=wake)
        root.modules.msilo = self.silo
        register_commands(root.registry, self)

    def startService(self):
        """Arm the expiry sweep with ``msilo.enabled`` (else the first m_store arms it)."""
        super().startService()
        if self.silo is not None and self.cfg.msilo.enabled:
            self.silo.start(self._reactor.seconds())
            self.root.sip.switchboard.wake()
            log.info("msilo: offline messages kept {days:g} day(s), at most {n} per user",
                     days=self.cfg.msilo.expire_time / 86400,
                     n=self.cfg.msilo.max_messages)

    def stopService(self):
        """Disarm the sweep."""
        super().stopService()
        if self.silo is not None:
            self.silo.stop()


def register_commands(registry, service):
    """``msilo.list`` and ``msilo.stats``."""

    def _silo():
        if service.silo is None:
            raise CommandError("msilo: no storage or registrar to keep messages with")
        return service.silo

    @registry.command("msilo.list")
    def msilo_list(user: str = "") -> list:
        """Stored offline messages, oldest first, of one user (user or user@domain) or all."""
        return _silo().list(user)

    @registry.command("msilo.stats")
    def msilo_stats() -> dict:
        """Offline message counters: stored, refused over the limit, sent, delivered, failed, expired."""
        return _silo().snapshot()
