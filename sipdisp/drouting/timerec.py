"""Time recurrences of drouting rules, sans-IO: OpenSIPS' ``timerec`` column,
parsed once at load and evaluated against a given instant.

The column holds RFC 5545 (iCalendar) recurrence parts separated by ``|``,
in the order OpenSIPS' tmrec library reads them::

    dtstart|duration|freq|until|interval|byday|bymonthday|byyearday|byweekno|bymonth

such as ``20240101T090000|PT8H|weekly|||MO,TU,WE,TH,FR`` (weekdays 09:00 to
17:00). Empty trailing parts may be left out. ``dtstart`` and ``until`` are
local times (``...Z``: UTC); ``duration`` is an RFC 5545 duration (``PT8H``,
``P1D``) or OpenSIPS' older form without the ``P`` (``8H``, ``10M``);
``freq`` is daily, weekly, monthly or yearly (the ones tmrec evaluates).

A recurrence this module cannot evaluate (another freq, a multi-recurrence
expression, a timezone prefix, a bad field) raises :class:`TimerecError`,
so the rule is refused at load, never silently ignored.
"""

import re
from datetime import date, datetime, timedelta, timezone

FREQS = ("daily", "weekly", "monthly", "yearly")
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
FIELDS = ("dtstart", "duration", "freq", "until", "interval", "byday", "bymonthday",
          "byyearday", "byweekno", "bymonth")

_DATETIME = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2}))?(Z?)$")
_DURATION = re.compile(r"^(P)?(?:(\d+)W)?(?:(\d+)D)?(T)?(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$")
_BYDAY = re.compile(r"^([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)$")


class TimerecError(ValueError):
    """A time recurrence that cannot be evaluated; the message says which part and why."""


def _datetime(text, what):
    m = _DATETIME.match(text.strip().upper())
    if not m:
        raise TimerecError(f"{what} {text!r} is not a date-time like 20240101T090000")
    y, mo, d, hh, mm, ss, z = m.groups()
    try:
        value = datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0))
    except ValueError as exc:
        raise TimerecError(f"{what} {text!r}: {exc}") from None
    return value, bool(z)


def parse_duration(text):
    """Seconds of an RFC 5545 duration (``PT8H``, ``P1DT2H``, ``P2W``) or of
    OpenSIPS' older form without ``P`` (``10H``, ``30M``); TimerecError otherwise."""
    raw = text.strip().upper()
    m = _DURATION.match(raw)
    if not raw or not m or not any(m.group(i) for i in (2, 3, 5, 6, 7)):
        raise TimerecError(f"duration {text!r} is not like PT8H, P1D or 10M")
    p, w, d, t, h, mi, s = m.groups()
    if t and not p:
        raise TimerecError(f"duration {text!r}: T without the leading P")
    if p and (h or mi or s) and not t:
        raise TimerecError(f"duration {text!r}: hours, minutes and seconds come after T")
    return (int(w or 0) * 7 * 86400 + int(d or 0) * 86400 + int(h or 0) * 3600
            + int(mi or 0) * 60 + int(s or 0))


def _int_list(text, what, lo, hi):
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            n = int(part)
        except ValueError:
            raise TimerecError(f"{what} {text!r}: {part!r} is not a number") from None
        if n == 0 or not lo <= abs(n) <= hi:
            raise TimerecError(f"{what} {text!r}: {n} is out of 1..{hi} (or -{hi}..-1)")
        out.append(n)
    return tuple(out)


def _byday(text):
    out = []
    for part in text.split(","):
        m = _BYDAY.match(part.strip().upper())
        if not m:
            raise TimerecError(f"byday {text!r}: {part!r} is not a day such as MO or -1FR")
        nth = int(m.group(1)) if m.group(1) else 0
        if abs(nth) > 53:
            raise TimerecError(f"byday {text!r}: {nth} is out of range")
        out.append((nth, WEEKDAYS.index(m.group(2))))
    return tuple(out)


class TimeRec:
    """One parsed recurrence; :meth:`matches` says whether an instant lies in
    one of its intervals. Build it with :func:`parse_timerec`."""

    __slots__ = ("text", "dtstart", "utc", "duration", "freq", "until", "interval", "byday",
                 "bymonthday", "byyearday", "byweekno", "bymonth")

    def __init__(self, text, dtstart, utc, duration, freq=None, until=None, interval=1,
                 byday=(), bymonthday=(), byyearday=(), byweekno=(), bymonth=()):
        self.text = text
        self.dtstart = dtstart
        self.utc = utc
        self.duration = duration
        self.freq = freq
        self.until = until
        self.interval = interval
        self.byday = byday
        self.bymonthday = bymonthday
        self.byyearday = byyearday
        self.byweekno = byweekno
        self.bymonth = bymonth

    def __repr__(self):
        return f"<TimeRec {self.text!r}>"

    # -- evaluation ---------------------------------------------------------------------
    def matches_at(self, epoch, tz=None):
        """True if the instant ``epoch`` (seconds since 1970) lies in an interval;
        local times are read in ``tz`` (a tzinfo; None: the host's local time)."""
        if self.utc:
            moment = datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None)
        elif tz is not None:
            moment = datetime.fromtimestamp(epoch, tz).replace(tzinfo=None)
        else:
            moment = datetime.fromtimestamp(epoch)
        return self.matches(moment)

    def matches(self, moment):
        """True if the wall-clock ``moment`` (a naive datetime) lies in an interval."""
        if moment < self.dtstart:
            return False
        span = timedelta(seconds=self.duration)
        if self.freq is None:
            # one interval; a zero duration means for ever (tmrec)
            if self.until is not None and moment > self.until:
                return False
            return not self.duration or moment < self.dtstart + span
        # the interval holding ``moment`` started on one of the last few days
        # (a recurring duration is shorter than its period, RFC 5545 3.3.10)
        back = span.days + 1
        start_time = self.dtstart.time()
        for days in range(back + 1):
            day = moment.date() - timedelta(days=days)
            start = datetime.combine(day, start_time)
            if start < self.dtstart or start > moment or moment >= start + span:
                continue
            if self.until is not None and start > self.until:
                continue
            if self._day_matches(day):
                return True
        return False

    def _day_matches(self, day):
        first = self.dtstart.date()
        freq = self.freq
        if freq == "daily":
            if (day - first).days % self.interval:
                return False
        elif freq == "weekly":
            monday0 = first - timedelta(days=first.weekday())
            monday = day - timedelta(days=day.weekday())
            if ((monday - monday0).days // 7) % self.interval:
                return False
        elif freq == "monthly":
            if ((day.year - first.year) * 12 + day.month - first.month) % self.interval:
                return False
        elif (day.year - first.year) % self.interval:
            return False
        if self.bymonth and day.month not in self.bymonth:
            return False
        if self.byweekno and not _in_signed(day.isocalendar()[1], _weeks_in_year(day.year),
                                            self.byweekno):
            return False
        yday = day.timetuple().tm_yday
        if self.byyearday and not _in_signed(yday, _days_in_year(day.year), self.byyearday):
            return False
        if self.bymonthday and not _in_signed(day.day, _days_in_month(day), self.bymonthday):
            return False
        if self.byday and not self._byday_matches(day):
            return False
        # without by-parts, the period repeats dtstart's own day (RFC 5545 3.3.10)
        if freq == "weekly" and not self.byday:
            return day.weekday() == first.weekday()
        if freq in ("monthly", "yearly") and not (self.byday or self.bymonthday
                                                  or self.byyearday or self.byweekno):
            if day.day != first.day:
                return False
            return freq == "monthly" or self.bymonth or day.month == first.month
        return True

    def _byday_matches(self, day):
        for nth, weekday in self.byday:
            if day.weekday() != weekday:
                continue
            if not nth or self.freq in ("daily", "weekly"):
                return True
            if self.freq == "monthly" or self.bymonth:
                index = (day.day - 1) // 7 + 1
                count = (_days_in_month(day) - day.day) // 7 + index
            else:
                yday = day.timetuple().tm_yday
                index = (yday - 1) // 7 + 1
                count = (_days_in_year(day.year) - yday) // 7 + index
            if nth == index or nth == index - count - 1:
                return True
        return False


def _in_signed(value, total, wanted):
    return any(value == (n if n > 0 else total + n + 1) for n in wanted)


def _days_in_month(day):
    nxt = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
    return (nxt - date(day.year, day.month, 1)).days


def _days_in_year(year):
    return 366 if date(year, 12, 31).timetuple().tm_yday == 366 else 365


def _weeks_in_year(year):
    return date(year, 12, 28).isocalendar()[1]


def parse_timerec(text):
    """A :class:`TimeRec` for OpenSIPS' ``timerec`` text; None for an empty
    one (the rule always applies). TimerecError names the part at fault."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    if any(op in text for op in ("!", "&", "(", ")")):
        raise TimerecError(f"{text!r}: several recurrences combined with !, & or brackets "
                           "are not evaluated by sipdisp")
    parts = [p.strip() for p in text.split("|")]
    if len(parts) > len(FIELDS):
        raise TimerecError(f"{text!r} has {len(parts)} parts; at most {len(FIELDS)} "
                           f"({'|'.join(FIELDS)})")
    parts += [""] * (len(FIELDS) - len(parts))
    values = dict(zip(FIELDS, parts))
    if not values["dtstart"]:
        raise TimerecError(f"{text!r}: dtstart (the first part) is required")
    dtstart, utc = _datetime(values["dtstart"], "dtstart")
    duration = parse_duration(values["duration"]) if values["duration"] else 0
    freq = values["freq"].lower() or None
    if freq is not None and freq not in FREQS:
        raise TimerecError(f"freq {values['freq']!r} is not one of {', '.join(FREQS)}")
    until = None
    if values["until"]:
        until, until_utc = _datetime(values["until"], "until")
        if until_utc != utc:
            raise TimerecError(f"{text!r}: dtstart and until must both be local or both UTC (Z)")
        if len(values["until"]) == 8:
            until += timedelta(days=1, microseconds=-1)  # a DATE bounds its whole day
    interval = 1
    if values["interval"]:
        try:
            interval = int(values["interval"])
        except ValueError:
            interval = 0
        if interval < 1:
            raise TimerecError(f"interval {values['interval']!r} is not a positive integer")
    by = {}
    for name, hi in (("bymonthday", 31), ("byyearday", 366), ("byweekno", 53), ("bymonth", 12)):
        by[name] = _int_list(values[name], name, 1, hi) if values[name] else ()
    if any(n < 0 for n in by["bymonth"]):
        raise TimerecError(f"bymonth {values['bymonth']!r}: months are 1..12")
    byday = _byday(values["byday"]) if values["byday"] else ()
    if freq is None and (values["until"] or values["interval"] or byday or any(by.values())):
        raise TimerecError(f"{text!r}: until, interval and by-parts need a freq")
    if freq is not None:
        if not duration:
            raise TimerecError(f"{text!r}: a recurring interval needs a duration")
        period = {"daily": 1, "weekly": 7, "monthly": 28, "yearly": 365}[freq] * 86400
        if duration > period * interval and not (byday or any(by.values())):
            raise TimerecError(f"{text!r}: duration is longer than the {freq} period, "
                               "so intervals would overlap")
    return TimeRec(text, dtstart, utc, duration, freq, until, interval, byday,
                   by["bymonthday"], by["byyearday"], by["byweekno"], by["bymonth"])


__all__ = ["TimeRec", "TimerecError", "parse_duration", "parse_timerec"]
