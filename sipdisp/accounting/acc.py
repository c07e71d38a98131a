"""Accounting, sans-IO (Kamailio/OpenSIPS acc): a record per accounted
transaction, missed calls, failed transactions on request, and one CDR per
call from its dialog.

What is accounted is decided per request, by ``do_accounting("db",
"cdr|missed|failed")`` (OpenSIPS), or by Kamailio's ``setflag(FLT_ACC)``
when ``accounting.flag``, ``missed_flag`` and ``failed_transaction_flag``
name those flags (the Kamailio seed's WITH_ACCDB; unset by default, so the
built-in route's ``setflag: FLT_ACC`` writes nothing). At the end of the
transaction (the core's hook):

* ``acc`` gets a row when the final reply was a 2xx, or any final with the
  failed-transaction flag (the seed's BYE "even if the transaction fails");
* ``missed_calls`` gets a row for an INVITE that failed (>= 300) with the
  missed flag;
* a dialog whose INVITE was accounted gets one CDR when it ends (BYE,
  timeout, ``dlg.end``): start (answer), end, duration, setup time, the
  final reply and the same extras. When sipdisp itself hangs up (timeout),
  ``acc`` also gets the seed's ``200 Dialog Timeout`` BYE row.

Records go to ``write(table, row)`` (the storage API's ``insert``: queued,
spooled to disk during an outage, committed exactly once).
"""

import datetime
from collections import Counter

from ..logs import Logger
from ..storage.schema import SCHEMA
from .pairs import parse_pairs

#: the request flags ``do_accounting`` sets (names no route can clash with)
ACC_FLAG = "acc:db"
MISSED_FLAG = "acc:missed"
FAILED_FLAG = "acc:failed"
#: ``ctx.vars`` key: OpenSIPS do_accounting's "cdr" flag for this request
CDR_WANTED = "_acc_cdr_"
#: dialog variables holding what the CDR needs (they survive a restart)
DV_PREFIX = "acc."
DV_CDR = "acc.cdr"
DV_CODE = "acc.code"
DV_REASON = "acc.reason"

#: the seed's acc extras (Kamailio's db_extra, the six columns of its ALTER TABLEs)
SEED_EXTRA = ("src_user=$fU;src_domain=$fd;src_ip=$si;"
              "dst_ouser=$tU;dst_user=$rU;dst_domain=$rd")

_BASE_COLUMNS = ("method", "from_tag", "to_tag", "callid", "sip_code", "sip_reason", "time",
                 "id")


def parse_extra(text, variables, where="accounting.extra",
                tables=("acc", "missed_calls", "cdrs")):
    """``"src_user=$fU;src_ip=$si"`` -> ``[(column, getter)]``; RouteError when a
    column is not in every table the records go to, or a value does not compile.
    ``variables`` (name -> getter) are the pseudo-variables the route knows
    (``FunctionTable.variables``: the dialog module's ``$DLG_*`` among them)."""
    def in_every_table(column):
        for table in tables:
            if column not in SCHEMA[table].by_name:
                return f"the {table} table has no column {column!r}"
        return None
    return parse_pairs(text, variables, where, _BASE_COLUMNS, "column", in_every_table)


def _names(own, configured):
    return frozenset((own,) if configured in (None, "") else (own, str(configured)))


def to_datetime(now):
    """A timestamp (seconds since the epoch) as the naive local datetime of the
    DATETIME/TIMESTAMP columns (Kamailio writes local time too)."""
    return datetime.datetime.fromtimestamp(now)


def _fit(table, row):
    """Cut strings to their column size (a too-long value would lose the whole record)."""
    columns = SCHEMA[table].by_name
    for name, value in row.items():
        if isinstance(value, str):
            size = columns[name].size
            if size and len(value) > size:
                row[name] = value[:size]
    return row


class Accounting:
    """The acc module: hooks for the core and the dialog table, and the
    writer of records. ``write(table, row)`` returns a Deferred (or None)."""

    def __init__(self, write, *, variables, flag=None, missed_flag=None, failed_flag=None,
                 extra=SEED_EXTRA, cdr=True, cdr_table="cdrs",
                 local_bye=True, log=None, acclog=None):
        self.write_record = write
        # records as log lines (Kamailio's log_flag ...): an acclog.AccLog, or None
        self.acclog = acclog
        # each kind: do_accounting's own flag, plus the configured Kamailio flag if any
        self.acc_flags = _names(ACC_FLAG, flag)
        self.missed_flags = _names(MISSED_FLAG, missed_flag)
        self.failed_flags = _names(FAILED_FLAG, failed_flag)
        self.cdr = cdr
        self.cdr_table = cdr_table
        self.local_bye = local_bye
        self.extra = parse_extra(extra, variables, tables=("acc", "missed_calls") +
                                 ((cdr_table,) if cdr_table == "cdrs" else ()))
        self.stats = Counter()
        self.log = log or Logger(namespace="sipdisp.accounting")
        self.core = None
        self.dialogs = None

    # -- wiring --------------------------------------------------------------------
    def attach(self, core, dialogs=None):
        """Register with ``core`` (the
        transaction-end hook) and with the dialog table's callbacks."""
        self.core = core
        if self.on_txn_end not in core.txn_end_hooks:
            core.txn_end_hooks.append(self.on_txn_end)
        if dialogs is not None:
            self.dialogs = dialogs
            if self.on_dialog_confirmed not in dialogs.callbacks["confirmed"]:
                dialogs.callbacks["confirmed"].append(self.on_dialog_confirmed)
                dialogs.callbacks["ended"].append(self.on_dialog_ended)

    @staticmethod
    def has(ctx, names):
        """True if one of the flag ``names`` is set on the request (numbers and
        names compare as text: ``setflag: 1`` matches ``flag: "1"``)."""
        flags = ctx.flags
        if not flags:
            return False
        for f in flags:
            if (f if isinstance(f, str) else str(f)) in names:
                return True
        return False

    # -- do_accounting (OpenSIPS) ------------------------------------------------------
    def do_accounting(self, ctx, kinds=()):
        """``do_accounting("db", "cdr|missed|failed")``: account this request
        (and its CDR, missed call or failed transaction)."""
        ctx.flags.add(ACC_FLAG)
        for kind in kinds:
            if kind == "missed":
                ctx.flags.add(MISSED_FLAG)
            elif kind == "failed":
                ctx.flags.add(FAILED_FLAG)
            elif kind == "cdr":
                ctx.vars[CDR_WANTED] = True
        ctx.add_reply_hook(self.on_local_reply)

    def on_local_reply(self, ctx, response, now):
        """Reply hook: the route answered an accounted request itself (no
        transaction end will follow), so account that reply now."""
        txn = ctx.proxy_txn
        if response.status >= 200 and (txn is None or not txn.branches):
            self.account(ctx, response.status, response.reason, response.to_tag, now)

    # -- the core's transaction end ------------------------------------------------------
    def on_txn_end(self, proxy_txn, status, now):
        """The core's hook: account the transaction by the request's flags."""
        ctx = proxy_txn.ctx
        if not ctx.flags:
            return
        reply = proxy_txn.final_reply
        reason = reply.reason if reply is not None else ""
        to_tag = reply.to_tag if reply is not None else None
        self.account(ctx, status, reason, to_tag, now)

    def account(self, ctx, status, reason, to_tag, now):
        """Write the acc and missed_calls rows a final reply calls for."""
        acc = self.has(ctx, self.acc_flags)
        failed = status >= 300
        wrote = False
        if acc and (not failed or self.has(ctx, self.failed_flags)):
            self._emit("acc", self.row(ctx, status, reason, to_tag, now))
            wrote = True
        if failed and ctx.request.method == "INVITE" and self.has(ctx, self.missed_flags):
            self._emit("missed_calls", self.row(ctx, status, reason, to_tag, now))
            wrote = True
        if self.acclog is not None and self.acclog.account(ctx, status, reason, to_tag, now,
                                                           self.has, self.failed_flags):
            self.stats["log"] += 1
            wrote = True
        return wrote

    def row(self, ctx, status, reason, to_tag, now):
        """An acc/missed_calls row for the request of ``ctx`` and its final reply."""
        req = ctx.request
        row = {"method": req.method, "from_tag": req.from_tag or "",
               "to_tag": req.to_tag or to_tag or "", "callid": req.call_id or "",
               "sip_code": str(status), "sip_reason": reason or "", "time": to_datetime(now)}
        row.update(self.extras(ctx))
        return row

    def extras(self, ctx):
        """The configured extra columns evaluated on ``ctx`` (``$null`` -> '')."""
        out = {}
        for column, getter in self.extra:
            try:
                value = getter(ctx)
            except Exception:
                value = None
            out[column] = "" if value is None else str(value)
        return out

    def acc_request(self, ctx, comment, table="acc", now=None):
        """OpenSIPS ``acc_db_request("200 Dialog Timeout", "acc")``: a record
        for the current request with that status and reason, now."""
        status, _, reason = str(comment).strip().partition(" ")
        row = self.row(ctx, status, reason, None, ctx.now if now is None else now)
        row["sip_code"] = status[:3]
        self._emit(table, row)

    def log_request(self, ctx, comment, now=None):
        """Kamailio ``acc_log_request("200 Dialog Timeout")``: an acc log line
        (``ACC: request accounted: ...``) for the current request, now."""
        if self.acclog is None:
            raise RuntimeError("accounting to the log is not set up")
        status, _, reason = str(comment).strip().partition(" ")
        self.acclog.request(ctx, status[:3], reason, ctx.now if now is None else now)
        self.stats["log"] += 1

    # -- dialogs and CDRs --------------------------------------------------------------
    def on_dialog_confirmed(self, dlg, ctx, now):
        """A dialog was answered: if its INVITE is accounted, keep what its CDR
        (and sipdisp's own BYE record) will need in the dialog's variables."""
        if not (self.has(ctx, self.acc_flags) or ctx.vars.get(CDR_WANTED)):
            return
        dlg.vars[DV_CDR] = "1" if (self.cdr or ctx.vars.get(CDR_WANTED)) else "0"
        dlg.vars[DV_CODE] = str(dlg.answer_code or 200)
        dlg.vars[DV_REASON] = dlg.answer_reason or "OK"
        for column, value in self.extras(ctx).items():
            dlg.vars[DV_PREFIX + column] = value

    def on_dialog_ended(self, dlg, now):
        """A dialog ended: its CDR (answered calls) and, when sipdisp hung up
        itself, the seed's ``200 Dialog Timeout`` BYE record."""
        if DV_CDR not in dlg.vars or dlg.answered is None:
            return
        extras = {k[len(DV_PREFIX):]: v for k, v in dlg.vars.items()
                  if k.startswith(DV_PREFIX) and k not in (DV_CDR, DV_CODE, DV_REASON)}
        if dlg.vars[DV_CDR] == "1":
            self._emit(self.cdr_table, self.cdr_row(dlg, now, extras))
        if self.local_bye and dlg.end_reason in ("timeout", "end"):
            reason = "Dialog Timeout" if dlg.end_reason == "timeout" else "Dialog Ended"
            row = {"method": "BYE", "from_tag": dlg.from_tag or "", "to_tag": dlg.to_tag or "",
                   "callid": dlg.callid, "sip_code": "200", "sip_reason": reason,
                   "time": to_datetime(now)}
            row.update({k: v for k, v in extras.items() if k in SCHEMA["acc"].by_name})
            self._emit("acc", row)

    def cdr_row(self, dlg, end, extras):
        """The CDR of an ended dialog: answer to end (duration in seconds with
        milliseconds), setup time (INVITE to answer), identity, final reply."""
        start = dlg.answered
        end = max(end, start)
        if self.cdr_table == "acc_cdrs":
            return {"start_time": to_datetime(start), "end_time": to_datetime(end),
                    "duration": round(end - start, 3)}
        row = {"start_time": to_datetime(start), "end_time": to_datetime(end),
               "duration": round(end - start, 3),
               "setuptime": max(0, int(round(start - dlg.created))),
               "callid": dlg.callid, "from_tag": dlg.from_tag or "", "to_tag": dlg.to_tag or "",
               "sip_code": dlg.vars.get(DV_CODE, "200"), "sip_reason": dlg.vars.get(DV_REASON, "")}
        row.update({k: v for k, v in extras.items() if k in SCHEMA["cdrs"].by_name})
        return row

    # -- writing -------------------------------------------------------------------------
    def _emit(self, table, row):
        row = _fit(table, row)
        self.stats[table] += 1
        try:
            d = self.write_record(table, row)
        except Exception as exc:  # QueueFull and the like: counted, logged, never raised
            self.stats["errors"] += 1
            self.log.error("accounting: cannot queue a {table} record for {callid}: {err}",
                           table=table, callid=row.get("callid"), err=exc)
            return
        if d is not None and hasattr(d, "addErrback"):
            def failed(f):
                self.stats["errors"] += 1
                self.log.error("accounting: a {table} record for {callid} was not written: "
                               "{err}", table=table, callid=row.get("callid"),
                               err=f.getErrorMessage())
            d.addErrback(failed)

    def metrics(self):
        """Prometheus families: records written by table, and records lost."""
        yield ("sipdisp_acc_records_total", "counter",
               "Accounting records queued for the database, by table.",
               [({"table": t}, n) for t, n in sorted(self.stats.items())
                if t not in ("errors", "log")])
        yield ("sipdisp_acc_log_records_total", "counter",
               "Accounting records written as log lines (accounting.log_flag, acc_log_request).",
               self.stats["log"])
        yield ("sipdisp_acc_record_errors_total", "counter",
               "Accounting records that could not be queued or written.", self.stats["errors"])
