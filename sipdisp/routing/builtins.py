"""The core's route functions: flow, replies, headers and flags, logging,
request checks, relaying and failure-route checks (Kamailio's sl, tm, rr,
textops, maxfwd, sanity and xlog modules). Subsystems declare theirs in
their own ``routefuncs.py``; :func:`register` declares these.
"""

import re

from ..logs import LEVELS, Logger, get_level
from ..sip.uri import parse_uri
from .plugin import (EXIT, RETURN, RouteError, int_arg, ms_arg, nargs, setter_arg, str_arg,
                     template_arg, value_arg)

log = Logger(namespace="sipdisp.route")


# -- flow ----------------------------------------------------------------------------

def _exit(args, where, env):
    """Stop routing this request (Kamailio ``exit``)."""
    nargs("exit", args, where, 0)
    return lambda ctx: EXIT


def _drop(args, where, env):
    """Stop routing without forwarding or replying (Kamailio ``drop``)."""
    nargs("drop", args, where, 0)
    return lambda ctx: EXIT


def _return(args, where, env):
    """Leave the current named route (Kamailio ``return``)."""
    nargs("return", args, where, 0, 1)
    return lambda ctx: RETURN


# -- replies -------------------------------------------------------------------------

def _sl_reply(args, where, env):
    """Answer the request statelessly, once (Kamailio ``sl_send_reply``): ``[code, "reason"]``."""
    return _reply(args, where, env, stateless=True)


def _reply(args, where, env, stateless=False):
    """Answer the request through its transaction: ``[code, "reason"]``."""
    nargs("sl_send_reply" if stateless else "send_reply", args, where, 2)
    code = int_arg(args[0], where, "the status code")
    if not 100 <= code <= 699:
        raise RouteError(where, f"status code must be 100..699, got {code}")
    reason = template_arg(str_arg(args[1], where, "the reason"), where, env)
    release = env.modules.dispatcher.release if env.modules.dispatcher is not None else None

    def reply(ctx):
        if stateless:
            # nothing kept, nothing retransmitted: a stranger's request that
            # the route refuses costs one datagram, not eleven
            ctx.reply_stateless(code, reason(ctx))
        else:
            ctx.reply(code, reason(ctx))
        if release is not None and ctx.proxy_txn is None and "_dsload_" in ctx.vars:
            release(ctx)  # selected, then answered here: the call never reached a node
    return reply


def _reply_error(args, where, env):
    """Answer 500 after an internal failure (Kamailio ``sl_reply_error``)."""
    nargs("sl_reply_error", args, where, 0)

    def reply_error(ctx):
        if not ctx.handled or ctx.proxy_txn is None or not ctx.proxy_txn.branches:
            ctx.reply(500, "Server Internal Error")
    return reply_error


# -- message -----------------------------------------------------------------------

def _record_route(args, where, env):
    """Add Record-Route when the request is relayed."""
    nargs("record_route", args, where, 0)

    def record_route(ctx):
        ctx.do_record_route = True
    return record_route


def _remove_hf(args, where, env):
    """Remove every header of a name: ``remove_hf: Route``."""
    nargs("remove_hf", args, where, 1)
    key = str_arg(args[0], where, "the header name").strip().lower()

    def remove_hf(ctx):
        ctx.request.remove(key)
    return remove_hf


def _append_hf(args, where, env):
    """Append a header: ``append_hf: "P-Hint: outbound"`` (pseudo-variables allowed)."""
    nargs("append_hf", args, where, 1)
    text = str_arg(args[0], where, "the header").strip()
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise RouteError(where, f"append_hf needs \"Name: value\", got {text!r}")
    name = name.strip()
    key = name.lower()
    render = template_arg(value.strip(), where, env)

    def append_hf(ctx):
        ctx.request.add(key, render(ctx), name)
    return append_hf


def _set(args, where, env):
    """Assign pseudo-variables: ``set: {"$du": "sip:10.0.0.1:5060", "$var(n)": 1}``."""
    if len(args) != 1 or not isinstance(args[0], dict) or not args[0]:
        raise RouteError(where, 'set takes a mapping such as {"$du": "sip:10.0.0.1"}')
    pairs = [(setter_arg(str(k), where), value_arg(v, where, env))
             for k, v in args[0].items()]

    def set_values(ctx):
        for setter, getter in pairs:
            setter(ctx, getter(ctx))
    return set_values


def _setflag(args, where, env):
    """Set a per-request flag (number or name): ``setflag: 1``."""
    nargs("setflag", args, where, 1)
    flag = args[0]
    return lambda ctx: ctx.flags.add(flag)


def _resetflag(args, where, env):
    """Clear a per-request flag."""
    nargs("resetflag", args, where, 1)
    flag = args[0]
    return lambda ctx: ctx.flags.discard(flag)


def _isflagset(args, where, env):
    """True if the flag is set."""
    nargs("isflagset", args, where, 1)
    flag = args[0]
    return lambda ctx: flag in ctx.flags


# -- logging -------------------------------------------------------------------------

_XLOG_LEVELS = {"L_DBG": "debug", "L_INFO": "info", "L_NOTICE": "info", "L_WARN": "warn",
                "L_ERR": "error", "L_CRIT": "error", "L_ALERT": "error"}


def _make_xlog(default_level):
    def factory(args, where, env):
        if len(args) == 2:
            level_name = str_arg(args[0], where, "the level").upper()
            if level_name not in _XLOG_LEVELS:
                raise RouteError(where, f"level must be one of {', '.join(_XLOG_LEVELS)}")
            level = _XLOG_LEVELS[level_name]
            text = args[1]
        else:
            nargs("xlog", args, where, 1)
            level, text = default_level, args[0]
        render = template_arg(str_arg(text, where, "the message").rstrip("\n"), where, env)
        threshold = LEVELS[level]
        emit = getattr(log, level)

        def xlog(ctx):
            if LEVELS[get_level()] <= threshold:
                emit("{line}", line=render(ctx))
        return xlog
    return factory


#: Kamailio's logging functions and their default level
_XLOG_FUNCTIONS = (("xlog", "error"), ("xdbg", "debug"), ("xinfo", "info"),
                   ("xnotice", "info"), ("xwarn", "warn"), ("xerr", "error"))


def _xlog_doc(name, level):
    if name == "xlog":
        return ('Log a line with pseudo-variables: ``xlog: "text"`` or '
                '``[L_INFO, "text"]`` (default L_ERR, as Kamailio).')
    return f"Log a line with pseudo-variables at {level} level: ``{name}: \"text\"``."


# -- request checks --------------------------------------------------------------------

def _is_method(args, where, env):
    """True if the method is one of ``"INVITE|SUBSCRIBE"``."""
    nargs("is_method", args, where, 1)
    methods = frozenset(m.strip().upper() for m in str_arg(args[0], where, "methods").split("|")
                        if m.strip())
    if len(methods) == 1:
        (only,) = methods
        return lambda ctx: ctx.request.method == only
    return lambda ctx: ctx.request.method in methods


def _has_totag(args, where, env):
    """True for requests within a dialog (To has a tag)."""
    nargs("has_totag", args, where, 0)
    return lambda ctx: ctx.request.to_tag is not None


def _is_myself(args, where, env):
    """True if the URI (default ``$ru``) is this proxy (Kamailio ``uri == myself``)."""
    nargs("is_myself", args, where, 0, 1)
    text = str_arg(args[0], where, "the URI") if args else "$ru"
    if text in ("$ru", "uri"):
        return lambda ctx: ctx.core.is_myself(ctx.request.uri)
    getter = value_arg(text, where, env)

    def is_myself(ctx):
        value = getter(ctx)
        if not value:
            return False
        try:
            return ctx.core.is_myself(parse_uri(str(value)))
        except Exception:
            return False
    return is_myself


def _maxfwd(args, where, env):
    """False when Max-Forwards is 0 (the core answers that 483 itself; relaying decrements)."""
    nargs("mf_process_maxfwd_header", args, where, 1)
    int_arg(args[0], where, "the default Max-Forwards")

    def maxfwd(ctx):
        value = ctx.request.get("max-forwards")
        return not (value is not None and value.strip() == "0")
    return maxfwd


def _sanity(args, where, env):
    """True: the parser and the core checked the request before routing (RFC 3261 16.3)."""
    nargs("sanity_check", args, where, 0, 2)
    return lambda ctx: True


def _t_check_trans(args, where, env):
    """True if a CANCEL's or ACK's INVITE transaction exists (retransmissions never get here)."""
    nargs("t_check_trans", args, where, 0)

    def t_check_trans(ctx):
        return ctx.method in ("CANCEL", "ACK") and ctx.core.has_transaction(ctx.request)
    return t_check_trans


def _t_precheck_trans(args, where, env):
    """False: retransmissions never reach the route (the core absorbs them)."""
    nargs("t_precheck_trans", args, where, 0)
    return lambda ctx: False


def _t_newtran(args, where, env):
    """True: every request the route sees has its transaction already."""
    nargs("t_newtran", args, where, 0)
    return lambda ctx: True


def _force_rport(args, where, env):
    """No-op: the core always answers to the source port (RFC 3581)."""
    nargs("force_rport", args, where, 0)
    return lambda ctx: None


# -- routing ---------------------------------------------------------------------------

def _loose_route(args, where, env):
    """Follow the Route set of an in-dialog request; True only if it is one this proxy record-routed (signed)."""
    nargs("loose_route", args, where, 0)
    return lambda ctx: ctx.core.loose_route(ctx)


def _t_relay(args, where, env):
    """Forward statefully to $du, the Route set or the R-URI; False on failure."""
    nargs("t_relay", args, where, 0)
    return relay_step(env.modules.dispatcher)


def relay_step(dispatcher):
    """The one ``t_relay``: forward statefully; on failure the dispatcher
    (when there is one) releases the call load its selection counted."""
    def t_relay(ctx):
        ctx.handled = True
        ok = ctx.core.relay(ctx)
        if not ok and dispatcher is not None:
            dispatcher.release(ctx)
        return ok
    return t_relay


def _t_set_fr(args, where, env):
    """Per-branch final reply timers in ms: ``[fr_inv, fr]`` (0 keeps the default; a ``${...}`` time key gives seconds)."""
    nargs("t_set_fr", args, where, 1, 2)
    inv = ms_arg(args[0], where, "fr_inv_timeout")
    nin = ms_arg(args[1], where, "fr_timeout") if len(args) > 1 else 0
    if inv < 0 or nin < 0:
        raise RouteError(where, "timeouts must be >= 0 ms")
    inv_s = inv / 1000.0 if inv else None
    nin_s = nin / 1000.0 if nin else None

    def t_set_fr(ctx):
        if inv_s is not None:
            ctx.fr_inv_timeout = inv_s
        if nin_s is not None:
            ctx.fr_timeout = nin_s
    return t_set_fr


# -- failure route helpers -----------------------------------------------------------

def _t_is_canceled(args, where, env):
    """True if the caller CANCELled the transaction."""
    nargs("t_is_canceled", args, where, 0)
    return lambda ctx: ctx.proxy_txn is not None and ctx.proxy_txn.canceled


def failed_status(ctx):
    """The final status of the branch that failed (408 for a local timeout)."""
    branch = ctx.failed_branch
    if branch is not None and branch.final_status is not None:
        return branch.final_status
    txn = ctx.proxy_txn
    reply = getattr(txn, "last_reply", None) if txn is not None else None
    return None if reply is None else reply.status


def status_regex(value, where):
    """Kamailio's t_check_status pattern (``"486|408"``, ``"5[0-9][0-9]"``) or a
    list of codes, as a compiled regex matching the whole status."""
    if isinstance(value, (list, tuple)):
        text = "|".join(str(int_arg(v, where, "a status code")) for v in value)
    else:
        text = str_arg(value, where, "the status pattern")
    try:
        return re.compile(f"(?:{text})")
    except re.error as exc:
        raise RouteError(where, f"bad status pattern {text!r}: {exc}") from None


def _t_check_status(args, where, env):
    """True if the failed branch's status matches ``"500"``, ``"5[0-9][0-9]"`` or a list."""
    if len(args) > 1 and all(isinstance(a, int) for a in args):
        args = [args]
    nargs("t_check_status", args, where, 1)
    return status_check(status_regex(args[0], where))


def status_check(regex):
    """The one ``t_check_status``: a condition true when the failed branch's
    status matches ``regex`` (from :func:`status_regex`) whole."""
    match = regex.fullmatch

    def t_check_status(ctx):
        status = failed_status(ctx)
        return status is not None and match(str(status)) is not None
    return t_check_status


def _t_branch_timeout(args, where, env):
    """True if the failed branch timed out (no final reply in time)."""
    nargs("t_branch_timeout", args, where, 0)

    def t_branch_timeout(ctx):
        branch = ctx.failed_branch
        return branch is not None and branch.local_reply
    return t_branch_timeout


def _t_branch_replied(args, where, env):
    """True if the failed branch received any reply at all."""
    nargs("t_branch_replied", args, where, 0)

    def t_branch_replied(ctx):
        branch = ctx.failed_branch
        return branch is not None and (branch.provisional or not branch.local_reply)
    return t_branch_replied


def register(table):
    """Declare the core's route functions in ``table`` (a FunctionTable)."""
    table.add("exit", _exit)
    table.add("drop", _drop)
    table.add("return", _return)
    table.add(("sl_send_reply", "sl_reply"), _sl_reply)
    table.add(("send_reply", "t_reply"), _reply)
    table.add(("sl_reply_error", "send_reply_error"), _reply_error)
    table.add("record_route", _record_route)
    table.add("remove_hf", _remove_hf)
    table.add("append_hf", _append_hf)
    table.add("set", _set)
    table.add("setflag", _setflag)
    table.add("resetflag", _resetflag)
    table.add("isflagset", _isflagset, action=False, condition=True)
    for name, level in _XLOG_FUNCTIONS:
        table.add(name, _make_xlog(level), doc=_xlog_doc(name, level))
    table.add("is_method", _is_method, action=False, condition=True)
    table.add("has_totag", _has_totag, action=False, condition=True)
    table.add("is_myself", _is_myself, action=False, condition=True)
    table.add("mf_process_maxfwd_header", _maxfwd, action=True, condition=True)
    table.add("sanity_check", _sanity, action=True, condition=True)
    table.add(("t_check_trans", "t_lookup_request"), _t_check_trans, action=True, condition=True)
    table.add("t_precheck_trans", _t_precheck_trans, action=True, condition=True)
    table.add("t_newtran", _t_newtran, action=True, condition=True)
    table.add("force_rport", _force_rport, action=True, condition=False)
    table.add("loose_route", _loose_route, action=True, condition=True)
    table.add("t_relay", _t_relay, action=True, condition=True)
    table.add("t_set_fr", _t_set_fr)
    table.add(("t_is_canceled", "t_was_cancelled"), _t_is_canceled, action=False, condition=True)
    table.add("t_check_status", _t_check_status, action=False, condition=True)
    table.add("t_branch_timeout", _t_branch_timeout, action=False, condition=True)
    table.add("t_branch_replied", _t_branch_replied, action=False, condition=True)
