"""The probed-target state machine, as pure functions of
``(state, failures, successes)``: Kamailio's state bits and letters, which
targets a probing mode pings, what a ping result does, and what a mark
(``ds_mark_dst``, ``dispatcher.set_state``) does.

State bits, as in Kamailio's dispatcher list file: 1 inactive, 2 trying,
4 disabled, 8 probing; flag 32 (never ping) is configuration, not state.

Probing modes (Kamailio's ``ds_probing_mode``):

0. ping targets with the probing flag (flag 8 in the list, or set by
   ``ds_mark_dst("ip")``); a successful ping clears the flag, a failed one
   keeps it, so a node failover took out is pinged until it answers.
1. ping every target (except disabled and flag 32); failures move an
   active one to trying, then inactive at ``probing_threshold``.
2. ping only inactive targets with the probing flag; success clears it.
3. ping targets with the probing flag, continually: the flag stays.

Back up: an inactive or trying target becomes active after
``inactive_threshold`` successful pings in a row.
"""

INACTIVE = 1
TRYING = 2
DISABLED = 4
PROBING = 8
#: configured flag: never pinged, whatever the probing mode
NOPING = 32

#: the bits that are state (the rest of a destination's flags is configuration)
STATE_BITS = INACTIVE | TRYING | DISABLED | PROBING
#: a target with any of these takes no traffic (Kamailio's ds_skip_dst)
SKIP_BITS = INACTIVE | DISABLED

MODES = (0, 1, 2, 3)


def state_letters(state):
    """Kamailio's two-letter state: A/I/T/D, then P (probing) or X."""
    if state & DISABLED:
        first = "D"
    elif state & INACTIVE:
        first = "I"
    elif state & TRYING:
        first = "T"
    else:
        first = "A"
    return first + ("P" if state & PROBING else "X")


def parse_state_letters(text):
    """``"a"``, ``"ip"``, ``"tp"``, ``"d"`` ... -> ``(base, probing)``; ValueError if invalid."""
    low = (text or "").strip().lower()
    if not low or low[0] not in "aitd" or low[1:] not in ("", "p") or low == "dp":
        raise ValueError(f"state must be a, i, t or d, optionally followed by p "
                         f"(d never with p), got {text!r}")
    return low[0], low.endswith("p") and len(low) == 2


def ping_wanted(state, flags, mode):
    """True if a target in ``state`` (configured ``flags``) is pinged in ``mode``."""
    if state & DISABLED or flags & NOPING:
        return False
    if mode == 1:
        return True
    if mode == 2:
        return bool(state & INACTIVE and state & PROBING)
    return bool(state & PROBING)


def after_ping(state, failures, successes, ok, mode, probing_threshold, inactive_threshold):
    """The new ``(state, failures, successes)`` after a ping answered (``ok``)
    or not (a timeout or an unaccepted reply)."""
    if state & DISABLED:
        return state, failures, successes
    if ok:
        failures = 0
        if state & (INACTIVE | TRYING):
            successes += 1
            if successes < inactive_threshold:
                return state, failures, successes
            state &= ~(INACTIVE | TRYING)
            successes = 0
        if mode in (0, 2):
            state &= ~PROBING
        elif mode == 1:
            state |= PROBING
        return state, failures, successes
    successes = 0
    failures += 1
    if not state & INACTIVE:
        if failures >= probing_threshold:
            state = (state & ~TRYING) | INACTIVE
        else:
            state |= TRYING
    return state | PROBING, failures, successes


def after_mark(state, failures, base, probing, probing_threshold):
    """The new ``(state, failures, successes)`` for a mark: ``base`` is one of
    ``a`` (active, counters reset), ``i`` (inactive), ``t`` (trying: one more
    failure, inactive at the threshold) or ``d`` (disabled); ``probing`` sets
    the probing flag (without it the flag is cleared, as in Kamailio)."""
    if base == "a":
        state, failures = 0, 0
    elif base == "i":
        state = INACTIVE
    elif base == "t":
        failures += 1
        state = INACTIVE if failures >= probing_threshold else TRYING
    elif base == "d":
        state = DISABLED
    else:
        raise ValueError(f"unknown state {base!r}")
    if probing and base != "d":
        state |= PROBING
    return state, failures, 0
