"""The life cycle shared by the management listeners (SSH console, HTTP)."""

from twisted.application.service import Service
from twisted.internet import defer


class ListeningService(Service):
    """Binds one listener before twistd drops privileges and stops it with the
    service. Subclasses implement ``_listen()``, which sets ``self.port``."""

    def __init__(self, root, cfg, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.root = root
        self.cfg = cfg
        self.port = None

    def privilegedStartService(self):
        """Bind the listener (before twistd drops privileges)."""
        self._listen()
        super().privilegedStartService()

    def startService(self):
        """Start, binding first if privilegedStartService did not run."""
        if self.port is None:
            self._listen()
        super().startService()

    def stopService(self):
        """Stop listening (open sessions end with the process)."""
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return defer.maybeDeferred(port.stopListening)
