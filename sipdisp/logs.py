"""Logging with the configured minimum level (``log.level``).

twistd installs its own log observers before sipdisp reads its config, so
the level is applied where events are made: sipdisp's modules log through
this Logger, whose ``emit`` drops events below the minimum level before any
formatting work is done.
"""

from twisted.logger import Logger as _TwistedLogger
from twisted.logger import LogLevel

_minimum = [LogLevel.info]

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
