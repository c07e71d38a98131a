"""The ``local://`` engine: an in-memory key-value table with expiry and a
size cap (OpenSIPS' cachedb_local). Sans-IO: every call takes ``now``.

Values are strings, counters are ints in the same table (so ``cache_fetch``
of a counter gives its digits, like Redis). An entry past its expiry is
gone for every reader at once; :meth:`LocalCache.sweep` frees the memory of
those nobody reads again.
"""


class CacheError(Exception):
    """An engine refused an operation; ``reason`` is a short label for counters."""

    reason = "error"


class CacheFull(CacheError):
    """The local table holds ``cache.local_max_keys`` keys and the key is new."""

    reason = "full"


class NotACounter(CacheError):
    """``cache_add``/``cache_sub`` on a value that is not an integer."""

    reason = "not_a_counter"


class LocalCache:
    """One ``local://`` engine holding at most ``max_keys`` keys."""

    synchronous = True

    def __init__(self, name, url, max_keys=100000):
        self.name = name
        self.url = url
        self.max_keys = max_keys
        self.entries = {}  # key -> [value (str or int), expires_at or None]
        self.expired = 0

    @property
    def connected(self):
        """Always True: memory does not go away."""
        return True

    def __len__(self):
        return len(self.entries)

    def _get(self, key, now):
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry[1] is not None and entry[1] <= now:
            del self.entries[key]
            self.expired += 1
            return None
        return entry

    def _room_for(self, key, now):
        if key in self.entries or len(self.entries) < self.max_keys:
            return
        # full: what has expired makes room before a new key is refused
        self.sweep(now)
        if len(self.entries) >= self.max_keys:
            raise CacheFull(f"the local cache {self.name!r} holds {self.max_keys} keys "
                            "(cache.local_max_keys)")

    def store(self, key, value, expire, now):
        """Set ``key`` to ``value`` (a string) for ``expire`` seconds (0: for ever)."""
        self._room_for(key, now)
        self.entries[key] = [value, now + expire if expire > 0 else None]
        return True

    def fetch(self, key, now):
        """The value of ``key`` as a string, or None when absent or expired."""
        entry = self._get(key, now)
        if entry is None:
            return None
        value = entry[0]
        return value if isinstance(value, str) else str(value)

    def remove(self, key, now):
        """Forget ``key``; True if it was there (and not expired)."""
        entry = self._get(key, now)
        if entry is None:
            return False
        del self.entries[key]
        return True

    def add(self, key, delta, expire, now):
        """Add ``delta`` to the counter ``key`` (created at 0), set its expiry when
        ``expire`` > 0 (Redis INCRBY + EXPIRE); the new value."""
        entry = self._get(key, now)
        if entry is None:
            self._room_for(key, now)
            entry = self.entries[key] = [0, None]
        value = entry[0]
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise NotACounter(f"the value of {key!r} is not an integer") from None
        entry[0] = value + delta
        if expire > 0:
            entry[1] = now + expire
        return entry[0]

    def counter_fetch(self, key, now):
        """The counter ``key`` as an int, None when absent; NotACounter otherwise."""
        entry = self._get(key, now)
        if entry is None:
            return None
        try:
            return int(entry[0])
        except ValueError:
            raise NotACounter(f"the value of {key!r} is not an integer") from None

    def sweep(self, now):
        """Drop every expired entry; how many."""
        dead = [k for k, (_, until) in self.entries.items() if until is not None and until <= now]
        for key in dead:
            del self.entries[key]
        self.expired += len(dead)
        return len(dead)

    def describe(self):
        """What ``cache.stats`` shows of this engine."""
        return {"url": self.url.safe, "keys": len(self.entries), "max_keys": self.max_keys,
                "expired": self.expired}
