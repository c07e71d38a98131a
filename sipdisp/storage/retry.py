"""
Retrying against a database that is away: the pause between attempts
(:class:`RetryPolicy`) and a table load repeated until it works
(:class:`LoadRetry`).

Every retry delay of sipdisp's storage users is defined here:

* :data:`RECONNECT` (the storage's own reconnect loop: 0.25 s doubling up
  to 5 s, +/-10 % jitter; ``open_storage(retry_initial=, retry_max=,
  jitter=)`` overrides it);
* :data:`STATE_LOAD` (tables reloaded into memory at start, the dialog and
  location tables: every second, for as many attempts as the service allows);
* :data:`CONFIG_LOAD` (tables that configure a subsystem, the dispatcher
  sets and the load-balancer destinations: every 2 s until they load).

The table loads use a fixed pause: the storage already backs off its
reconnects, a load only waits for it to be connected again.
"""

import random

from twisted.internet import defer


class RetryPolicy:
    """Capped exponential backoff with jitter: attempt *n* (0 for the first
    retry) waits ``min(maximum, initial * 2**n)`` seconds, scaled by a random
    factor within ``1 +/- jitter``. ``maximum`` defaults to ``initial`` (a
    fixed pause)."""

    def __init__(self, initial, maximum=None, jitter=0.0, random_source=None):
        self.initial = float(initial)
        self.maximum = self.initial if maximum is None else float(maximum)
        self.jitter = float(jitter)
        self._random = random_source or random.Random()

    def delay(self, attempt):
        """Seconds to wait before retry number *attempt* + 1."""
        try:
            delay = min(self.maximum, self.initial * 2.0 ** attempt)
        except OverflowError:  # a float holds 2 ** 1023 at most: hours of outage
            delay = self.maximum
        if self.jitter:
            delay *= 1 + self.jitter * (2 * self._random.random() - 1)
        return delay

    def __repr__(self):
        return "RetryPolicy(%g, %g, jitter=%g)" % (self.initial, self.maximum, self.jitter)


#: the storage's reconnect loop (see the module docstring)
RECONNECT = RetryPolicy(0.25, 5.0, jitter=0.1)
#: dialog and location tables loaded at start
STATE_LOAD = RetryPolicy(1.0)
#: dispatcher sets and load-balancer destinations read from their tables
CONFIG_LOAD = RetryPolicy(2.0)


class LoadRetry:
    """Calls ``load()`` until its Deferred succeeds, pausing between attempts.

    After a failed attempt, ``on_error(failure, delay)`` is called with the
    policy's pause before the next attempt, or with None when *attempts*
    (None: no limit) are spent; it logs what it must and returns the pause
    to take (usually *delay*), or None to stop retrying. ``on_loaded(result)``
    runs when a load succeeds; its errors are not retried. The retry runs on
    *clock* (an ``IReactorTime``); ``active()`` and ``cancel()`` work as on
    the pending call, so a service stops it as it would a ``callLater``.
    """

    def __init__(self, clock, policy, load, on_error, on_loaded=None, attempts=None):
        self._clock = clock
        self._policy = policy
        self._load = load
        self._on_error = on_error
        self._on_loaded = on_loaded
        self.attempts = attempts
        self.attempt = 0
        self._call = None

    @property
    def last_attempt(self):
        """True when the attempt under way is the last one allowed."""
        return self.attempts is not None and self.attempt >= self.attempts

    def start(self):
        """Make the first attempt now; returns self."""
        self._try()
        return self

    def active(self):
        """True while a next attempt is scheduled."""
        return self._call is not None and self._call.active()

    def cancel(self):
        """Drop the scheduled attempt."""
        if self.active():
            self._call.cancel()
        self._call = None

    def _try(self):
        self._call = None
        self.attempt += 1
        d = defer.maybeDeferred(self._load)
        d.addCallbacks(self._loaded, self._failed)
        return d

    def _loaded(self, result):
        if self._on_loaded is not None:
            return self._on_loaded(result)
        return result

    def _failed(self, f):
        delay = None if self.last_attempt else self._policy.delay(self.attempt - 1)
        pause = self._on_error(f, delay)
        if pause is not None and not self.last_attempt:
            self._call = self._clock.callLater(pause, self._try)
