"""The declarative route: YAML steps in Kamailio's vocabulary, compiled once
at start-up into Python closures.

A route is a list of steps. A step is a function name (``t_relay``), a
one-key mapping ``{function: arguments}`` (``{sl_send_reply: [404, "Not
here"]}``) or ``{if: condition, then: [steps], else: [steps]}``. A
condition is a function name, ``{function: arguments}``, ``{not: c}``,
``{all: [c, ...]}``, ``{any: [c, ...]}``, ``{eq: [a, b]}``, ``{ne: [a, b]}``
or ``{match: [value, regex]}``, where values may be pseudo-variables
(``$rU``, ``$du``, ``$var(x)``; ``null`` is Kamailio's ``$null``).
``"${section.key}"`` as an argument is replaced by that configuration value.

Each step becomes one closure ``step(ctx)``; a block runs its closures in
order and stops at ``exit`` (the whole route) or ``return`` (this named
route). Nothing is interpreted per message: the per-step cost is one call.
"""

import re

from ..logs import LEVELS, Logger, get_level
from .pv import RouteError, compile_setter, compile_template, compile_value


class _Signal:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name.upper()


EXIT = _Signal("exit")
RETURN = _Signal("return")

log = Logger(namespace="sipdisp.route")

#: names of functions that belong to subsystems sipdisp does not have yet
FUTURE = {
    "lookup": "the registrar", "save": "the registrar", "registered": "the registrar",
    "www_authorize": "auth", "proxy_authorize": "auth", "www_challenge": "auth",
    "proxy_challenge": "auth", "consume_credentials": "auth", "auth_check": "auth",
    "db_check_from": "auth", "db_check_to": "auth", "is_from_local": "auth",
    "do_accounting": "accounting", "acc_db_request": "accounting",
    "create_dialog": "the dialog module", "validate_dialog": "the dialog module",
    "dlg_manage": "the dialog module",
    "lb_start_or_next": "the load balancer", "lb_start": "the load balancer",
    "lb_next": "the load balancer", "lb_is_destination": "the load balancer",
    "nat_uac_test": "NAT traversal", "fix_nated_contact": "NAT traversal",
    "fix_nated_register": "NAT traversal", "rtpproxy_offer": "NAT traversal",
    "alias_db_lookup": "aliases", "dp_translate": "dialplan", "do_routing": "drouting",
    "handle_publish": "presence", "handle_subscribe": "presence",
}


class Function:
    """A route function: its factory ``factory(args, where, env) -> callable(ctx)``,
    whether it can be a step (action) and/or a condition, and a doc line."""

    __slots__ = ("name", "factory", "action", "condition", "doc")

    def __init__(self, name, factory, action, condition, doc):
        self.name = name
        self.factory = factory
        self.action = action
        self.condition = condition
        self.doc = doc


FUNCTIONS = {}


def function(name, *, action=True, condition=False):
    """Register a route function (subsystems add their own the same way)."""
    def decorate(factory):
        doc = (factory.__doc__ or "").strip().splitlines()[0] if factory.__doc__ else name
        for alias in (name,) if isinstance(name, str) else name:
            FUNCTIONS[alias] = Function(alias, factory, action, condition, doc)
        return factory
    return decorate


class Env:
    """What compiled steps are bound to: the dispatcher (None when only
    validating), the configuration (for ``${...}``) and the core."""

    def __init__(self, dispatcher=None, config=None, core=None):
        self.dispatcher = dispatcher
        self.config = config
        self.core = core


# -- argument helpers ------------------------------------------------------------

def _args(value):
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _nargs(name, args, where, lo, hi=None):
    hi = lo if hi is None else hi
    if not lo <= len(args) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise RouteError(where, f"{name} takes {want} argument(s), got {len(args)}")


def _int(value, where, what):
    if isinstance(value, bool):
        raise RouteError(where, f"{what} must be an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RouteError(where, f"{what} must be an integer, got {value!r}") from None


def _ms(value, where, what):
    """Milliseconds as Kamailio writes them; a float is a configuration time
    (``${proxy.branch_timeout}``: the config keeps every time in seconds)."""
    if isinstance(value, float):
        return int(round(value * 1000))
    return _int(value, where, what)


def _str(value, where, what):
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise RouteError(where, f"{what} must be a string, got {value!r}")
    return str(value)


# -- flow ----------------------------------------------------------------------------

@function("exit")
def _exit(args, where, env):
    """Stop routing this request (Kamailio ``exit``)."""
    _nargs("exit", args, where, 0)
    return lambda ctx: EXIT


@function("drop")
def _drop(args, where, env):
    """Stop routing without forwarding or replying (Kamailio ``drop``)."""
    _nargs("drop", args, where, 0)
    return lambda ctx: EXIT


@function("return")
def _return(args, where, env):
    """Leave the current named route (Kamailio ``return``)."""
    _nargs("return", args, where, 0, 1)
    return lambda ctx: RETURN


# -- replies -------------------------------------------------------------------------

@function(("sl_send_reply", "sl_reply"))
def _sl_reply(args, where, env):
    """Answer the request statelessly, once (Kamailio ``sl_send_reply``): ``[code, "reason"]``."""
    return _reply(args, where, env, stateless=True)


@function(("send_reply", "t_reply"))
def _reply(args, where, env, stateless=False):
    """Answer the request through its transaction: ``[code, "reason"]``."""
    _nargs("sl_send_reply" if stateless else "send_reply", args, where, 2)
    code = _int(args[0], where, "the status code")
    if not 100 <= code <= 699:
        raise RouteError(where, f"status code must be 100..699, got {code}")
    reason = compile_template(_str(args[1], where, "the reason"), where)
    release = env.dispatcher.release if env.dispatcher is not None else None

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


@function(("sl_reply_error", "send_reply_error"))
def _reply_error(args, where, env):
    """Answer 500 after an internal failure (Kamailio ``sl_reply_error``)."""
    _nargs("sl_reply_error", args, where, 0)

    def reply_error(ctx):
        if not ctx.handled or ctx.proxy_txn is None or not ctx.proxy_txn.branches:
            ctx.reply(500, "Server Internal Error")
    return reply_error


# -- message -----------------------------------------------------------------------

@function("record_route")
def _record_route(args, where, env):
    """Add Record-Route when the request is relayed."""
    _nargs("record_route", args, where, 0)

    def record_route(ctx):
        ctx.do_record_route = True
    return record_route


@function("remove_hf")
def _remove_hf(args, where, env):
    """Remove every header of a name: ``remove_hf: Route``."""
    _nargs("remove_hf", args, where, 1)
    key = _str(args[0], where, "the header name").strip().lower()

    def remove_hf(ctx):
        ctx.request.remove(key)
    return remove_hf


@function("append_hf")
def _append_hf(args, where, env):
    """Append a header: ``append_hf: "P-Hint: outbound"`` (pseudo-variables allowed)."""
    _nargs("append_hf", args, where, 1)
    text = _str(args[0], where, "the header").strip()
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise RouteError(where, f"append_hf needs \"Name: value\", got {text!r}")
    name = name.strip()
    key = name.lower()
    render = compile_template(value.strip(), where)

    def append_hf(ctx):
        ctx.request.add(key, render(ctx), name)
    return append_hf


@function("set")
def _set(args, where, env):
    """Assign pseudo-variables: ``set: {"$du": "sip:10.0.0.1:5060", "$var(n)": 1}``."""
    if len(args) != 1 or not isinstance(args[0], dict) or not args[0]:
        raise RouteError(where, 'set takes a mapping such as {"$du": "sip:10.0.0.1"}')
    pairs = [(compile_setter(str(k), where), compile_value(v, where))
             for k, v in args[0].items()]

    def set_values(ctx):
        for setter, getter in pairs:
            setter(ctx, getter(ctx))
    return set_values


@function("setflag")
def _setflag(args, where, env):
    """Set a per-request flag (number or name): ``setflag: 1``."""
    _nargs("setflag", args, where, 1)
    flag = args[0]
    return lambda ctx: ctx.flags.add(flag)


@function("resetflag")
def _resetflag(args, where, env):
    """Clear a per-request flag."""
    _nargs("resetflag", args, where, 1)
    flag = args[0]
    return lambda ctx: ctx.flags.discard(flag)


@function("isflagset", action=False, condition=True)
def _isflagset(args, where, env):
    """True if the flag is set."""
    _nargs("isflagset", args, where, 1)
    flag = args[0]
    return lambda ctx: flag in ctx.flags


# -- logging -------------------------------------------------------------------------

_XLOG_LEVELS = {"L_DBG": "debug", "L_INFO": "info", "L_NOTICE": "info", "L_WARN": "warn",
                "L_ERR": "error", "L_CRIT": "error", "L_ALERT": "error"}


def _make_xlog(default_level):
    def factory(args, where, env):
        if len(args) == 2:
            level_name = _str(args[0], where, "the level").upper()
            if level_name not in _XLOG_LEVELS:
                raise RouteError(where, f"level must be one of {', '.join(_XLOG_LEVELS)}")
            level = _XLOG_LEVELS[level_name]
            text = args[1]
        else:
            _nargs("xlog", args, where, 1)
            level, text = default_level, args[0]
        render = compile_template(_str(text, where, "the message").rstrip("\n"), where)
        threshold = LEVELS[level]
        emit = getattr(log, level)

        def xlog(ctx):
            if LEVELS[get_level()] <= threshold:
                emit("{line}", line=render(ctx))
        return xlog
    return factory


for _name, _level in (("xlog", "error"), ("xdbg", "debug"), ("xinfo", "info"),
                      ("xnotice", "info"), ("xwarn", "warn"), ("xerr", "error")):
    function(_name)(_make_xlog(_level))
    FUNCTIONS[_name].doc = f"Log a line with pseudo-variables at {_level} level: ``{_name}: \"text\"``."
FUNCTIONS["xlog"].doc = ('Log a line with pseudo-variables: ``xlog: "text"`` or '
                         '``[L_INFO, "text"]`` (default L_ERR, as Kamailio).')


# -- request checks --------------------------------------------------------------------

@function("is_method", action=False, condition=True)
def _is_method(args, where, env):
    """True if the method is one of ``"INVITE|SUBSCRIBE"``."""
    _nargs("is_method", args, where, 1)
    methods = frozenset(m.strip().upper() for m in _str(args[0], where, "methods").split("|")
                        if m.strip())
    if len(methods) == 1:
        (only,) = methods
        return lambda ctx: ctx.request.method == only
    return lambda ctx: ctx.request.method in methods


@function("has_totag", action=False, condition=True)
def _has_totag(args, where, env):
    """True for requests within a dialog (To has a tag)."""
    _nargs("has_totag", args, where, 0)
    return lambda ctx: ctx.request.to_tag is not None


@function("is_myself", action=False, condition=True)
def _is_myself(args, where, env):
    """True if the URI (default ``$ru``) is this proxy (Kamailio ``uri == myself``)."""
    _nargs("is_myself", args, where, 0, 1)
    text = _str(args[0], where, "the URI") if args else "$ru"
    if text in ("$ru", "uri"):
        return lambda ctx: ctx.core.is_myself(ctx.request.uri)
    from ..sip.uri import parse_uri
    getter = compile_value(text, where)

    def is_myself(ctx):
        value = getter(ctx)
        if not value:
            return False
        try:
            return ctx.core.is_myself(parse_uri(str(value)))
        except Exception:
            return False
    return is_myself


@function("mf_process_maxfwd_header", action=True, condition=True)
def _maxfwd(args, where, env):
    """False when Max-Forwards is 0 (the core answers that 483 itself; relaying decrements)."""
    _nargs("mf_process_maxfwd_header", args, where, 1)
    _int(args[0], where, "the default Max-Forwards")

    def maxfwd(ctx):
        value = ctx.request.get("max-forwards")
        return not (value is not None and value.strip() == "0")
    return maxfwd


@function("sanity_check", action=True, condition=True)
def _sanity(args, where, env):
    """True: the parser and the core checked the request before routing (RFC 3261 16.3)."""
    _nargs("sanity_check", args, where, 0, 2)
    return lambda ctx: True


@function(("t_check_trans", "t_lookup_request"), action=True, condition=True)
def _t_check_trans(args, where, env):
    """True if a CANCEL's or ACK's INVITE transaction exists (retransmissions never get here)."""
    _nargs("t_check_trans", args, where, 0)

    def t_check_trans(ctx):
        layer = ctx.core.layer
        method = ctx.request.method
        if method == "CANCEL":
            return layer.find_invite_for_cancel(ctx.request) is not None
        if method == "ACK":
            return layer.find_server(ctx.request) is not None
        return False
    return t_check_trans


@function("t_precheck_trans", action=True, condition=True)
def _t_precheck_trans(args, where, env):
    """False: retransmissions never reach the route (the core absorbs them)."""
    _nargs("t_precheck_trans", args, where, 0)
    return lambda ctx: False


@function("t_newtran", action=True, condition=True)
def _t_newtran(args, where, env):
    """True: every request the route sees has its transaction already."""
    _nargs("t_newtran", args, where, 0)
    return lambda ctx: True


@function("force_rport", action=True, condition=False)
def _force_rport(args, where, env):
    """No-op: the core always answers to the source port (RFC 3581)."""
    _nargs("force_rport", args, where, 0)
    return lambda ctx: None


# -- routing ---------------------------------------------------------------------------

@function("loose_route", action=True, condition=True)
def _loose_route(args, where, env):
    """Follow the Route set of an in-dialog request; True only if it is one this proxy record-routed (signed)."""
    _nargs("loose_route", args, where, 0)
    return lambda ctx: ctx.core.loose_route(ctx)


@function("t_relay", action=True, condition=True)
def _t_relay(args, where, env):
    """Forward statefully to $du, the Route set or the R-URI; False on failure."""
    _nargs("t_relay", args, where, 0)
    dispatcher = env.dispatcher

    def t_relay(ctx):
        ctx.handled = True
        ok = ctx.core.relay(ctx)
        if not ok and dispatcher is not None:
            dispatcher.release(ctx)
        return ok
    return t_relay


@function("t_set_fr")
def _t_set_fr(args, where, env):
    """Per-branch final reply timers in ms: ``[fr_inv, fr]`` (0 keeps the default; a ``${...}`` time key gives seconds)."""
    _nargs("t_set_fr", args, where, 1, 2)
    inv = _ms(args[0], where, "fr_inv_timeout")
    nin = _ms(args[1], where, "fr_timeout") if len(args) > 1 else 0
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

@function(("t_is_canceled", "t_was_cancelled"), action=False, condition=True)
def _t_is_canceled(args, where, env):
    """True if the caller CANCELled the transaction."""
    _nargs("t_is_canceled", args, where, 0)
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
        text = "|".join(str(_int(v, where, "a status code")) for v in value)
    else:
        text = _str(value, where, "the status pattern")
    try:
        return re.compile(f"(?:{text})")
    except re.error as exc:
        raise RouteError(where, f"bad status pattern {text!r}: {exc}") from None


@function("t_check_status", action=False, condition=True)
def _t_check_status(args, where, env):
    """True if the failed branch's status matches ``"500"``, ``"5[0-9][0-9]"`` or a list."""
    if len(args) > 1 and all(isinstance(a, int) for a in args):
        args = [args]
    _nargs("t_check_status", args, where, 1)
    regex = status_regex(args[0], where)
    match = regex.fullmatch

    def t_check_status(ctx):
        status = failed_status(ctx)
        return status is not None and match(str(status)) is not None
    return t_check_status


@function("t_branch_timeout", action=False, condition=True)
def _t_branch_timeout(args, where, env):
    """True if the failed branch timed out (no final reply in time)."""
    _nargs("t_branch_timeout", args, where, 0)

    def t_branch_timeout(ctx):
        branch = ctx.failed_branch
        return branch is not None and branch.local_reply
    return t_branch_timeout


@function("t_branch_replied", action=False, condition=True)
def _t_branch_replied(args, where, env):
    """True if the failed branch received any reply at all."""
    _nargs("t_branch_replied", args, where, 0)

    def t_branch_replied(ctx):
        branch = ctx.failed_branch
        return branch is not None and (branch.provisional or not branch.local_reply)
    return t_branch_replied


# -- dispatcher ----------------------------------------------------------------------

def _set_alg(args, where, name):
    from ..dispatcher.algorithms import check_algorithm
    _nargs(name, args, where, 2, 3)
    setid = _int(args[0], where, "the set id")
    try:
        alg = check_algorithm(args[1])
    except ValueError as exc:
        raise RouteError(where, str(exc)) from None
    limit = _int(args[2], where, "the limit") if len(args) > 2 else 0
    return setid, alg, limit


@function("ds_select_dst", action=True, condition=True)
def _ds_select_dst(args, where, env):
    """Pick a destination of a set with an algorithm: ``[set, alg(, limit)]``; sets $du."""
    setid, alg, limit = _set_alg(args, where, "ds_select_dst")
    dispatcher = env.dispatcher
    if dispatcher is None:
        return lambda ctx: False
    select = dispatcher.select_dst
    return lambda ctx: select(ctx, setid, alg, limit)


@function("ds_select_domain", action=True, condition=True)
def _ds_select_domain(args, where, env):
    """As ds_select_dst, but rewriting the R-URI host and port."""
    setid, alg, limit = _set_alg(args, where, "ds_select_domain")
    dispatcher = env.dispatcher
    if dispatcher is None:
        return lambda ctx: False
    select = dispatcher.select_domain
    return lambda ctx: select(ctx, setid, alg, limit)


@function(("ds_next_dst", "ds_next_domain"), action=True, condition=True)
def _ds_next_dst(args, where, env):
    """Use the next destination of the selected order; False when none is left."""
    _nargs("ds_next_dst", args, where, 0)
    dispatcher = env.dispatcher
    if dispatcher is None:
        return lambda ctx: False
    return dispatcher.next_dst


@function("ds_mark_dst", action=True, condition=True)
def _ds_mark_dst(args, where, env):
    """Mark the destination in use: ``"i"`` (default), ``"a"``, ``"t"``, ``"d"``, plus ``"p"``."""
    from ..dispatcher.destination import parse_state_letters
    _nargs("ds_mark_dst", args, where, 0, 1)
    try:
        state = parse_state_letters(_str(args[0], where, "the state") if args else "i")
    except ValueError as exc:
        raise RouteError(where, str(exc)) from None
    dispatcher = env.dispatcher
    if dispatcher is None:
        return lambda ctx: False
    mark = dispatcher.mark_dst
    return lambda ctx: mark(ctx, state)


@function("ds_is_from_list", action=False, condition=True)
def _ds_is_from_list(args, where, env):
    """True if the request comes from a destination: ``[set(, mode(, uri))]``, set -1 = all."""
    _nargs("ds_is_from_list", args, where, 0, 3)
    setid = _int(args[0], where, "the set id") if args else -1
    mode = _int(args[1], where, "the mode") if len(args) > 1 else None
    uri = None
    if len(args) > 2:
        from ..sip.uri import parse_uri
        try:
            uri = parse_uri(_str(args[2], where, "the URI"))
        except Exception as exc:
            raise RouteError(where, f"bad URI: {exc}") from None
    dispatcher = env.dispatcher
    if dispatcher is None:
        return lambda ctx: False
    check = dispatcher.is_from_list
    return lambda ctx: check(ctx, setid, mode, uri)


# -- the compiler -------------------------------------------------------------------

_CONFIG_REF = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")


class FailureRoute:
    """A compiled failure route (what ``t_on_failure`` stores); call it with the context."""

    __slots__ = ("name", "block")

    def __init__(self, name):
        self.name = name
        self.block = None

    def __call__(self, ctx):
        self.block(ctx)

    def __repr__(self):
        return f"<FailureRoute {self.name}>"


class Routing:
    """The compiled routing: ``request_route(ctx)``, named routes and failure routes."""

    def __init__(self, request_route, routes, failure_routes):
        self.request_route = request_route
        self.routes = routes
        self.failure_routes = failure_routes

    def route(self, name):
        """The compiled named route ``name`` (a callable returning EXIT, RETURN or None)."""
        return self.routes[name]

    def failure_route(self, name):
        """The compiled failure route ``name``, for ``ctx.t_on_failure``."""
        return self.failure_routes[name]


class Compiler:
    """Compiles one routing spec (``request_route``, ``routes``, ``failure_routes``)."""

    def __init__(self, spec, env, prefix="routing"):
        self.spec = spec
        self.env = env
        self.prefix = prefix
        self.routes = {}
        self.failure_routes = {}
        self._stack = []

    def compile(self):
        """Compile everything; a RouteError names the first mistake's key."""
        spec = self.spec
        routes = spec.get("routes") or {}
        failures = spec.get("failure_routes") or {}
        for kind, table in (("routes", routes), ("failure_routes", failures)):
            if not isinstance(table, dict):
                raise RouteError(f"{self.prefix}.{kind}", "expected a mapping of names to steps")
            for name in table:
                if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w-]*", name):
                    raise RouteError(f"{self.prefix}.{kind}", f"bad route name {name!r}")
        for name in failures:
            self.failure_routes[name] = FailureRoute(name)
        for name in routes:
            self._named(name)
        for name, steps in failures.items():
            self.failure_routes[name].block = self.block(
                steps, f"{self.prefix}.failure_routes.{name}")
        main = spec.get("request_route")
        if main is None:
            raise RouteError(f"{self.prefix}.request_route", "missing")
        block = self.block(main, f"{self.prefix}.request_route")

        def request_route(ctx):
            block(ctx)
        return Routing(request_route, dict(self.routes), dict(self.failure_routes))

    # -- blocks and steps ------------------------------------------------------------
    def _named(self, name, where=None):
        done = self.routes.get(name)
        if done is not None:
            return done
        table = self.spec.get("routes") or {}
        if name not in table:
            raise RouteError(where or f"{self.prefix}.routes", f"no route named {name!r} "
                             f"(defined: {', '.join(table) or 'none'})")
        if name in self._stack:
            chain = " -> ".join(self._stack[self._stack.index(name):] + [name])
            raise RouteError(f"{self.prefix}.routes.{name}", f"routes call each other in a loop: {chain}")
        self._stack.append(name)
        block = self.block(table[name], f"{self.prefix}.routes.{name}")
        self._stack.pop()
        self.routes[name] = block
        return block

    def block(self, steps, where):
        """A list of steps -> one callable returning EXIT, RETURN or None."""
        if isinstance(steps, (str, dict)):
            steps = [steps]
        if not isinstance(steps, list):
            raise RouteError(where, "expected a list of steps")
        compiled = tuple(self.step(s, f"{where}[{i}]") for i, s in enumerate(steps))
        if not compiled:
            return lambda ctx: None
        if len(compiled) == 1:
            only = compiled[0]

            def single(ctx):
                r = only(ctx)
                return r if r is EXIT or r is RETURN else None
            return single

        def block(ctx):
            for step in compiled:
                r = step(ctx)
                if r is EXIT or r is RETURN:
                    return r
            return None
        return block

    def step(self, step, where):
        """One step -> ``callable(ctx)``."""
        if isinstance(step, str):
            return self._call(step, None, where, action=True)
        if not isinstance(step, dict) or not step:
            raise RouteError(where, "a step is a function name, {function: arguments} "
                                    "or {if: ..., then: [...], else: [...]}")
        if "if" in step:
            extra = set(step) - {"if", "then", "else"}
            if extra:
                raise RouteError(where, f"unexpected key(s) beside if: {', '.join(map(str, extra))}")
            if "then" not in step:
                raise RouteError(where, "if needs then")
            cond = self.condition(step["if"], f"{where}.if")
            then = self.block(step["then"], f"{where}.then")
            other = self.block(step["else"], f"{where}.else") if "else" in step else None
            if other is None:
                def if_step(ctx):
                    if cond(ctx):
                        return then(ctx)
                    return None
            else:
                def if_step(ctx):
                    if cond(ctx):
                        return then(ctx)
                    return other(ctx)
            return if_step
        if len(step) != 1:
            raise RouteError(where, f"one function per step, got {', '.join(map(str, step))}")
        ((name, args),) = step.items()
        return self._call(name, args, where, action=True)

    def _call(self, name, args, where, action):
        if not isinstance(name, str):
            raise RouteError(where, f"{name!r} is not a function name")
        where = f"{where}.{name}"
        if name == "route":
            target = _str(_args(args)[0] if _args(args) else "", where, "the route name")
            block = self._named(target, where)
            if action:
                def call_route(ctx):
                    return EXIT if block(ctx) is EXIT else None
                return call_route
            raise RouteError(where, "route(...) cannot be a condition")
        if name == "t_on_failure":
            a = _args(args)
            _nargs("t_on_failure", a, where, 1)
            target = _str(a[0], where, "the failure route name")
            failure = self.failure_routes.get(target)
            if failure is None:
                raise RouteError(where, f"no failure route named {target!r} (defined: "
                                        f"{', '.join(self.failure_routes) or 'none'})")

            def t_on_failure(ctx):
                ctx.failure_route = failure
            return t_on_failure
        func = FUNCTIONS.get(name)
        if func is None:
            if name in FUTURE:
                raise RouteError(where, f"{name} needs {FUTURE[name]}, which sipdisp does not "
                                        "have yet")
            raise RouteError(where, f"unknown function {name!r}")
        if action and not func.action:
            raise RouteError(where, f"{name} is a condition; use it under if:")
        if not action and not func.condition:
            raise RouteError(where, f"{name} is not a condition")
        return func.factory(self._resolve(_args(args), where), where, self.env)

    def condition(self, cond, where):
        """A condition -> ``callable(ctx) -> bool``."""
        if isinstance(cond, bool):
            return lambda ctx: cond
        if isinstance(cond, str):
            return self._call(cond, None, where, action=False)
        if not isinstance(cond, dict) or len(cond) != 1:
            raise RouteError(where, "a condition is a function name or a one-key mapping "
                                    "(function, not, all, any, eq, ne, match)")
        ((key, value),) = cond.items()
        if key == "not":
            inner = self.condition(value, f"{where}.not")
            return lambda ctx: not inner(ctx)
        if key in ("all", "any", "and", "or"):
            if not isinstance(value, list) or not value:
                raise RouteError(f"{where}.{key}", "expected a list of conditions")
            parts = tuple(self.condition(c, f"{where}.{key}[{i}]") for i, c in enumerate(value))
            if key in ("all", "and"):
                return lambda ctx: all(p(ctx) for p in parts)
            return lambda ctx: any(p(ctx) for p in parts)
        if key in ("eq", "ne"):
            args = self._resolve(_args(value), f"{where}.{key}")
            _nargs(key, args, f"{where}.{key}", 2)
            left = compile_value(args[0], f"{where}.{key}")
            right = compile_value(args[1], f"{where}.{key}")
            if key == "eq":
                return lambda ctx: _same(left(ctx), right(ctx))
            return lambda ctx: not _same(left(ctx), right(ctx))
        if key == "match":
            args = self._resolve(_args(value), f"{where}.match")
            _nargs("match", args, f"{where}.match", 2)
            getter = compile_value(args[0], f"{where}.match")
            try:
                regex = re.compile(_str(args[1], f"{where}.match", "the regex"))
            except re.error as exc:
                raise RouteError(f"{where}.match", f"bad regex: {exc}") from None

            def match(ctx):
                value = getter(ctx)
                return value is not None and regex.search(str(value)) is not None
            return match
        return self._call(key, value, where, action=False)

    def _resolve(self, args, where):
        """Replace ``"${section.key}"`` arguments by configuration values."""
        out = []
        for arg in args:
            if isinstance(arg, str):
                m = _CONFIG_REF.fullmatch(arg.strip())
                if m is not None:
                    arg = self._config_value(m.group(1), where)
            out.append(arg)
        return out

    def _config_value(self, dotted, where):
        cfg = self.env.config
        if cfg is None:
            raise RouteError(where, f"${{{dotted}}}: no configuration to read it from")
        value = cfg
        for part in dotted.split("."):
            try:
                value = getattr(value, part)
            except AttributeError:
                raise RouteError(where, f"${{{dotted}}}: no such configuration key") from None
        return value


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    return str(a) == str(b)


def compile_routing(spec, env=None, prefix="routing"):
    """Compile a routing spec (a dict with ``request_route``, ``routes`` and
    ``failure_routes``) into a :class:`Routing`."""
    return Compiler(spec, env or Env(), prefix).compile()


def describe_functions():
    """``[(name, kinds, doc)]`` of every route function, for docs/routing.md."""
    out = []
    for name in sorted(FUNCTIONS):
        func = FUNCTIONS[name]
        kinds = "/".join(k for k, on in (("step", func.action), ("condition", func.condition)) if on)
        out.append((name, kinds, func.doc))
    return out
