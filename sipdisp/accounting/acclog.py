"""Accounting to the log (Kamailio acc's ``log_flag``, ``log_missed_flag``,
``log_extra``, ``log_level``, ``log_facility``), sans-IO: records become
lines in Kamailio's acc log format, handed to a writer.

    ACC: transaction answered: timestamp=1700000000;method=INVITE;from_tag=a1;
    to_tag=b2;call_id=c3@h;code=200;reason=OK;src_user=alice;...

(one line). The text before ``timestamp`` says why the record was written, as
Kamailio's acc_logic.c does: ``transaction answered`` (a final reply of an
accounted transaction), ``call missed`` (a failed INVITE with the missed
flag) and ``request accounted`` (``acc_log_request``).

The writers: :class:`LoggerWriter` (sipdisp's own log, the default) and
:class:`SyslogWriter` (RFC 3164 datagrams to a syslog socket with the
configured facility, like Kamailio's ``LM_GEN2(log_facility, ...)``).
"""

import os
import socket
from logging.handlers import SysLogHandler

from ..logs import LEVELS, Logger, RepeatLimiter
from .pairs import parse_pairs

ANSWERED = "ACC: transaction answered: "
MISSED = "ACC: call missed: "
REQUEST = "ACC: request accounted: "

#: Kamailio's log levels for acc's log_level, and their syslog severities
SEVERITIES = {"debug": "debug", "info": "info", "notice": "notice", "warn": "warning",
              "error": "err"}


def parse_log_extra(text, variables, where="accounting.log_extra"):
    """``"src_user=$fU;src_ip=$si"`` -> ``[(name, getter)]`` for log lines (any
    name but the core attributes); RouteError names what is wrong."""
    return parse_pairs(text, variables, where, CORE + ("timestamp",), "name")


#: the core attributes of every acc log line, in Kamailio's order (acc.c core2strar)
CORE = ("method", "from_tag", "to_tag", "call_id", "code", "reason")


def format_record(text, timestamp, pairs):
    """One acc log line: ``text`` then ``timestamp=N`` and ``;name=value`` pairs."""
    return "".join([text, "timestamp=", str(int(timestamp))] +
                   [f";{name}={value}" for name, value in pairs])


class AccLog:
    """Writes acc records as log lines through ``writer(line)``; ``flag`` and
    ``missed_flag`` are the request flags (as text) that ask for them."""

    def __init__(self, writer, variables, *, flag=None, missed_flag=None, extra=""):
        self.writer = writer
        self.flags = frozenset(() if flag in (None, "") else (str(flag),))
        self.missed_flags = frozenset(() if missed_flag in (None, "") else (str(missed_flag),))
        self.extra = parse_log_extra(extra, variables)
        self.written = 0

    def pairs(self, ctx, status, reason, to_tag):
        """The core attributes and the extras of a record for ``ctx``'s request."""
        req = ctx.request
        out = [("method", req.method), ("from_tag", req.from_tag or ""),
               ("to_tag", req.to_tag or to_tag or ""), ("call_id", req.call_id or ""),
               ("code", str(status)), ("reason", reason or "")]
        for name, getter in self.extra:
            try:
                value = getter(ctx)
            except Exception:
                value = None
            out.append((name, "" if value is None else str(value)))
        return out

    def account(self, ctx, status, reason, to_tag, now, has, failed_flags):
        """The end of an accounted transaction: ``transaction answered`` for a
        2xx (any final with a failed-transaction flag), ``call missed`` for a
        failed INVITE with the missed flag. ``has(ctx, names)`` tests flags."""
        wrote = False
        failed = status >= 300
        if self.flags and has(ctx, self.flags) and (not failed or has(ctx, failed_flags)):
            self.write(ANSWERED, now, self.pairs(ctx, status, reason, to_tag))
            wrote = True
        if (failed and self.missed_flags and ctx.request.method == "INVITE"
                and has(ctx, self.missed_flags)):
            self.write(MISSED, now, self.pairs(ctx, status, reason, to_tag))
            wrote = True
        return wrote

    def request(self, ctx, status, reason, now):
        """``acc_log_request("200 Dialog Timeout")``: a ``request accounted`` line now."""
        self.write(REQUEST, now, self.pairs(ctx, status, reason, None))

    def write(self, text, now, pairs):
        """Hand one formatted line to the writer."""
        self.written += 1
        self.writer(format_record(text, now, pairs))


class LoggerWriter:
    """Acc lines into sipdisp's own log (``accounting.log_facility`` null), at
    ``level`` (``notice`` logs at info: Twisted has no notice level)."""

    def __init__(self, level="notice", logger=None):
        self.logger = logger or Logger(namespace="sipdisp.acc")
        self.level = LEVELS["info" if level == "notice" else level]

    def __call__(self, line):
        self.logger.emit(self.level, "{line}", line=line)


def facility_code(name):
    """``LOG_LOCAL0`` (or ``local0``) -> its syslog facility number; ValueError if unknown."""
    key = str(name).strip().lower()
    if key.startswith("log_"):
        key = key[4:]
    try:
        return SysLogHandler.facility_names[key]
    except KeyError:
        known = ", ".join("LOG_" + n.upper() for n in sorted(SysLogHandler.facility_names))
        raise ValueError(f"unknown syslog facility {name!r} (known: {known})") from None


def syslog_target(address):
    """``/dev/log`` -> (AF_UNIX, path); ``host:port`` -> (AF_INET, (host, port))."""
    text = str(address).strip()
    if text.startswith("/"):
        return socket.AF_UNIX, text
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected a socket path or host:port, got {text!r}")
    return socket.AF_INET, (host.strip("[]"), int(port))


class SyslogWriter:
    """Acc lines to syslog as RFC 3164 datagrams ``<PRI>ident[pid]: line`` on a
    non-blocking socket: when syslog is away or its queue is full the line is
    counted in ``dropped`` and a rate-limited warning says so, and the proxy
    never waits for it."""

    def __init__(self, facility, level="notice", address="/dev/log", ident="sipdisp",
                 pid=None, sock=None):
        family, self.target = syslog_target(address)
        severity = SysLogHandler.priority_names[SEVERITIES[level]]
        self.prefix = f"<{facility_code(facility) * 8 + severity}>{ident}[{pid or os.getpid()}]: "
        self.sock = sock or socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.dropped = 0
        self.warnings = RepeatLimiter(Logger(namespace="sipdisp.acc"))

    def __call__(self, line):
        data = (self.prefix + line).encode("utf-8", "replace")
        try:
            self.sock.sendto(data, self.target)
        except OSError as exc:
            self.dropped += 1
            self.warnings.warn("acc.syslog", "accounting: a log record could not be sent to "
                               "syslog at {target}: {err}", target=self.target, err=exc)

    def close(self):
        """Close the socket."""
        self.sock.close()
