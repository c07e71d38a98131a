"""Resources and selection of the load balancer, as pure functions.

A destination offers named resources with a capacity each
(``"vm=100;conf=100;transc=100;pstn=500"``, OpenSIPS' ``resources``
column). A call asks for one or more of them (``"pstn"``, ``"vm;transc"``)
and is counted on each until its dialog ends. The destination chosen is the
one with the most free capacity on the most loaded of the asked resources:

* absolute (default): ``capacity - load`` calls;
* relative (flag ``r``): ``100 * (capacity - load) / capacity`` percent;
* a destination with no free capacity is skipped unless flag ``n``
  (negative availability) lets the least overloaded one take the call;
* ties go to the first destination in table order, or to a random one of
  them with flag ``s``.
"""

FLAGS = frozenset("rns")


def parse_resources(text):
    """``"vm=100;pstn=500"`` -> ``{"vm": 100, "pstn": 500}``; ValueError if malformed."""
    out = {}
    for part in str(text or "").split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value.lstrip("-").isdigit():
            raise ValueError(f"resource {part!r} is not name=capacity")
        if name in out:
            raise ValueError(f"resource {name!r} is given twice")
        capacity = int(value)
        if capacity < 0:
            raise ValueError(f"resource {name!r} has a negative capacity")
        out[name] = capacity
    if not out:
        raise ValueError("no resource given")
    return out


def format_resources(resources):
    """``{"vm": 100, "pstn": 500}`` -> ``"vm=100;pstn=500"``."""
    return ";".join(f"{name}={cap}" for name, cap in resources.items())


def parse_requested(text):
    """``"pstn"`` or ``"vm;transc"`` -> a tuple of resource names; ValueError if empty."""
    names = tuple(n.strip() for n in str(text or "").split(";") if n.strip())
    if not names:
        raise ValueError("no resource requested")
    if len(set(names)) != len(names):
        raise ValueError(f"a resource is requested twice in {text!r}")
    return names


def parse_lb_flags(text):
    """``"ns"`` -> ``frozenset({"n", "s"})``; ValueError for unknown flags."""
    flags = frozenset(str(text or ""))
    unknown = flags - FLAGS
    if unknown:
        raise ValueError(f"unknown load balancer flag(s) {''.join(sorted(unknown))!r} "
                         "(known: r relative, n negative availability, s random among equals)")
    return flags


def availability(capacities_and_loads, relative=False):
    """The free capacity of a destination for one call: the smallest over the
    asked resources of ``capacity - load`` (or the percentage of capacity)."""
    worst = None
    for capacity, load in capacities_and_loads:
        if relative:
            value = 100.0 * (capacity - load) / capacity if capacity > 0 else -100.0 * load - 100.0
        else:
            value = capacity - load
        if worst is None or value < worst:
            worst = value
    return worst


def choose(candidates, flags=frozenset(), rand=None):
    """Index in ``candidates`` (a list of lists of ``(capacity, load)``, one per
    usable destination, in table order) of the destination to use, or None.
    ``rand()`` gives a float in [0, 1) for flag ``s``."""
    relative = "r" in flags
    best_value = None
    best = []
    for index, pairs in enumerate(candidates):
        value = availability(pairs, relative)
        if value is None:
            continue
        if value <= 0 and "n" not in flags:
            continue
        if best_value is None or value > best_value:
            best_value, best = value, [index]
        elif value == best_value:
            best.append(index)
    if not best:
        return None
    if "s" in flags and len(best) > 1 and rand is not None:
        return best[min(int(rand() * len(best)), len(best) - 1)]
    return best[0]
