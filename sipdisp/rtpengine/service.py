"""rtpengine control as a Twisted service: the ng UDP socket (the edge
around the sans-IO :class:`~.ng.NgClient`), the
:class:`~.engine.Rtpengine` in ``root.modules.rtpengine``, its pings, the
dialog table's ``ended`` callback, and the ``rtpengine.list``,
``rtpengine.enable``, ``rtpengine.ping`` and ``rtpengine.stats`` commands.
"""

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol

from ..commands import CommandError
from ..config import ConfigError
from ..logs import Logger
from ..proxy.suspend import Suspender
from .engine import Rtpengine
from .ng import NgClient, parse_sockets

log = Logger(namespace="sipdisp.rtpengine")


class NgProtocol(DatagramProtocol):
    """The ng socket: datagrams in go to the client, then the core is woken
    (a resumed route or a held reply queued messages)."""

    def __init__(self, client, clock, wake):
        self.client = client
        self.clock = clock
        self.wake = wake

    def datagramReceived(self, data, addr):
        """One ng reply."""
        try:
            self.client.on_datagram(data, addr, self.clock())
        except Exception:
            log.failure("rtpengine reply from {addr}", addr=addr)
        self.wake()

    def send(self, data, addr):
        """Send one ng request (dropped while the socket is closed)."""
        if self.transport is not None:
            self.transport.write(data, addr)


class RtpengineService(Service):
    """Owns rtpengine control of the service tree ``root`` (built after the dialogs)."""

    name = "rtpengine"

    def __init__(self, root, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.root = root
        cfg = self.cfg = root.cfg.rtpengine
        self.engine = None
        self.client = None
        self.protocol = None
        self.port = None
        if cfg.sockets.strip():
            try:
                instances = parse_sockets(cfg.sockets)
            except ValueError as exc:
                raise ConfigError("rtpengine.sockets", str(exc)) from None
            core = root.sip.core
            wake = root.sip.switchboard.wake
            self.protocol = NgProtocol(None, reactor.seconds, wake)
            self.client = NgClient(instances, self.protocol.send, core.timer,
                                   timeout=cfg.timeout, retries=cfg.retries,
                                   ping_interval=cfg.ping_interval)
            self.protocol.client = self.client
            # a request waits at most for every instance's retransmissions
            wait = cfg.timeout * (cfg.retries + 1) * len(instances) + 5.0
            suspender = Suspender(core, clock=reactor.seconds, wake=wake, timeout=wait)
            self.engine = Rtpengine(self.client, suspender, core, cfg.max_sessions,
                                    clock=reactor.seconds)
            dialogs = root.modules.dialogs
            if dialogs is not None:
                dialogs.callbacks["ended"].append(self.engine.on_dialog_ended)
            # SIGHUP applies these at once; a new sockets list needs a restart
            for key in ("timeout", "retries", "ping_interval"):
                root.reload_hooks[f"rtpengine.{key}"] = self._reload
            root.reload_hooks["rtpengine.max_sessions"] = self._reload
        root.modules.rtpengine = self.engine
        register_commands(root.registry, self)

    def _reload(self, cfg):
        section = cfg.rtpengine
        client = self.client
        client.timeout, client.retries = section.timeout, section.retries
        client.ping_interval = section.ping_interval
        self.engine.max_sessions = section.max_sessions

    def startService(self):
        """Bind the ng socket, ping every instance."""
        super().startService()
        if self.client is None:
            return
        self.port = self._reactor.listenUDP(0, self.protocol, interface=self.cfg.bind)
        self.client.start(self._reactor.seconds())
        self.root.sip.switchboard.wake()
        log.info("rtpengine: {n} instance(s): {urls}", n=len(self.client.instances),
                 urls=" ".join(f"{i.url}={i.weight}" for i in self.client.instances))

    def stopService(self):
        """Close the ng socket, stop pinging."""
        super().stopService()
        if self.client is not None:
            self.client.stop()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


def register_commands(registry, service):
    """``rtpengine.list``, ``rtpengine.enable``, ``rtpengine.ping``, ``rtpengine.stats``."""

    def _client():
        if service.client is None:
            raise CommandError("rtpengine: rtpengine.sockets is not set")
        return service.client

    def _instance(url):
        inst = _client().instance_named(url)
        if inst is None:
            raise CommandError(f"rtpengine: no instance {url!r}")
        return inst

    @registry.command("rtpengine.list")
    def rtpengine_list() -> list:
        """The rtpengine instances: url, weight, state (active/inactive/disabled), last ping and pong, counters."""
        return [inst.snapshot() for inst in _client().instances]

    @registry.command("rtpengine.enable")
    def rtpengine_enable(url: str, enable: int = 1) -> dict:
        """Enable (1) or disable (0) an instance for new calls (udp:host:port or host:port)."""
        inst = _instance(url)
        inst.admin = bool(int(enable))
        log.info("rtpengine {url} {what} by command", url=inst.url,
                 what="enabled" if inst.admin else "disabled")
        return inst.snapshot()

    @registry.command("rtpengine.ping")
    def rtpengine_ping(url: str = "") -> defer.Deferred:
        """Ping every instance (or one): url -> true when it answered."""
        client = _client()
        insts = [_instance(url)] if url else client.instances
        now = service._reactor.seconds()
        ds = [client.ping(inst, now) for inst in insts]
        service.root.sip.switchboard.wake()
        d = defer.gatherResults(ds)
        d.addCallback(lambda results: {inst.url: ok for inst, ok in zip(insts, results)})
        return d

    @registry.command("rtpengine.stats")
    def rtpengine_stats() -> dict:
        """Counters: offers, answers, deletes, failures, calls remembered, commands pending."""
        if service.engine is None:
            raise CommandError("rtpengine: rtpengine.sockets is not set")
        return service.engine.snapshot()
