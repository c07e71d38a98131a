"""The plugin API of the YAML route: what a subsystem needs to offer route
functions, and nothing else.

A subsystem keeps its functions in its own ``routefuncs.py`` and declares
them in a ``register(table)`` function; the service tree builds one
:class:`FunctionTable` from the core functions and every subsystem's
``register`` and hands it to the compiler. Importing a ``routefuncs``
module registers nothing.

    from ..routing.plugin import RouteError, int_arg, nargs

    def _lb_next(args, where, env):
        \"\"\"Fail over to the best destination not tried yet.\"\"\"
        nargs("lb_next", args, where, 0)
        return lb_next

    def register(table):
        table.add("lb_next", _lb_next, action=True, condition=True)

A factory ``factory(args, where, env)`` runs once, when the route compiles:
it checks ``args`` (raising :class:`RouteError` with ``where``, the dotted
key of the step) and returns the closure ``callable(ctx)`` that runs per
message. ``env`` is the :class:`~sipdisp.routing.compiler.Env` the route is
compiled against (``env.config``, ``env.core``, ``env.modules``,
``env.variables``).
"""

from .pv import SIMPLE, RouteError, compile_setter, compile_template, compile_value


class _Signal:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name.upper()


#: returned by a step: stop routing this request (Kamailio ``exit``)
EXIT = _Signal("exit")
#: returned by a step: leave the current named route (Kamailio ``return``)
RETURN = _Signal("return")


def steady(leaf):
    """Mark a compiled condition whose result cannot change while one
    request is routed (its method): the route tape does not record it, a
    resumed run computes it again and gets the same answer."""
    leaf.steady = True
    return leaf


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

    @property
    def kinds(self):
        """``"step"``, ``"condition"`` or ``"step/condition"``, as docs/routing.md shows it."""
        return "/".join(k for k, on in (("step", self.action), ("condition", self.condition))
                        if on)


class FunctionTable:
    """The route functions (and extra pseudo-variables) a route may use.

    Built once where the service tree is assembled and passed to the
    compiler; nothing registers into it behind the caller's back.
    """

    def __init__(self):
        self.functions = {}
        #: pseudo-variable name -> getter(ctx): the core's, plus what subsystems add
        self.variables = dict(SIMPLE)

    def add(self, names, factory, action=True, condition=False, doc=None):
        """Declare a function under one name or several (aliases). ``doc``
        defaults to the first line of the factory's docstring. Declaring a
        name twice is a ValueError: two subsystems may not share a name."""
        if doc is None:
            doc = (factory.__doc__ or "").strip().splitlines()[0] if factory.__doc__ else None
        for name in (names,) if isinstance(names, str) else names:
            if name in self.functions:
                raise ValueError(f"route function {name!r} is declared twice")
            self.functions[name] = Function(name, factory, action, condition, doc or name)
        return factory

    def add_variable(self, name, getter):
        """Declare a pseudo-variable ``$name`` read by ``getter(ctx)``."""
        if name in self.variables:
            raise ValueError(f"pseudo-variable ${name} is declared twice")
        self.variables[name] = getter

    def add_pv_function(self, name, getter, setter=None):
        """Declare ``$name(arg)``: ``getter(arg, where, variables) -> get(ctx)``
        and, when it can be assigned, ``setter(arg, where, variables) -> set(ctx, value)``."""
        if name + "()" in self.variables:
            raise ValueError(f"pseudo-variable ${name}() is declared twice")
        self.variables[name + "()"] = getter
        if setter is not None:
            self.variables[name + "()="] = setter

    def get(self, name):
        """The :class:`Function` called ``name``, or None."""
        return self.functions.get(name)

    def __contains__(self, name):
        return name in self.functions

    def describe(self):
        """``[(name, kinds, doc)]`` of every function, sorted by name (docs/routing.md)."""
        return [(name, self.functions[name].kinds, self.functions[name].doc)
                for name in sorted(self.functions)]


class Modules:
    """The subsystems a route may call, one declared slot each (None while a
    subsystem is not running). The service tree fills it as it builds the
    subsystems and hands it to the compiler (``env.modules``) and to the core
    (``core.modules``, where the Python route API finds it); subsystems get
    their collaborators passed in and never look each other up here."""

    __slots__ = ("routing", "storage", "dispatcher", "registrar", "usrloc", "auth", "dialogs",
                 "load_balancer", "accounting", "aliases", "dialplan", "drouting", "cache", "msilo",
                 "flood", "rtpengine", "presence", "shared")

    def __init__(self, **modules):
        for name in self.__slots__:
            setattr(self, name, modules.pop(name, None))
        if modules:
            raise TypeError(f"unknown modules: {', '.join(sorted(modules))}")

    def items(self):
        """``(slot, module)`` of every running module, in slot order."""
        return [(name, getattr(self, name)) for name in self.__slots__
                if getattr(self, name) is not None]

    def require(self, name):
        """The module in slot ``name``; RuntimeError naming it when it is not running."""
        module = getattr(self, name)
        if module is None:
            raise RuntimeError(f"the {name} module is not running")
        return module


# -- argument helpers: checked when the route compiles, never per message -------------

def args_list(value):
    """The arguments of a step as a list: none, one scalar or a list."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def nargs(name, args, where, lo, hi=None, usage=None):
    """RouteError unless ``lo <= len(args) <= hi`` (``hi`` defaults to ``lo``);
    ``usage`` (``"group, resources[, flags]"``) is added to the message."""
    hi = lo if hi is None else hi
    if not lo <= len(args) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        hint = f" ({usage})" if usage else ""
        raise RouteError(where, f"{name} takes {want} argument(s){hint}, got {len(args)}")


def int_arg(value, where, what):
    """``value`` as an int (``"5"`` too, never a bool); RouteError naming ``what`` otherwise."""
    if isinstance(value, bool):
        raise RouteError(where, f"{what} must be an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RouteError(where, f"{what} must be an integer, got {value!r}") from None


def ms_arg(value, where, what):
    """Milliseconds as Kamailio writes them; a float is a configuration time
    (``${proxy.branch_timeout}``: the config keeps every time in seconds)."""
    if isinstance(value, float):
        return int(round(value * 1000))
    return int_arg(value, where, what)


def str_arg(value, where, what):
    """``value`` as a string (an int is taken as its digits); RouteError otherwise."""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise RouteError(where, f"{what} must be a string, got {value!r}")
    return str(value)


def value_arg(value, where, env):
    """A getter ``ctx -> value`` for a pseudo-variable (``"$fU"``), a template
    with some, or a constant, knowing the pseudo-variables of ``env``."""
    return compile_value(value, where, env.variables)


def template_arg(text, where, env):
    """A formatter ``ctx -> str`` for ``"text with $ru"`` (None shows as ``<null>``)."""
    return compile_template(text, where, env.variables)


def setter_arg(text, where, env=None):
    """A setter ``(ctx, value)`` for an assignable pseudo-variable (``"$var(n)"``,
    ``"$du"``; with ``env``, a subsystem's too, such as ``"$sht(ipban=>$si)"``)."""
    return compile_setter(text, where, env.variables if env is not None else None)


__all__ = ["EXIT", "RETURN", "Function", "FunctionTable", "Modules", "RouteError", "args_list",
           "int_arg", "ms_arg", "nargs", "setter_arg", "str_arg", "template_arg", "value_arg"]
