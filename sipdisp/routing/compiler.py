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
the route is compiled against (``env.functions``); only ``route`` and
``t_on_failure``, which name other routes, are the compiler's own. A name in
no table is a one-line error naming it and its key.

Each step becomes one closure ``step(ctx)``; a block runs its closures in
order and stops at ``exit`` (the whole route) or ``return`` (this named
route). Nothing is interpreted per message: the per-step cost is one call.
"""

import re

from .plugin import EXIT, RETURN, Modules, RouteError, args_list, nargs, str_arg
from .pv import compile_value


#: Kamailio names whose subsystem sipdisp does not have: name -> (what it
#: needs, what to use instead or None). Using one is a configuration error
#: saying so, rather than a bare "unknown function".
FUTURE = {
    "alias_db_lookup": ("aliases", 'an if: with set: {"$rU": ...}'),
    "dp_translate": ("dialplan", 'match: and set: {"$rU": ...}'),
    "do_routing": ("drouting", "ds_select_dst or lb_start_or_next"),
    "handle_publish": ("presence", None),
    "handle_subscribe": ("presence", None),
    "rtpproxy_offer": ("a media relay such as RTPProxy", None),
}


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

    def __init__(self, functions, modules=None, config=None, core=None):
        self.functions = functions
        self.modules = modules if modules is not None else Modules()
        self.config = config
        self.core = core

    @property
    def variables(self):
        """The pseudo-variables a route may read: name -> getter(ctx)."""
        return self.functions.variables


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
            named = args_list(args)
            target = str_arg(named[0] if named else "", where, "the route name")
            block = self._named(target, where)
            if action:
                def call_route(ctx):
                    return EXIT if block(ctx) is EXIT else None
                return call_route
            raise RouteError(where, "route(...) cannot be a condition")
        if name == "t_on_failure":
            a = args_list(args)
            nargs("t_on_failure", a, where, 1)
            target = str_arg(a[0], where, "the failure route name")
            failure = self.failure_routes.get(target)
            if failure is None:
                raise RouteError(where, f"no failure route named {target!r} (defined: "
                                        f"{', '.join(self.failure_routes) or 'none'})")

            def t_on_failure(ctx):
                ctx.failure_route = failure
            return t_on_failure
        func = self.env.functions.get(name)
        if func is None:
            if name in FUTURE:
                raise RouteError(where, future_message(name))
            raise RouteError(where, f"unknown function {name!r}")
        if action and not func.action:
            raise RouteError(where, f"{name} is a condition; use it under if:")
        if not action and not func.condition:
            raise RouteError(where, f"{name} is not a condition")
        return func.factory(self._resolve(args_list(args), where), where, self.env)

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
            args = self._resolve(args_list(value), f"{where}.{key}")
            nargs(key, args, f"{where}.{key}", 2)
            left = compile_value(args[0], f"{where}.{key}", self.env.variables)
            right = compile_value(args[1], f"{where}.{key}", self.env.variables)
            if key == "eq":
                return lambda ctx: _same(left(ctx), right(ctx))
            return lambda ctx: not _same(left(ctx), right(ctx))
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


def compile_routing(spec, env, prefix="routing"):
    """Compile a routing spec (a dict with ``request_route``, ``routes`` and
    ``failure_routes``) into a :class:`Routing` bound to ``env``."""
    return Compiler(spec, env, prefix).compile()
