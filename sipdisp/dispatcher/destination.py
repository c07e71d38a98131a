"""Destinations and destination sets.

A destination's configured ``flags`` come from the list file or the table
(Kamailio's bits: the state bits of :mod:`sipdisp.probing.states`, plus 16
skip DNS and 32 never ping); its runtime ``state`` starts from them and then
moves with probing, failover (``ds_mark_dst``) and ``dispatcher.set_state``.
"""

import ipaddress
import socket

from ..probing import SKIP_BITS, LatencyStats, ProbeTarget

#: configured flag: match the host as written, no DNS lookup
NODNS = 16


def parse_attrs(text):
    """``"weight=50;duid=fs1"`` -> ``{"weight": "50", "duid": "fs1"}`` (Kamailio attrs)."""
    out = {}
    for part in (text or "").split(";"):
        part = part.strip()
        if not part:
            continue
        name, _, value = part.partition("=")
        out[name.strip().lower()] = value.strip()
    return out


def _int_attr(attrs, name, lo, hi):
    """An integer attribute in lo..hi, else 0 (Kamailio ignores bad weights)."""
    value = attrs.get(name)
    if value is None or not value.strip().lstrip("-").isdigit():
        return 0
    number = int(value)
    return number if lo <= number <= hi else 0


class Destination(ProbeTarget):
    """One destination of a set: configuration plus runtime state (its
    health state is the :class:`~sipdisp.probing.ProbeTarget` it is).

    The same object survives a reload when ``(setid, uri)`` stays in the
    source, so in-flight calls and probes keep pointing at it.
    """

    __slots__ = ("setid", "flags", "priority", "attrs_text", "attrs", "description", "duid",
                 "maxload", "weight", "rweight", "load", "out_until", "addrs", "position",
                 "socket")

    def __init__(self, setid, uri, flags=0, priority=0, attrs="", description="", socket="",
                 weight=None, rweight=None):
        super().__init__(uri)
        self.setid = setid
        self.load = 0
        self.out_until = 0.0
        self.position = 0
        self.configure(flags, priority, attrs, description, socket, weight, rweight)

    def configure(self, flags, priority, attrs, description="", socket="", weight=None,
                  rweight=None):
        """Apply (new) configured columns; runtime state is left alone.
        ``socket`` is OpenSIPS' column (``udp:10.0.0.1:5060``, the listener
        to send from); ``weight``/``rweight`` given as numbers (OpenSIPS'
        weight column) override the attrs."""
        self.flags = flags
        self.priority = priority
        self.attrs_text = attrs or ""
        self.attrs = parse_attrs(attrs)
        self.description = description or ""
        self.duid = self.attrs.get("duid") or self.uri
        self.maxload = _int_attr(self.attrs, "maxload", 0, 1 << 31)
        self.weight = _int_attr(self.attrs, "weight", 1, 100) if weight is None else weight
        self.rweight = _int_attr(self.attrs, "rweight", 1, 100) if rweight is None else rweight
        self.socket = socket or ""
        # Kamailio's ``latency=<ms>`` attribute seeds the estimate until pings measure it
        seed = _int_attr(self.attrs, "latency", 1, 1 << 31)
        if seed and (self.latency is None or not self.latency.count):
            self.latency = LatencyStats(seed / 1000.0)
        self.addrs = resolve(self.host) if not flags & NODNS else frozenset((self.host,))

    @property
    def latency_estimate(self):
        """The estimated ping round-trip time in seconds, or None if never measured."""
        return self.latency.estimate if self.latency is not None else None

    @property
    def key(self):
        """Identity across reloads: ``(setid, uri)``."""
        return (self.setid, self.uri)

    def usable(self, now):
        """True if it may be selected now (not inactive/disabled, no Retry-After pending)."""
        return not self.state & SKIP_BITS and now >= self.out_until

    def __repr__(self):
        return f"<Destination {self.setid} {self.uri} {self.letters}>"


def resolve(host):
    """The addresses ``host`` stands for (itself if an IP literal); resolved
    once at load, so ``ds_is_from_list`` is a set lookup per message."""
    try:
        ipaddress.ip_address(host)
        return frozenset((host,))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_UDP)
    except OSError:
        return frozenset((host,))
    return frozenset([host] + [info[4][0] for info in infos])


class DestinationSet:
    """The destinations of one set id, ordered by priority (highest first,
    then as listed), plus the per-set state of the stateful algorithms."""

    __slots__ = ("setid", "dests", "rr_next", "w_table", "w_next", "rw_next",
                 "_rw_cache")

    def __init__(self, setid, dests=()):
        self.setid = setid
        self.dests = []
        self.rr_next = 0
        self.w_next = 0
        self.rw_next = 0
        self.w_table = ()
        self._rw_cache = (None, ())
        self.replace(list(dests))

    def replace(self, dests):
        """Set the destination list (sorted by priority) and rebuild derived tables."""
        from .algorithms import weight_table
        ordered = sorted(enumerate(dests), key=lambda p: (-p[1].priority, p[0]))
        self.dests = [d for _, d in ordered]
        for i, dest in enumerate(self.dests):
            dest.position = i
        self.w_table = weight_table([d.weight for d in self.dests])
        self._rw_cache = (None, ())

    def rweight_table(self, mask):
        """The relative-weight slot table for the usable ``mask`` (cached until it changes)."""
        from .algorithms import rweight_table
        cached_mask, table = self._rw_cache
        if cached_mask != mask:
            table = rweight_table([d.rweight for d in self.dests], mask)
            self._rw_cache = (mask, table)
        return table

    def find(self, uri):
        """The destination with ``uri`` in this set, or None."""
        for dest in self.dests:
            if dest.uri == uri:
                return dest
        return None

    def __len__(self):
        return len(self.dests)

    def __iter__(self):
        return iter(self.dests)
