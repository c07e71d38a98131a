"""Message rates of stream connections, sans-IO: a token bucket fed ``now``.

The switchboard keeps one bucket per incoming connection
(``connections.max_messages_per_second``) and one per source address
(``connections.max_messages_per_source``); a message that finds its bucket
empty closes the connection that carried it.
"""


class TokenBucket:
    """``rate`` events a second on average, in bursts of at most ``burst``
    (one second's worth by default). ``take(now)`` spends one token."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate, now, burst=None):
        self.rate = float(rate)
        self.burst = float(max(rate, 1) if burst is None else burst)
        self.tokens = self.burst
        self.at = now

    def take(self, now):
        """Spend one token: True if there was one, False when over the rate."""
        elapsed = now - self.at
        tokens = self.tokens
        if elapsed > 0:
            tokens += elapsed * self.rate
            if tokens > self.burst:
                tokens = self.burst
            self.at = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True
