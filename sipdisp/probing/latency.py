"""Ping round-trip times (Kamailio's ``ds_ping_latency_stats``), sans-IO.

Each reply to a ping is one sample, the time from sending the ping to its
final reply. A destination keeps the long-run average and its standard
deviation (Welford's running algorithm, so no samples are stored), an
exponentially weighted moving average ``estimate`` that follows the recent
samples (``alpha`` the weight of the past: Kamailio's
``ds_latency_estimator_alpha`` 900 is 0.9), the largest sample and how many
pings timed out. Latency-based selection (algorithm 13) reads ``estimate``.
"""

import math


class LatencyStats:
    """The round-trip statistics of one probe target (seconds)."""

    __slots__ = ("count", "average", "_m2", "estimate", "maximum", "timeouts")

    def __init__(self, initial=None):
        self.count = 0
        self.average = 0.0
        self._m2 = 0.0
        #: the EWMA; ``initial`` (Kamailio's ``latency`` attribute) seeds it
        self.estimate = initial
        self.maximum = 0.0
        self.timeouts = 0

    def add(self, rtt, alpha):
        """Record one round-trip time ``rtt`` with EWMA weight ``alpha`` (0 <= alpha < 1)."""
        self.count += 1
        delta = rtt - self.average
        self.average += delta / self.count
        self._m2 += delta * (rtt - self.average)
        if self.estimate is None:
            self.estimate = rtt
        else:
            self.estimate = alpha * self.estimate + (1.0 - alpha) * rtt
        self.maximum = max(self.maximum, rtt)

    def timed_out(self):
        """A ping got no reply: counted, and no sample."""
        self.timeouts += 1

    @property
    def stdev(self):
        """The standard deviation of the samples (0 with fewer than two)."""
        return math.sqrt(self._m2 / (self.count - 1)) if self.count > 1 else 0.0

    def describe(self):
        """``dispatcher.list``'s LATENCY block, Kamailio's fields, in milliseconds."""
        def ms(value):
            return round(value * 1000.0, 3) if value is not None else None
        return {"AVG": ms(self.average), "STD": ms(self.stdev), "EST": ms(self.estimate),
                "MAX": ms(self.maximum), "TIMEOUT": self.timeouts, "COUNT": self.count}
