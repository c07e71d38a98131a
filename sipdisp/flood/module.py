"""The flood module as routes and commands see it (``modules.flood``):
the :class:`~sipdisp.flood.guard.FloodGuard` and the hash tables, sans-IO."""


class Flood:
    """The guard and the named hash tables; the ban table is one of them."""

    def __init__(self, guard, tables):
        self.guard = guard
        #: name -> HTable (the ban table included, under its name)
        self.tables = dict(tables)
        self.tables.setdefault(guard.bans.name, guard.bans)

    @property
    def bans(self):
        """The ban table."""
        return self.guard.bans

    def table(self, name):
        """The table ``name``; KeyError naming the known ones otherwise."""
        try:
            return self.tables[name]
        except KeyError:
            raise KeyError(f"no hash table {name!r} (known: "
                           f"{', '.join(sorted(self.tables))})") from None

    def get(self, name, key, now):
        """``$sht(name=>key)``: the value, or None."""
        return self.table(name).get(key, now)

    def set(self, name, key, value, now, expire=None):
        """``$sht(name=>key) = value``; a write to the ban table bans (trusted
        sources excepted, :meth:`FloodGuard.ban`), None deletes."""
        table = self.table(name)
        if table is self.guard.bans:
            if value is None:
                self.guard.unban(key)
                return True
            return self.guard.ban(key, now, seconds=expire, reason="route", value=value)
        if table.set(key, value, now, expire):
            self.guard._count("flood_htable_evicted")
            self.guard.limiter.warn("flood.htable_full", "hash table {name} is full "
                                    "(max_items {max}); the oldest item went",
                                    name=name, max=table.max_items)
        return True

    def sweep(self, now):
        """Free expired items and quiet sources; how many of each."""
        items = sum(t.sweep(now) for t in self.tables.values())
        return items, self.guard.pike.sweep(now)

    def metrics(self):
        """Gauges for /metrics: bans in force, sources tracked, items per table."""
        guard = self.guard
        yield ("sipdisp_flood_bans", "gauge", "Source addresses in the ban table now.",
               len(guard.bans))
        yield ("sipdisp_flood_sources", "gauge", "Source addresses the rate table tracks now.",
               len(guard.pike.sources))
        yield ("sipdisp_htable_items", "gauge", "Items of each hash table ($sht).",
               [({"table": name}, len(t)) for name, t in sorted(self.tables.items())])
