"""What the transport edge asks before a message is parsed, sans-IO.

:class:`FloodGuard` holds the ban table (the ``ipban`` hash table), the
per-source rate (:class:`~sipdisp.flood.pike.Pike`) and the scanner
filter. The edge calls :meth:`FloodGuard.check` with the raw bytes of each
message and :meth:`FloodGuard.accept` for each new stream connection; both
are a dict lookup for a source that is neither banned nor busy.
"""

import re

from ..logs import Logger, RepeatLimiter

log = Logger(namespace="sipdisp.flood")

#: Kamailio's default configuration: ``$ua =~ "friendly-scanner|sipcli|..."``
#: plus two more scanners' own names (sip-scan, sundayddr)
DEFAULT_SCANNERS = ("friendly-scanner", "sipcli", "sipvicious", "VaxSIPUserAgent",
                    "sip-scan", "sundayddr")

#: how long a source found trusted skips the trust check (dispatcher
#: reloads and SIGHUP take effect within this)
TRUST_MEMORY = 10.0


def scanner_regex(agents):
    """A bytes regex finding a User-Agent header naming one of ``agents``
    in a header section, or None for an empty list."""
    if not agents:
        return None
    names = b"|".join(re.escape(a.encode("utf-8")) for a in agents)
    # at a line start (the header section begins with the request line, so
    # the header is always after a CRLF); User-Agent has no compact form
    return re.compile(rb"\nUser-Agent[ \t]*:[^\r\n]*(?:" + names + rb")", re.IGNORECASE)


class FloodGuard:
    """The flood defences the edge applies before parsing.

    ``bans`` is the ban table (an :class:`~sipdisp.flood.htable.HTable`; a
    live key is a banned source), ``pike`` the rate counter, ``trusted`` a
    callable ``host -> bool`` (dispatcher destinations, drouting gateways,
    ``auth.trusted``, the proxy's own addresses), ``stats`` the core's
    counters. ``automatic``: every request is counted and a source over the
    density is banned for ``ban_time`` seconds (``flood.enabled``);
    otherwise only the route's ``pike_check_req`` counts.
    """

    def __init__(self, bans, pike, trusted=lambda host: False, stats=None, automatic=True,
                 ban_time=300.0, scanners=DEFAULT_SCANNERS, limiter=None):
        self.bans = bans
        self.pike = pike
        self.trusted = trusted
        self.stats = stats if stats is not None else {}
        self.automatic = automatic
        self.ban_time = float(ban_time)
        self.scanner = scanner_regex(scanners)
        self.limiter = limiter or RepeatLimiter(log, limit=1, interval=60.0)
        self._evicted = 0
        #: called with ``(host, seconds, value)`` for every ban made here
        #: (seconds 0: forever) and ``(host, -1, None)`` for every ban lifted:
        #: the cluster sync shares them (sipdisp/shared)
        self.listeners = []

    # -- the edge ---------------------------------------------------------------
    def check(self, data, host, now):
        """True to let a message from ``host`` through to the parser; False
        drops it silently (a banned source, a flood, a scanner)."""
        bans = self.bans.items
        if bans and host in bans and self.bans.get(host, now) is not None:
            self._count("flood_dropped_banned")
            return False
        if data[:8] == b"SIP/2.0 ":
            return True  # replies are not requests: pike counts requests only
        if self.automatic:
            pike = self.pike
            hot = pike.hit(host, now)
            if pike.evicted != self._evicted:
                self._note_evicted()
            if hot and not self._is_trusted(host, now):
                self.ban(host, now, reason="pike")
                self._count("flood_dropped_banned")
                return False
        scanner = self.scanner
        if scanner is not None:
            end = data.find(b"\r\n\r\n")
            if scanner.search(data, 0, end if end >= 0 else len(data)):
                self._count("flood_scanner_dropped")
                self.limiter.info("flood.scanner", "dropping requests of a scanner from {host} "
                                  "(flood.scanner_user_agents)", host=host)
                return False
        return True

    def accept(self, host, now):
        """True to accept a new stream connection from ``host`` (not banned)."""
        if self.bans.items and self.bans.get(host, now) is not None:
            self._count("flood_refused_connections")
            return False
        return True

    # -- the route --------------------------------------------------------------
    def check_request(self, host, now):
        """Kamailio ``pike_check_req()``: False if ``host`` is over the
        density and not trusted. Counts the request unless the edge already
        did (automatic mode)."""
        pike = self.pike
        hot = pike.is_hot(host, now) if self.automatic else pike.hit(host, now)
        if not hot or self._is_trusted(host, now):
            return True
        self._count("flood_pike_blocked")
        self.limiter.warn("flood.pike", "pike blocking requests from {host}: more than "
                          "{density} in {unit} s", host=host, density=pike.density,
                          unit=pike.unit)
        return False

    # -- bans ---------------------------------------------------------------------
    def ban(self, host, now, seconds=None, reason="command", value=1):
        """Ban ``host`` for ``seconds`` (default ``ban_time``; for a route's
        write the table's autoexpire) with ``value``; False for a trusted one."""
        if self._is_trusted(host, now):
            self._count("flood_trusted_not_banned")
            return False
        if seconds is None and reason != "route":
            seconds = self.ban_time
        if self.bans.set(host, value, now, seconds):
            self._count("flood_bans_evicted")
            self.limiter.warn("flood.bans_full", "the ban table {name} is full ({max} "
                              "entries); the oldest ban was lifted early",
                              name=self.bans.name, max=self.bans.max_items)
        self._count("flood_bans")
        secs = self.bans.autoexpire if seconds is None else seconds
        for listener in self.listeners:
            listener(host, secs, value)
        if reason == "pike":
            self.limiter.warn("flood.ban", "banning {host} for {secs:g} s: more than {density} "
                              "requests in {unit:g} s (flood.reqs_density_per_unit)", host=host,
                              secs=secs, density=self.pike.density, unit=self.pike.unit)
        else:
            log.info("banning {host} for {secs:g} s ({reason})", host=host, secs=secs,
                     reason=reason)
        return True

    def unban(self, host):
        """Lift the ban of ``host`` (``ipban.remove``); True if it was banned."""
        removed = self.bans.delete(host)
        for listener in self.listeners:
            listener(host, -1, None)
        return removed

    def _is_trusted(self, host, now):
        pike = self.pike
        if pike.trusted(host, now):
            return True
        if self.trusted(host):
            pike.trust(host, now + TRUST_MEMORY)
            return True
        return False

    def _count(self, name):
        self.stats[name] = self.stats.get(name, 0) + 1

    def _note_evicted(self):
        pike = self.pike
        self.stats["flood_sources_evicted"] = self.stats.get("flood_sources_evicted", 0) \
            + pike.evicted - self._evicted
        self._evicted = pike.evicted
        self.limiter.warn("flood.sources_full", "the pike table is full (flood.max_sources = "
                          "{max}); the least recently seen sources are forgotten",
                          max=pike.max_sources)
