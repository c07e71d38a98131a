"""The sipdisp Service tree: the SIP core with its listeners, and later the
storage, dispatcher, registrar and console services beside it."""

from twisted.application.service import MultiService, Service
from twisted.internet.defer import gatherResults, maybeDeferred
from twisted.logger import Logger

from .proxy import ProxyCore, make_seed_route
from .transport.edge import Switchboard
from .transport.listeners import Connector, bind_listeners, server_tls_options

log = Logger()


class SipService(Service):
    """Binds the listeners and runs the proxy core on the reactor."""

    def __init__(self, cfg, route=None, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.cfg = cfg
        if route is None:
            route = make_seed_route(cfg.proxy.next_hop, cfg.proxy.branch_timeout)
        self.core = ProxyCore(
            [], route, t1=cfg.sip.t1, t2=cfg.sip.t2, t4=cfg.sip.t4,
            fr_timer=cfg.sip.fr_timer, fr_inv_timer=cfg.sip.fr_inv_timer,
            max_message_size=cfg.sip.max_message_size, domains=cfg.proxy.domains,
            max_forwards=cfg.proxy.max_forwards, server_header=cfg.sip.server_header)
        self.switchboard = Switchboard(self.core, reactor, cfg.connections.max)
        self.switchboard.connector = Connector(reactor, self.switchboard, cfg)
        self.listeners = []
        self._ports = []

    def privilegedStartService(self):
        cfg = self.cfg
        tls = None
        if cfg.listen.tls or cfg.listen.wss:
            tls = server_tls_options(cfg.tls.certificate, cfg.tls.private_key,
                                     cfg.tls.ca_file, cfg.tls.require_client_certificate)
        self.listeners, self._ports = bind_listeners(self._reactor, self.switchboard, cfg, tls)
        self.core.set_listeners(self.listeners)
        super().privilegedStartService()

    def startService(self):
        if not self._ports:
            self.privilegedStartService()
        super().startService()
        log.info("sipdisp proxy running; next hop {hop}", hop=self.cfg.proxy.next_hop)

    def stopService(self):
        super().stopService()
        self.switchboard.stop()
        for conn in list(self.switchboard.connections.values()):
            if conn.transport is not None:
                conn.transport.loseConnection()
        ports, self._ports = self._ports, []
        return gatherResults([maybeDeferred(p.stopListening) for p in ports])

    def listener(self, proto):
        """The first listener of ``proto`` (tests use it to find bound ports)."""
        for lst in self.listeners:
            if lst.proto == proto:
                return lst
        return None


def make_service(cfg, reactor=None, route=None):
    """The whole sipdisp service tree for a loaded Config."""
    top = MultiService()
    sip = SipService(cfg, route=route, reactor=reactor)
    sip.setName("sip")
    sip.setServiceParent(top)
    return top
