"""The core's route functions: flow, replies, headers and flags, logging,
request checks, relaying and failure-route checks (Kamailio's sl, tm, rr,
textops, maxfwd, sanity and xlog modules). Subsystems declare theirs in
their own ``routefuncs.py``; :func:`register` declares these.
"""

import re

from ..logs import LEVELS, Logger, get_level
from ..proxy.routeset import RESERVED_RR_PARAMS, RR_SIGNATURE
from ..sip.uri import parse_uri
from . import sanity
from .plugin import (EXIT, RETURN, RouteError, int_arg, ms_arg, nargs, setter_arg, str_arg,
                     steady, template_arg, value_arg)

log = Logger(namespace="sipdisp.route")


# -- flow ----------------------------------------------------------------------------

def _exit(args, where, env):
    """Stop routing this request (Kamailio ``exit``)."""
    nargs("exit", args, where, 0)
    return lambda ctx: EXIT


def _drop(args, where, env):
    """Stop routing without forwarding or replying (Kamailio ``drop``); in a reply route drop a provisional reply, in a branch route the branch."""
    nargs("drop", args, where, 0)
    if env.kind in ("reply", "branch"):
        def drop(ctx):
            ctx.dropped = True
            return EXIT
        return drop
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
    pairs = [(setter_arg(str(k), where, env), value_arg(v, where, env))
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


def _setbflag(args, where, env):
    """Set a branch flag (0-31 or a name of routing.branch_flags): ``setbflag: NAT``; save stores it with the contact."""
    nargs("setbflag", args, where, 1)
    mask = 1 << env.flag_bit(args[0], where)

    def setbflag(ctx):
        ctx.bflags |= mask
    return setbflag


def _resetbflag(args, where, env):
    """Clear a branch flag."""
    nargs("resetbflag", args, where, 1)
    mask = ~(1 << env.flag_bit(args[0], where))

    def resetbflag(ctx):
        ctx.bflags &= mask
    return resetbflag


def _isbflagset(args, where, env):
    """True if the branch flag is set (after lookup: the contact's flags as registered)."""
    nargs("isbflagset", args, where, 1)
    mask = 1 << env.flag_bit(args[0], where)
    return lambda ctx: bool(ctx.bflags & mask)


_RR_PARAM = re.compile(r"(;[A-Za-z0-9][\w.!%*+`'~-]*(=[\w.!%*+`'~:@\[\]-]+)?)+")


def _add_rr_param(args, where, env):
    """Add a parameter to this proxy's Record-Route (signed with it): ``add_rr_param: ";nat=yes"``."""
    nargs("add_rr_param", args, where, 1)
    text = str_arg(args[0], where, "the parameter").strip()
    if not text.startswith(";"):
        text = ";" + text
    if not _RR_PARAM.fullmatch(text):
        raise RouteError(where, f"add_rr_param needs \";name=value\", got {text!r}")
    names = {p.partition("=")[0].lower() for p in text[1:].split(";")}
    reserved = names & RESERVED_RR_PARAMS
    if reserved:
        raise RouteError(where, f"add_rr_param: {', '.join(sorted(reserved))} is this "
                                "proxy's own Record-Route parameter")

    def add_rr_param(ctx):
        ctx.rr_params = text if ctx.rr_params is None else ctx.rr_params + text
    return add_rr_param


def _check_route_param(args, where, env):
    """True if the parameters of this proxy's Route entry (as loose_route followed it) match a regex: ``check_route_param: "nat=yes"``."""
    nargs("check_route_param", args, where, 1)
    text = str_arg(args[0], where, "the regex")
    try:
        regex = re.compile(text)
    except re.error as exc:
        raise RouteError(where, f"bad regex: {exc}") from None

    def check_route_param(ctx):
        uri = ctx.route_params
        if uri is None:
            return False
        params = "".join(f";{n}" if v is None else f";{n}={v}"
                         for n, v in uri.params if n.lower() != RR_SIGNATURE)
        return regex.search(params) is not None
    return check_route_param


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
        prefix = log_prefix(env)
        threshold = LEVELS[level]
        emit = getattr(log, level)
        if prefix is None:
            def xlog(ctx):
                if LEVELS[get_level()] <= threshold:
                    emit("{line}", line=render(ctx))
        else:
            def xlog(ctx):
                if LEVELS[get_level()] <= threshold:
                    emit("{line}", line=prefix(ctx) + render(ctx))
        return xlog
    return factory


def log_prefix(env):
    """``log.prefix`` (Kamailio's ``log_prefix``, the seed's ``"{$mt $hdr(CSeq) $ci} "``)
    compiled into ``ctx -> str``, or None when it is empty."""
    cfg = env.config
    text = getattr(getattr(cfg, "log", None), "prefix", "") if cfg is not None else ""
    if not text:
        return None
    return template_arg(text, "log.prefix", env)


def _message_type(ctx):
    """``$mt``: 1 for a request, 2 for a reply (Kamailio's message type)."""
    return 1 if ctx.request.is_request else 2


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
    if env.kind == "reply":  # a reply's method is its CSeq's (as Kamailio)
        return lambda ctx: ctx.request.cseq_method in methods
    if len(methods) == 1:
        (only,) = methods
        return steady(lambda ctx: ctx.request.method == only)
    return steady(lambda ctx: ctx.request.method in methods)


def _has_totag(args, where, env):
    """True for requests within a dialog (To has a tag)."""
    nargs("has_totag", args, where, 0)
    return lambda ctx: ctx.request.to_tag is not None


def _is_myself(args, where, env):
    """True if the URI (default ``$ru``) is this proxy (Kamailio ``uri == myself``); a bare host such as ``$rd`` is ours on any of our ports (OpenSIPS ``is_myself("$rd")``)."""
    nargs("is_myself", args, where, 0, 1)
    text = str_arg(args[0], where, "the URI") if args else "$ru"
    if text in ("$ru", "uri"):
        return lambda ctx: ctx.core.is_myself(ctx.request.uri)
    getter = value_arg(text, where, env)

    def is_myself(ctx):
        value = getter(ctx)
        if not value:
            return False
        text = str(value)
        core = ctx.core
        try:
            if ":" in text and text.split(":", 1)[0].lower() in ("sip", "sips"):
                return core.is_myself(parse_uri(text))
            # a bare host ($rd, as OpenSIPS' is_myself("$rd")): ours on any of our ports
            uri = parse_uri(f"sip:{text}")
            if core.is_myself(uri):
                return True
            if uri.port is None:
                return any(core.is_myself(parse_uri(f"sip:{text}:{lst.port}"))
                           for lst in core.listeners)
            return False
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
    """Kamailio's sanity checks its flags select: ``sanity_check: ["1511", "7"]``; false after answering 400/416/420 like the module."""
    nargs("sanity_check", args, where, 0, 2)
    msg_checks = int_arg(args[0], where, "msg_checks") if args else sanity.DEFAULT_CHECKS
    uri_checks = int_arg(args[1], where, "uri_checks") if len(args) > 1 else \
        sanity.DEFAULT_URI_CHECKS
    if not 0 <= msg_checks <= sanity.ALL_CHECKS:
        raise RouteError(where, f"msg_checks must be 0..{sanity.ALL_CHECKS}, got {msg_checks}")
    if not 0 <= uri_checks <= sanity.ALL_URI_CHECKS:
        raise RouteError(where, f"uri_checks must be 0..{sanity.ALL_URI_CHECKS}, "
                                f"got {uri_checks}")
    check = sanity.compile_checks(msg_checks, uri_checks)

    def sanity_check(ctx):
        try:
            check(ctx.request, ctx.source)
        except sanity.Failure as failure:
            ctx.core.stats["sanity_failed"] += 1
            if failure.status is not None and ctx.request.method != "ACK":
                ctx.reply_stateless(failure.status, failure.reason, failure.headers)
            return False
        return True
    return sanity_check


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
    """Answer to the packet's source port as if the top Via had ``;rport`` (RFC 3581)."""
    nargs("force_rport", args, where, 0)

    def force_rport(ctx):
        ctx.core.force_rport(ctx)
    return force_rport


def _force_send_socket(args, where, env):
    """Send from the listener ``proto:host:port`` names; false when no listener has that address."""
    nargs("force_send_socket", args, where, 1, usage="proto:host:port")
    socket = str_arg(args[0], where, "the socket").strip().lower()
    if socket.count(":") < 2 or socket.split(":", 1)[0] not in ("udp", "tcp", "tls", "ws", "wss"):
        raise RouteError(where, f"force_send_socket: expected proto:host:port, got {args[0]!r}")

    def force_send_socket(ctx):
        listener = ctx.core.listener_named(socket)
        if listener is None:
            return False
        ctx.send_socket = listener
        return True
    return force_send_socket


# -- routing ---------------------------------------------------------------------------

def _loose_route(args, where, env):
    """Follow the Route set of an in-dialog request; True only if it is one this proxy record-routed (signed), or a dead cluster node did for a dialog taken over here."""
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
    table.add("setbflag", _setbflag)
    table.add("resetbflag", _resetbflag)
    table.add("isbflagset", _isbflagset, action=False, condition=True)
    table.add("add_rr_param", _add_rr_param)
    table.add("check_route_param", _check_route_param, action=False, condition=True)
    table.add_variable("mt", _message_type)
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
    table.add("force_send_socket", _force_send_socket, action=True, condition=True)
    table.add("loose_route", _loose_route, action=True, condition=True)
    table.add("t_relay", _t_relay, action=True, condition=True)
    table.add("t_set_fr", _t_set_fr)
    table.add(("t_is_canceled", "t_was_cancelled"), _t_is_canceled, action=False, condition=True)
    table.add("t_check_status", _t_check_status, action=False, condition=True)
    table.add("t_branch_timeout", _t_branch_timeout, action=False, condition=True)
    table.add("t_branch_replied", _t_branch_replied, action=False, condition=True)
