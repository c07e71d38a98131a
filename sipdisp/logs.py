"""Logging with the configured minimum level (``log.level``), and a limit
on lines a stranger can repeat (``log.repeat_limit`` per ``log.repeat_interval``).

twistd installs its own log observers before sipdisp reads its config, so
the level is applied where events are made: sipdisp's modules log through
this Logger, whose ``emit`` drops events below the minimum level before any
formatting work is done.

Lines that a peer can cause once per message (a malformed datagram, a bad
credential, a database error while reading a subscriber) go through a
:class:`RepeatLimiter`, so a flood of such messages writes a few lines and
a count, not one line each.
"""

import time

from twisted.logger import Logger as _TwistedLogger
from twisted.logger import LogLevel, formatEvent

_minimum = [LogLevel.info]
# [lines per key and interval (0: no limit), interval in seconds]: log.repeat_*
_repeat = [10, 10.0]

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
          "error": LogLevel.error}


def set_level(name):
    """Set the minimum level by name (debug, info, warn, error)."""
    _minimum[0] = LEVELS[name]


def get_level():
    """The current minimum level's name."""
    return _minimum[0].name


class Logger(_TwistedLogger):
    """A twisted.logger.Logger that honours ``log.level``."""

    def emit(self, level, format=None, **kwargs):
        if level < _minimum[0]:
            return
        super().emit(level, format, **kwargs)


def set_repeat_limit(limit, interval):
    """At most ``limit`` lines per key of a RepeatLimiter every ``interval``
    seconds (``log.repeat_limit``, ``log.repeat_interval``; 0: no limit)."""
    _repeat[0] = int(limit)
    _repeat[1] = float(interval)


def get_repeat_limit():
    """``(limit, interval)`` in force."""
    return _repeat[0], _repeat[1]


#: log lines held back by every RepeatLimiter since the start
suppressed_total = [0]


class RepeatLimiter:
    """Rate-limits log lines that strangers can trigger, per key.

    ``limiter.info(key, format, **fields)`` (also ``warn``, ``error``,
    ``debug``) logs through ``logger`` like ``logger.info(format, **fields)``,
    except that past ``limit`` lines with the same ``key`` (usually a
    constant naming the event) within ``interval`` seconds the lines are
    held back and counted: one line says so when the limit trips, and the
    first line of the key after the interval ends carries the count
    ("... (19,999 more like this in the last 10 s)"); :meth:`flush` writes
    the pending counts at once. ``limit``/``interval`` default to the
    configured ``log.repeat_limit``/``log.repeat_interval`` (read at each
    call, so SIGHUP applies). Each suppressed line increments
    ``stats["log_lines_suppressed"]`` when ``stats`` is given (the proxy
    core's counter: ``sipdisp_core_events_total{event="log_lines_suppressed"}``).

    The cost of a line that is logged or suppressed is one clock read and one
    dict lookup; a line below ``log.level`` costs a comparison.
    """

    #: most distinct keys tracked; keys beyond share one entry
    MAX_KEYS = 1024
    STAT = "log_lines_suppressed"

    def __init__(self, logger, limit=None, interval=None, stats=None, clock=time.monotonic):
        self.logger = logger
        self.limit = limit
        self.interval = interval
        self.stats = stats
        self.clock = clock
        self.suppressed = 0
        # key -> [window start, lines in the window, suppressed, level, format, fields]
        self._keys = {}

    def emit(self, level, key, format, **fields):
        """Log unless ``key`` already logged ``limit`` lines in this
        interval; True if the line was written."""
        if level < _minimum[0]:
            return False
        limit = _repeat[0] if self.limit is None else self.limit
        if not limit:
            self.logger.emit(level, format, **fields)
            return True
        interval = _repeat[1] if self.interval is None else self.interval
        now = self.clock()
        keys = self._keys
        entry = keys.get(key)
        if entry is None and len(keys) >= self.MAX_KEYS:
            self._sweep(now, interval)
            if len(keys) >= self.MAX_KEYS:
                key = None  # too many distinct keys: they share one entry
                entry = keys.get(None)
        if entry is None or now - entry[0] >= interval:
            if entry is not None and entry[2]:
                self._summary(entry, now)
            entry = keys[key] = [now, 0, 0, level, format, fields]
        entry[1] += 1
        if entry[1] <= limit:
            self.logger.emit(level, format, **fields)
            return True
        entry[2] += 1
        entry[3], entry[4], entry[5] = level, format, fields
        self.suppressed += 1
        suppressed_total[0] += 1
        if self.stats is not None:
            self.stats[self.STAT] += 1
        if entry[2] == 1 and limit > 1:  # (one line per interval says so by itself)
            self.logger.emit(level, "{line} (more than {limit} like this in {seconds:g} s: "
                             "suppressing them, the count follows)",
                             line=_render(format, fields), limit=limit, seconds=interval)
        return False

    def debug(self, key, format, **fields):
        """``emit`` at debug."""
        return self.emit(LogLevel.debug, key, format, **fields)

    def info(self, key, format, **fields):
        """``emit`` at info."""
        return self.emit(LogLevel.info, key, format, **fields)

    def warn(self, key, format, **fields):
        """``emit`` at warn."""
        return self.emit(LogLevel.warn, key, format, **fields)

    def error(self, key, format, **fields):
        """``emit`` at error."""
        return self.emit(LogLevel.error, key, format, **fields)

    def flush(self, now=None):
        """Write the count of every key that suppressed lines (at shutdown,
        or from a periodic timer) and forget the keys."""
        now = self.clock() if now is None else now
        for entry in self._keys.values():
            if entry[2]:
                self._summary(entry, now)
        self._keys.clear()

    def _summary(self, entry, now):
        start, _lines, count, level, format, fields = entry
        self.logger.emit(level, "{line} ({count:,} more like this in the last {seconds:.0f} s)",
                         line=_render(format, fields), count=count, seconds=now - start)

    def _sweep(self, now, interval):
        keys = self._keys
        for key in [k for k, e in keys.items() if now - e[0] >= interval]:
            entry = keys.pop(key)
            if entry[2]:
                self._summary(entry, now)


def _render(format, fields):
    """``format`` filled in with ``fields`` (the last suppressed line, for a summary)."""
    return formatEvent(dict(fields, log_format=format))


def msg_prefix(msg):
    """The seed's log prefix ``{$mt $hdr(CSeq) $ci}``: message type (1 request,
    2 reply), CSeq and Call-ID, so every line about a message can be grepped."""
    if msg is None:
        return "{- - -}"
    kind = 1 if msg.is_request else 2
    return f"{{{kind} {msg.cseq} {msg.cseq_method} {msg.call_id}}}"


def json_observer():
    """Log observer factory writing one JSON object per line to stdout:
    ``twistd -n --logger=sipdisp.logs.json_observer sipdisp -c FILE``."""
    import sys

    from twisted.logger import jsonFileLogObserver
    return jsonFileLogObserver(sys.stdout)
