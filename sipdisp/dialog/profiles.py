"""Dialog profiles (Kamailio/OpenSIPS ``set_dlg_profile``): named counters of
live dialogs, optionally per value, so routes can count calls per
destination, per user or per any key, and the load balancer can count its
calls per destination and resource.

A dialog leaves every profile it is in when it ends; the counts are those of
the dialogs in memory, so they survive a restart with the dialogs (db_mode).

With ``cluster.redis`` (sipdisp/shared, docs/cluster.md) the other nodes'
counts are added in: ``remote`` is their sum per profile and value, kept up
to date by the cluster's sync, and ``version`` tells it that this node's
counts changed. ``size`` (get_profile_size, the load balancer's loads) is
then the cluster's; ``snapshot`` stays this node's.
"""

from collections import Counter


class Profiles:
    """Profile definitions and their counts; dialogs keep their memberships
    as a list of ``(name, value)`` pairs (value ``""`` for profiles without
    values)."""

    def __init__(self, with_value=(), without_value=()):
        self.defs = {}
        self.counts = {}
        #: name -> {value: count} of the other cluster nodes (set by sipdisp.shared)
        self.remote = {}
        #: bumped on every change of ``counts``, so the cluster sync writes only changes
        self.version = 0
        for name in with_value:
            self.define(name, True)
        for name in without_value:
            self.define(name, False)

    def define(self, name, with_value=True):
        """Declare profile ``name`` (again: no-op); ValueError if it exists with the other kind."""
        old = self.defs.get(name)
        if old is not None:
            if old != with_value:
                raise ValueError(f"profile {name!r} is already defined "
                                 f"{'with' if old else 'without'} values")
            return
        self.defs[name] = with_value
        self.counts[name] = Counter()

    def check(self, name, value=None):
        """The value to count under: ``""`` for a profile without values;
        KeyError for an unknown profile, ValueError for a missing value."""
        with_value = self.defs.get(name)
        if with_value is None:
            raise KeyError(f"no dialog profile {name!r}")
        if not with_value:
            return ""
        if value is None or value == "":
            raise ValueError(f"profile {name!r} needs a value")
        return str(value)

    def add(self, dialog, name, value=None):
        """Put ``dialog`` in profile ``name`` (with ``value``); once per pair."""
        value = self.check(name, value)
        pair = (name, value)
        if pair in dialog.profiles:
            return False
        dialog.profiles.append(pair)
        self.counts[name][value] += 1
        self.version += 1
        return True

    def remove(self, dialog, name, value=None):
        """Take ``dialog`` out of profile ``name`` (of every value when ``value`` is None)."""
        removed = 0
        keep = []
        for pair in dialog.profiles:
            if pair[0] == name and (value is None or pair[1] == str(value)):
                self._decrement(pair)
                removed += 1
            else:
                keep.append(pair)
        dialog.profiles[:] = keep
        return removed

    def remove_all(self, dialog):
        """Take ``dialog`` out of every profile (it ended)."""
        for pair in dialog.profiles:
            self._decrement(pair)
        dialog.profiles.clear()

    def restore(self, dialog, pairs):
        """Count a restored dialog's memberships, skipping profiles no longer defined."""
        for name, value in pairs:
            if name in self.defs:
                self.add(dialog, name, value if self.defs[name] else None)

    def _decrement(self, pair):
        counter = self.counts.get(pair[0])
        if counter is None:
            return
        self.version += 1
        left = counter[pair[1]] - 1
        if left > 0:
            counter[pair[1]] = left
        else:
            del counter[pair[1]]

    def contains(self, dialog, name, value=None):
        """True if ``dialog`` is in profile ``name`` (with ``value`` when given)."""
        return any(n == name and (value is None or v == str(value)) for n, v in dialog.profiles)

    def size(self, name, value=None):
        """Dialogs in profile ``name`` (with ``value``; all values when None); KeyError if unknown."""
        counter = self.counts.get(name)
        if counter is None:
            raise KeyError(f"no dialog profile {name!r}")
        remote = self.remote.get(name)
        if value is None or not self.defs[name]:
            return sum(counter.values()) + (sum(remote.values()) if remote else 0)
        value = str(value)
        return counter.get(value, 0) + (remote.get(value, 0) if remote else 0)

    def snapshot(self):
        """``{name: {value: count}}`` of every profile (values ``""`` when valueless)."""
        return {name: dict(counter) for name, counter in self.counts.items()}
