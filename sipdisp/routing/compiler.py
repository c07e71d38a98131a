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

The functions come from the :class:`~sipdisp.routing.plugin.FunctionTable`
the route is compiled against (``env.functions``); only ``route``,
``t_on_failure``, ``t_on_reply`` and ``t_on_branch``, which name other
routes, are the compiler's own. A name in no table is a one-line error
naming it and its key.

Besides the request route and named ``routes`` there are three kinds of
transaction routes, as in Kamailio: ``failure_routes`` (``t_on_failure``:
when every branch failed), ``onreply_routes`` (``t_on_reply``: each reply a
branch receives, with the reply as the current message, see
:class:`~sipdisp.proxy.context.ReplyContext`) and ``branch_routes``
(``t_on_branch``: each branch just before it is sent). A route is compiled
once per kind it runs in (``env.kind``): in a reply route ``$ru`` and
``$du`` are null, ``$rm`` is the CSeq method and ``drop`` drops the reply;
in a branch route ``drop`` drops the branch; functions that answer or
relay the request (:data:`REQUEST_ONLY`) are refused in both.

Each step becomes one closure ``step(ctx)``; a block runs its closures in
order and stops at ``exit`` (the whole route) or ``return`` (this named
route). Nothing is interpreted per message: the per-step cost is one call.
"""

import re

from .plugin import EXIT, RETURN, Modules, RouteError, args_list, nargs, str_arg
from .pv import REPLY_VARIABLES, compile_value

#: branch flag names and their bits when ``routing.branch_flags`` is not
#: configured: the usrloc NAT flags of both seeds (Kamailio's FLB_NATB 6 and
#: FLB_NATSIPPING 7, OpenSIPS' nat_bflag NAT and sipping_bflag SIP_PING_FLAG)
DEFAULT_BRANCH_FLAGS = {"NAT": 6, "FLB_NATB": 6, "SIP_PING_FLAG": 7, "FLB_NATSIPPING": 7}


def branch_flag_bit(flag, where, names):
    """The bit of a branch flag: a number 0-31 or a name in ``names``."""
    if isinstance(flag, bool):
        raise RouteError(where, f"a branch flag is a number 0-31 or a name, got {flag!r}")
    if isinstance(flag, int) or (isinstance(flag, str) and flag.strip().isdigit()):
        bit = int(flag)
        if not 0 <= bit <= 31:
            raise RouteError(where, f"branch flag {bit} is out of range 0-31")
        return bit
    if not isinstance(flag, str) or flag.strip() not in names:
        raise RouteError(where, f"unknown branch flag {flag!r} (routing.branch_flags names: "
                                f"{', '.join(sorted(names)) or 'none'})")
    return names[flag.strip()]


#: Kamailio names whose subsystem sipdisp does not have: name -> (what it
#: needs, what to use instead or None). Using one is a configuration error
#: saying so, rather than a bare "unknown function".
FUTURE = {
    "rls_handle_subscribe": ("resource list subscriptions (RLS, RFC 4662)",
                             "handle_subscribe to each presentity"),
    "rls_handle_notify": ("resource list subscriptions (RLS, RFC 4662)", None),
}


#: functions that answer, relay or look up the request: refused in reply and
#: branch routes (Kamailio allows them in REQUEST_ROUTE and FAILURE_ROUTE only)
REQUEST_ONLY = frozenset((
    "t_relay", "sl_send_reply", "sl_reply", "send_reply", "t_reply", "sl_reply_error",
    "send_reply_error", "loose_route", "save", "lookup", "www_authorize", "proxy_authorize",
    "auth_check", "www_challenge", "proxy_challenge", "auth_challenge", "consume_credentials",
    "ds_select_dst", "ds_select_domain", "ds_next_dst", "lb_start_or_next", "lb_next",
    "create_dialog", "t_newtran", "t_check_trans", "t_lookup_request", "t_precheck_trans",
    "fix_nated_register", "do_routing", "use_next_gw", "alias_db_lookup", "m_store", "m_dump",
    "handle_publish", "handle_subscribe"))

#: the sections of a routing spec holding transaction routes: section -> kind
TXN_ROUTES = {"failure_routes": "failure", "onreply_routes": "reply", "branch_routes": "branch"}

#: the function that arms each kind of transaction route, and the slot it sets
_ARMING = {"t_on_failure": ("failure", "failure_route"),
           "t_on_reply": ("reply", "reply_route"),
           "t_on_branch": ("branch", "branch_route")}


#: the kinds of route whose steps are taped: a request route suspended for
#: the database or rtpengine, a reply route whose reply is held for rtpengine
_TAPED = frozenset(("request", "reply"))


def replayed(leaf):
    """``leaf`` (a compiled step or condition of a request route) recording its
    result on the request's tape: a run resumed after a suspension replays
    the results up to the suspension point instead of acting again, so
    ``lb_start_or_next``, ``append_hf`` or ``dp_translate`` before an
    ``alias_db_lookup`` that waited for the database act once, and the
    conditions take the branches they took the first time."""
    def step(ctx):
        # ctx.tape_pos is -1 once the run is past what the tape holds (every
        # first run after its first step): the common path is one test
        pos = ctx.tape_pos
        if pos >= 0:
            tape = ctx.tape
            if pos < len(tape):
                ctx.tape_pos = pos + 1
                return tape[pos]
            ctx.tape_pos = -1
        result = leaf(ctx)
        ctx.tape.append(result)
        return result
    step.__name__ = getattr(leaf, "__name__", "step")
    return step


def future_message(name):
    """The one-line refusal of a FUTURE name: what it needs and what to use instead."""
    needs, instead = FUTURE[name]
    text = f"{name} needs {needs}, which sipdisp does not have yet"
    return f"{text}; use {instead}" if instead else text


class Env:
    """What compiled steps are bound to: the
    :class:`~sipdisp.routing.plugin.FunctionTable` the route may call, the
    running subsystems (:class:`~sipdisp.routing.plugin.Modules`, every slot
    None when only validating), the configuration (for ``${...}``) and the
    core (None when only validating)."""

    def __init__(self, functions, modules=None, config=None, core=None, kind="request"):
        self.functions = functions
        self.modules = modules if modules is not None else Modules()
        self.config = config
        self.core = core
        #: what the compiled steps will run in: "request" (the request route
        #: and named routes), "failure", "reply" or "branch"
        self.kind = kind
        self._variables = None

    def for_kind(self, kind):
        """The same environment for steps of another kind of route."""
        if kind == self.kind:
            return self
        return Env(self.functions, self.modules, self.config, self.core, kind)

    @property
    def variables(self):
        """The pseudo-variables a route may read: name -> getter(ctx); in a
        reply route the request's own ($ru, $du, $rm ...) read the reply."""
        if self.kind != "reply":
            return self.functions.variables
        if self._variables is None:
            self._variables = dict(self.functions.variables, **REPLY_VARIABLES)
        return self._variables

    def flag_bit(self, flag, where):
        """The bit of branch flag ``flag`` (0-31, or a name of
        ``routing.branch_flags`` or :data:`DEFAULT_BRANCH_FLAGS`);
        RouteError naming ``where`` otherwise."""
        table = getattr(getattr(self.config, "routing", None), "branch_flags", None)
        return branch_flag_bit(flag, where, dict(DEFAULT_BRANCH_FLAGS, **(table or {})))


# -- the compiler -------------------------------------------------------------------

_CONFIG_REF = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")


class FailureRoute:
    """A compiled transaction route (what ``t_on_failure``, ``t_on_reply``
    or ``t_on_branch`` stores); call it with the context. ``kind`` is
    "failure", "reply" or "branch"."""

    __slots__ = ("name", "block", "kind")

    def __init__(self, name, kind="failure"):
        self.name = name
        self.block = None
        self.kind = kind

    def __call__(self, ctx):
        self.block(ctx)

    def __repr__(self):
        return f"<{self.kind.capitalize()}Route {self.name}>"


class Routing:
    """The compiled routing: ``request_route(ctx)``, named routes and the
    transaction routes (failure, reply and branch routes)."""

    def __init__(self, request_route, routes, failure_routes, reply_routes=None,
                 branch_routes=None):
        self.request_route = request_route
        self.routes = routes
        self.failure_routes = failure_routes
        self.reply_routes = reply_routes or {}
        self.branch_routes = branch_routes or {}

    def route(self, name):
        """The compiled named route ``name`` (a callable returning EXIT, RETURN or None)."""
        return self.routes[name]

    def failure_route(self, name):
        """The compiled failure route ``name``, for ``ctx.t_on_failure``."""
        return self.failure_routes[name]

    def reply_route(self, name):
        """The compiled reply route ``name``, for ``ctx.t_on_reply``."""
        return self.reply_routes[name]

    def branch_route(self, name):
        """The compiled branch route ``name``, for ``ctx.t_on_branch``."""
        return self.branch_routes[name]


class Compiler:
    """Compiles one routing spec (``request_route``, ``routes`` and the
    transaction routes of :data:`TXN_ROUTES`)."""

    def __init__(self, spec, env, prefix="routing"):
        self.spec = spec
        self.env = env
        self.prefix = prefix
        # named routes per kind of route they run in: (kind, name) -> block
        self._compiled = {}
        # transaction routes by kind: kind -> {name: FailureRoute}
        self.txn_routes = {kind: {} for kind in TXN_ROUTES.values()}
        self._stack = []

    @property
    def routes(self):
        """The named routes compiled for request routes: name -> block."""
        return {name: block for (kind, name), block in self._compiled.items()
                if kind == "request"}

    @property
    def failure_routes(self):
        """The failure routes: name -> FailureRoute."""
        return self.txn_routes["failure"]

    def compile(self):
        """Compile everything; a RouteError names the first mistake's key."""
        spec = self.spec
        routes = spec.get("routes") or {}
        tables = [("routes", routes)] + [(section, spec.get(section) or {})
                                         for section in TXN_ROUTES]
        for section, table in tables:
            if not isinstance(table, dict):
                raise RouteError(f"{self.prefix}.{section}", "expected a mapping of names to steps")
            for name in table:
                if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w-]*", name):
                    raise RouteError(f"{self.prefix}.{section}", f"bad route name {name!r}")
        for section, kind in TXN_ROUTES.items():
            for name in spec.get(section) or {}:
                self.txn_routes[kind][name] = FailureRoute(name, kind)
        env = self.env
        for name in routes:
            self._named(name)
        for section, kind in TXN_ROUTES.items():
            self.env = env.for_kind(kind)
            try:
                for name, steps in (spec.get(section) or {}).items():
                    self.txn_routes[kind][name].block = self.block(
                        steps, f"{self.prefix}.{section}.{name}")
            finally:
                self.env = env
        main = spec.get("request_route")
        if main is None:
            raise RouteError(f"{self.prefix}.request_route", "missing")
        block = self.block(main, f"{self.prefix}.request_route")

        def request_route(ctx):
            block(ctx)
        return Routing(request_route, self.routes, dict(self.txn_routes["failure"]),
                       dict(self.txn_routes["reply"]), dict(self.txn_routes["branch"]))

    # -- blocks and steps ------------------------------------------------------------
    def _named(self, name, where=None):
        kind = self.env.kind if self.env.kind in ("reply", "branch") else "request"
        done = self._compiled.get((kind, name))
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
        self._compiled[(kind, name)] = block
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
            known = getattr(cond, "constant", None)
            if known is not None:  # decided by the configuration: no test per request
                return then if known else (other or (lambda ctx: None))
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
            named = args_list(args)
            target = str_arg(named[0] if named else "", where, "the route name")
            block = self._named(target, where)
            if action:
                def call_route(ctx):
                    return EXIT if block(ctx) is EXIT else None
                return call_route
            raise RouteError(where, "route(...) cannot be a condition")
        if name in _ARMING:
            return self._arming(name, args, where, action)
        func = self.env.functions.get(name)
        if func is None:
            if name in FUTURE:
                raise RouteError(where, future_message(name))
            raise RouteError(where, f"unknown function {name!r}")
        if name in REQUEST_ONLY and self.env.kind in ("reply", "branch"):
            raise RouteError(where, f"{name} cannot be used in a {self.env.kind} route "
                                    "(it answers, relays or looks up the request)")
        if action and not func.action:
            raise RouteError(where, f"{name} is a condition; use it under if:")
        if not action and not func.condition:
            raise RouteError(where, f"{name} is not a condition")
        leaf = func.factory(self._resolve(args_list(args), where), where, self.env)
        if self.env.kind not in _TAPED or getattr(leaf, "steady", False):
            return leaf
        return replayed(leaf)

    def _arming(self, name, args, where, action):
        """``t_on_failure`` / ``t_on_reply`` / ``t_on_branch: NAME``: a step
        that arms that transaction route for the request."""
        kind, slot = _ARMING[name]
        if not action:
            raise RouteError(where, f"{name} is not a condition")
        a = args_list(args)
        nargs(name, a, where, 1)
        target = str_arg(a[0], where, f"the {kind} route name")
        table = self.txn_routes[kind]
        route = table.get(target)
        if route is None:
            raise RouteError(where, f"no {kind} route named {target!r} (defined: "
                                    f"{', '.join(table) or 'none'})")
        if slot == "failure_route":
            def arm(ctx):
                ctx.failure_route = route
        elif slot == "reply_route":
            def arm(ctx):
                ctx.reply_route = route
        else:
            def arm(ctx):
                ctx.branch_route = route
        arm.__name__ = name
        return arm

    def condition(self, cond, where):
        """A condition -> ``callable(ctx) -> bool``."""
        if isinstance(cond, bool):
            return _constant(cond)
        if isinstance(cond, str):
            return self._call(cond, None, where, action=False)
        if not isinstance(cond, dict) or len(cond) != 1:
            raise RouteError(where, "a condition is a function name or a one-key mapping "
                                    "(function, not, all, any, eq, ne, match)")
        ((key, value),) = cond.items()
        if key == "not":
            inner = self.condition(value, f"{where}.not")
            known = getattr(inner, "constant", None)
            if known is not None:
                return _constant(not known)
            return lambda ctx: not inner(ctx)
        if key in ("all", "any", "and", "or"):
            if not isinstance(value, list) or not value:
                raise RouteError(f"{where}.{key}", "expected a list of conditions")
            parts = tuple(self.condition(c, f"{where}.{key}[{i}]") for i, c in enumerate(value))
            every = key in ("all", "and")
            # parts the configuration decides: one that decides the whole
            # (a false in all, a true in any) folds it, the others drop out
            if any(getattr(p, "constant", None) is (not every) for p in parts):
                return _constant(not every)
            parts = tuple(p for p in parts if getattr(p, "constant", None) is None)
            if not parts:
                return _constant(every)
            if len(parts) == 1:
                return parts[0]
            if every:
                return lambda ctx: all(p(ctx) for p in parts)
            return lambda ctx: any(p(ctx) for p in parts)
        if key in ("eq", "ne"):
            args = self._resolve(args_list(value), f"{where}.{key}")
            nargs(key, args, f"{where}.{key}", 2)
            left = compile_value(args[0], f"{where}.{key}", self.env.variables)
            right = compile_value(args[1], f"{where}.{key}", self.env.variables)
            if _literal(args[0]) and _literal(args[1]):  # "${msilo.enabled}" == true
                same = _same(left(None), right(None))
                return _constant(same if key == "eq" else not same)
            if key == "eq":
                return self._leaf(lambda ctx: _same(left(ctx), right(ctx)))
            return self._leaf(lambda ctx: not _same(left(ctx), right(ctx)))
        if key == "match":
            args = self._resolve(args_list(value), f"{where}.match")
            nargs("match", args, f"{where}.match", 2)
            getter = compile_value(args[0], f"{where}.match", self.env.variables)
            try:
                regex = re.compile(str_arg(args[1], f"{where}.match", "the regex"))
            except re.error as exc:
                raise RouteError(f"{where}.match", f"bad regex: {exc}") from None

            def match(ctx):
                value = getter(ctx)
                return value is not None and regex.search(str(value)) is not None
            return self._leaf(match)
        return self._call(key, value, where, action=False)

    def _leaf(self, leaf):
        """A comparison of a request route, taped like a function (see :func:`replayed`)."""
        return replayed(leaf) if self.env.kind in _TAPED else leaf

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


def _constant(value):
    """A condition the configuration decides: ``constant`` tells the compiler."""
    def known(ctx):
        return value
    known.constant = bool(value)
    return known


def _literal(arg):
    """True for an argument with no pseudo-variable (a configuration value, a constant)."""
    return not isinstance(arg, str) or "$" not in arg


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    return str(a) == str(b)


def compile_routing(spec, env, prefix="routing"):
    """Compile a routing spec (a dict with ``request_route``, ``routes``,
    ``failure_routes``, ``onreply_routes`` and ``branch_routes``) into a
    :class:`Routing` bound to ``env``."""
    return Compiler(spec, env, prefix).compile()
