"""Selection algorithms, with Kamailio's numbers, as pure functions.

Each function takes the set's size ``n``, a tuple ``usable`` of booleans
(inactive, disabled and Retry-After'd destinations are not usable) and
whatever the algorithm keys on, and returns the failover order: a list of
destination indices, the selected one first, then the other usable ones.
Stateful algorithms (round robin, weights) take their counter and return
the next value with the order; the caller stores it. Nothing here reads a
clock, a random source or the message: the dispatcher passes those in.

    0  hash over Call-ID           1  hash over From URI
    2  hash over To URI            3  hash over Request-URI user
    4  round robin                 5  hash over the auth username
                                      (round robin without credentials)
    6  random                      7  hash over a pseudo-variable (hash_pvar)
    8  priority order              9  weight (attr ``weight``, percent)
    10 call load (fewest active calls, attr ``maxload``)
    11 relative weight (attr ``rweight``, re-normalised over usable ones)
    12 parallel forking to every usable destination, in priority order
    13 latency (lowest estimated ping round-trip time first)
"""

import zlib

HASH_CALLID = 0
HASH_FROM = 1
HASH_TO = 2
HASH_RURI_USER = 3
ROUND_ROBIN = 4
HASH_AUTH_USER = 5
RANDOM = 6
HASH_PVAR = 7
PRIORITY = 8
WEIGHT = 9
CALL_LOAD = 10
RELATIVE_WEIGHT = 11
PARALLEL = 12
LATENCY = 13

#: algorithm number -> short name (``dispatcher.list`` and the docs use it)
ALGORITHMS = {
    HASH_CALLID: "hash over Call-ID",
    HASH_FROM: "hash over From URI",
    HASH_TO: "hash over To URI",
    HASH_RURI_USER: "hash over Request-URI user",
    ROUND_ROBIN: "round robin",
    HASH_AUTH_USER: "hash over the auth username",
    RANDOM: "random",
    HASH_PVAR: "hash over dispatcher.hash_pvar",
    PRIORITY: "priority order",
    WEIGHT: "weight",
    CALL_LOAD: "call load",
    RELATIVE_WEIGHT: "relative weight",
    PARALLEL: "parallel forking to all",
    LATENCY: "latency",
}

SLOTS = 100  # weight tables have 100 slots: weights are percentages


def check_algorithm(alg):
    """Return ``alg`` as an int if sipdisp implements it; ValueError otherwise."""
    try:
        number = int(alg)
    except (TypeError, ValueError):
        number = None
    if number not in ALGORITHMS:
        known = ", ".join(str(a) for a in ALGORITHMS)
        raise ValueError(f"algorithm {alg!r} is not implemented (known: {known})")
    return number


def hash_key(text):
    """A stable 32-bit hash of a string (the same in every process, unlike hash())."""
    return zlib.crc32((text or "").encode("utf-8", "surrogateescape"))


def rotation(n, usable, start):
    """Usable indices starting at ``start`` and wrapping around."""
    return [i % n for i in range(start, start + n) if usable[i % n]]


def by_hash(n, usable, key):
    """Algorithms 0-3: the slot ``hash(key) % n``; an unusable one passes to the next."""
    if n == 0:
        return []
    return rotation(n, usable, hash_key(key) % n)


def round_robin(n, usable, counter):
    """Algorithm 4: the next usable from ``counter``; returns ``(order, next_counter)``
    (one past the chosen, as Kamailio does, so a dead node's turn is not given
    twice to its neighbour)."""
    if n == 0:
        return [], counter
    order = rotation(n, usable, counter % n)
    if not order:
        return order, counter
    return order, (order[0] + 1) % n


def at_random(n, usable, rnd):
    """Algorithm 6: uniform among the usable ones (``rnd`` in [0, 1)), then rotation."""
    candidates = [i for i in range(n) if usable[i]]
    if not candidates:
        return []
    first = candidates[min(int(rnd * len(candidates)), len(candidates) - 1)]
    return rotation(n, usable, first)


def by_priority(n, usable):
    """Algorithm 8: the set order, which is by priority (highest first)."""
    return [i for i in range(n) if usable[i]]


def spread(counts):
    """Interleave indices so index i appears ``counts[i]`` times, evenly spread
    (smooth weighted round robin): ``[2, 1] -> [0, 1, 0]``."""
    total = sum(counts)
    current = [0] * len(counts)
    out = []
    for _ in range(total):
        best = 0
        for i, count in enumerate(counts):
            current[i] += count
            if current[i] > current[best]:
                best = i
        current[best] -= total
        out.append(best)
    return tuple(out)


def weight_table(weights):
    """The 100-slot table of algorithm 9 (Kamailio's rules: each weight is a
    percentage 1-100; destinations whose weight would take the sum over 100
    are left out; if the sum is under 100 the last weighted destination fills
    the rest). All weights 0 gives equal shares."""
    n = len(weights)
    if n == 0:
        return ()
    if not any(weights):
        weights = [1] * n
        counts = [SLOTS // n] * n
        counts[-1] += SLOTS - sum(counts)
        return spread(counts)
    counts = [0] * n
    total = 0
    last = None
    for i, w in enumerate(weights):
        if w <= 0 or total + w > SLOTS:
            continue
        counts[i] = w
        total += w
        last = i
    counts[last] += SLOTS - total
    return spread(counts)


def rweight_table(rweights, usable):
    """The 100-slot table of algorithm 11 over the usable destinations: each
    gets ``rweight / sum`` of the slots (truncated; the last one fills up to
    100). Empty when no usable destination has an rweight."""
    members = [i for i, w in enumerate(rweights) if w > 0 and usable[i]]
    if not members:
        return ()
    total = sum(rweights[i] for i in members)
    counts = [0] * len(rweights)
    for i in members:
        counts[i] = rweights[i] * SLOTS // total
    counts[members[-1]] += SLOTS - sum(counts)
    return spread(counts)


def by_table(n, usable, table, counter):
    """Algorithms 9 and 11: the destination in slot ``counter``; an unusable one
    passes to the next in the set. Returns ``(order, next_counter)``."""
    if n == 0:
        return [], counter
    if not table:
        return rotation(n, usable, 0), counter
    slot = counter % len(table)
    return rotation(n, usable, table[slot]), slot + 1


def by_load(loads, maxloads, usable):
    """Algorithm 10: the usable destination with the fewest active calls first
    (the earliest in the set on a tie), then the others in set order; a
    destination at its ``maxload`` (0 = no limit) is left out."""
    candidates = [i for i in range(len(loads))
                  if usable[i] and (maxloads[i] <= 0 or loads[i] < maxloads[i])]
    if not candidates:
        return []
    first = min(candidates, key=lambda i: (loads[i], i))
    return [first] + [i for i in candidates if i != first]


def by_latency(latencies, usable):
    """Algorithm 13: usable destinations by estimated ping round-trip time,
    lowest first (the earlier in the set on a tie); those never measured
    (``None``) come after the measured ones, in set order."""
    candidates = [i for i in range(len(latencies)) if usable[i]]
    return sorted(candidates, key=lambda i: (latencies[i] is None, latencies[i] or 0.0, i))


def percent_weights(weights):
    """Relative weights (OpenSIPS' weight column: 1 and 3) as the percentages
    algorithm 9 wants (25 and 75), summing to exactly 100 (largest remainder);
    all zero stays all zero."""
    total = sum(w for w in weights if w > 0)
    if total <= 0:
        return [0] * len(weights)
    exact = [max(w, 0) * SLOTS / total for w in weights]
    out = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[:SLOTS - sum(out)]:
        out[i] += 1
    return out
