"""What the management listeners (SSH console, HTTP) share: their life cycle,
a connection cap checked at accept, and the counter-plus-log-line raised when
one of their limits refuses something."""

from collections import Counter

from twisted.application.service import Service
from twisted.internet import defer

from ..logs import Logger, RepeatLimiter

log = Logger()


def core_stats(root):
    """The proxy core's counters (``core.stats``, shown in /metrics as
    ``sipdisp_core_events_total``), or a private Counter for a tree without a core."""
    core = getattr(getattr(root, "sip", None), "core", None)
    stats = getattr(core, "stats", None)
    return stats if stats is not None else Counter()


class LimitAlarm:
    """One kind of refusal: every event increments ``stats[name]``; the first
    one logs a warning, later ones at most one line per ``interval`` seconds
    (RepeatLimiter: the count of the others follows), so a flood cannot flood
    the log."""

    def __init__(self, stats, name, message, clock, interval=60.0):
        self.stats = stats
        self.name = name
        self.message = message
        self._log = RepeatLimiter(log, limit=1, interval=interval, clock=clock.seconds)

    def trip(self, **fields):
        """Count one refusal; log it unless a line was written in the last interval."""
        self.stats[self.name] += 1
        self._log.warn(self.name, self.message, **fields)


def make_alarms(stats, clock, table):
    """A LimitAlarm per refusal kind of ``table`` (kind -> (counter, message))."""
    return {kind: LimitAlarm(stats, name, message, clock)
            for kind, (name, message) in table.items()}


class ConnectionCap:
    """At most ``limit`` open connections on one listener: ``admit()`` is asked
    at accept (a factory's buildProtocol returning None closes the socket at
    once), ``opened()``/``closed()`` follow the connections actually made."""

    def __init__(self, limit, alarm):
        self.limit = limit
        self.alarm = alarm
        self.open = 0

    def admit(self, addr=None):
        """True if one more connection fits; else counts and (rate-limited) logs a refusal."""
        if self.open < self.limit:
            return True
        self.alarm.trip(limit=self.limit, peer=_peer(addr))
        return False

    def opened(self):
        """A connection was made."""
        self.open += 1

    def closed(self):
        """A connection made earlier is gone."""
        self.open = max(0, self.open - 1)


def _peer(addr):
    host = getattr(addr, "host", None)
    return f"{host}:{addr.port}" if host is not None else "?"


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
