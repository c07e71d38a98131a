"""Kamailio's ``htable``: named hash tables of items with an expiry, sans-IO.

``$sht(ipban=>$si)`` reads and writes an item; each table has an
``autoexpire`` (seconds an item lives after it was written, 0: forever)
and a cap on its items (``max_items``): a new key beyond it pushes out the
oldest item. Expired items are never read; :meth:`HTable.sweep` frees them.
"""

import re
from collections import OrderedDict


class HTable:
    """One named table: key -> (value, expires at or 0)."""

    def __init__(self, name, autoexpire=0.0, max_items=65536):
        self.name = name
        self.autoexpire = float(autoexpire)
        self.max_items = int(max_items)
        #: key -> [value, expires]; oldest written first
        self.items = OrderedDict()
        #: items pushed out by the max_items cap
        self.evicted = 0

    def get(self, key, now):
        """The value of ``key``, or None when absent or expired."""
        item = self.items.get(key)
        if item is None:
            return None
        expires = item[1]
        if expires and expires <= now:
            del self.items[key]
            return None
        return item[0]

    def expires(self, key, now):
        """When ``key`` expires (0: never), or None when absent."""
        return None if self.get(key, now) is None else self.items[key][1]

    def set(self, key, value, now, expire=None):
        """Write ``key`` (None deletes it) for ``expire`` seconds (default the
        table's autoexpire; 0 never); True if an older item had to go for it."""
        items = self.items
        if value is None:
            items.pop(key, None)
            return False
        seconds = self.autoexpire if expire is None else float(expire)
        expires = now + seconds if seconds > 0 else 0.0
        evicted = False
        if key in items:
            items.move_to_end(key)
        elif len(items) >= self.max_items:
            items.popitem(last=False)
            self.evicted += 1
            evicted = True
        items[key] = [value, expires]
        return evicted

    def delete(self, key):
        """Remove ``key``; True if it was there."""
        return self.items.pop(key, None) is not None

    def reset(self):
        """Remove every item (``sht_reset``)."""
        self.items.clear()

    def live(self, now):
        """``[(key, value, expires)]`` of the items not expired, oldest first."""
        return [(k, v, e) for k, (v, e) in self.items.items() if not e or e > now]

    def match_name(self, op, value, now):
        """Kamailio ``sht_match_name``: does a live key equal (``eq``), start
        with (``sw``) or match the regex (``re``) ``value``?"""
        return any(True for _ in self._names(op, value, now))

    def remove_names(self, op, value, now):
        """Kamailio ``sht_rm_name``: remove the matching keys; how many."""
        names = list(self._names(op, value, now))
        for key in names:
            del self.items[key]
        return len(names)

    def _names(self, op, value, now):
        if op == "eq":
            if self.get(value, now) is not None:
                yield value
            return
        if op == "sw":
            test = lambda k: k.startswith(value)  # noqa: E731
        elif op == "re":
            test = re.compile(value).search
        else:
            raise ValueError(f"unknown operator {op!r} (eq, sw or re)")
        for key, (v, e) in self.items.items():
            if (not e or e > now) and test(key):
                yield key

    def sweep(self, now):
        """Free the expired items; how many."""
        dead = [k for k, (v, e) in self.items.items() if e and e <= now]
        for key in dead:
            del self.items[key]
        return len(dead)

    def __len__(self):
        return len(self.items)
