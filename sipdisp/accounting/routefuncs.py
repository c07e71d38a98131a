"""The accounting functions in the YAML route, declared in a routing
function table by :func:`register`.

    - do_accounting: db                  # OpenSIPS do_accounting("db")
    - do_accounting: [db, "missed"]      # ... and missed calls
    - do_accounting: [db, "failed"]      # BYE: even if the transaction fails
    - acc_db_request: ["200 Dialog Timeout", acc]
    - acc_log_request: "200 Dialog Timeout"   # Kamailio: an acc log line

Kamailio's ``setflag: FLT_ACC`` (and FLT_ACCMISSED, FLT_ACCFAILED, as named
by ``accounting.flag`` ...) does the same as ``do_accounting``.
"""

from ..routing.plugin import RouteError, nargs

KINDS = ("cdr", "missed", "failed")
TYPES = ("db",)


def _acc(ctx):
    acc = ctx.core.modules.accounting
    if acc is None:
        raise RuntimeError("the accounting module is not running")
    return acc


def parse_kinds(text, where="do_accounting"):
    """``"cdr|missed"`` -> ``("cdr", "missed")``; RouteError for an unknown kind."""
    kinds = tuple(k.strip().lower() for k in str(text or "").split("|") if k.strip())
    for kind in kinds:
        if kind not in KINDS:
            raise RouteError(where, f"unknown accounting flag {kind!r} (known: cdr, missed, failed)")
    return kinds


def do_accounting(ctx, kinds=()):
    """Python API: account this request (``kinds`` among cdr, missed, failed)."""
    _acc(ctx).do_accounting(ctx, tuple(kinds))
    return True


def acc_db_request(ctx, comment, table="acc"):
    """Python API: write a record for this request now, e.g. ``"200 Dialog Timeout"``."""
    _acc(ctx).acc_request(ctx, comment, table)
    return True


def acc_log_request(ctx, comment):
    """Python API: write an acc log line for this request now, e.g. ``"200 Dialog Timeout"``."""
    _acc(ctx).log_request(ctx, comment)
    return True


def _do_accounting(args, where, env):
    """Account this request (OpenSIPS): ``do_accounting: [db(, "cdr|missed|failed")]``."""
    nargs("do_accounting", args, where, 1, 3)
    types = [t.strip().lower() for t in str(args[0]).split("|") if t.strip()]
    for kind in types:
        if kind not in TYPES:
            raise RouteError(where, f"accounting type {kind!r}: sipdisp accounts to the "
                                    "database (db)")
    kinds = parse_kinds(args[1], where) if len(args) > 1 else ()
    if len(args) > 2 and str(args[2]) not in ("acc", ""):
        raise RouteError(where, f"only the acc table is written, got {args[2]!r}")
    return lambda ctx: do_accounting(ctx, kinds)


def _comment(args, where):
    comment = str(args[0]).strip()
    code = comment.split(" ", 1)[0]
    if not (code.isdigit() and len(code) == 3):
        raise RouteError(where, f"the comment must start with a status code, got {comment!r}")
    return comment


def _acc_log_request(args, where, env):
    """Write an acc log line for this request now (Kamailio): ``acc_log_request: "200 Dialog Timeout"``."""
    nargs("acc_log_request", args, where, 1)
    comment = _comment(args, where)
    return lambda ctx: acc_log_request(ctx, comment)


def _acc_db_request(args, where, env):
    """Write a record for this request now: ``acc_db_request: ["200 Dialog Timeout", acc]``."""
    nargs("acc_db_request", args, where, 1, 2)
    comment = _comment(args, where)
    table = str(args[1]) if len(args) > 1 else "acc"
    if table not in ("acc", "missed_calls"):
        raise RouteError(where, f"table must be acc or missed_calls, got {table!r}")
    return lambda ctx: acc_db_request(ctx, comment, table)


def register(table):
    """Declare the accounting route functions in ``table`` (a FunctionTable)."""
    table.add("do_accounting", _do_accounting, action=True, condition=True)
    table.add("acc_db_request", _acc_db_request, action=True, condition=True)
    table.add("acc_log_request", _acc_log_request, action=True, condition=True)
