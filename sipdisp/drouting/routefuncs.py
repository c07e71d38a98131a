"""The drouting functions of the YAML route, declared in a routing function
table by :func:`register` (OpenSIPS' names):

    - if: {match: ["$rU", '^\\+[1-9][0-9]+$']}
      then:
        - if: {not: {do_routing: "0"}}            # do_routing("0")
          then: [{send_reply: [500, "No PSTN Route found"]}, exit]
        - route: relay
    - if: {not: {any: [{is_method: REGISTER}, is_from_gw]}}    # is_from_gw()
      then: [...]

    failure_routes:
      missed_call:
        - if: {t_check_status: "5[0-9][0-9]|408"}
          then:
            - if: use_next_gw                     # or dr_next_gw
              then: [{route: relay}]

They need ``drouting.enabled: true`` (the tables are loaded at start).
Python routes call the functions at the end of this module with the request
context first (``do_routing(ctx, 0)``).
"""

from ..routing.plugin import RouteError, nargs

DO_ROUTING_FLAGS = set("FLC")
IS_FROM_GW_FLAGS = set("n")


def _dr(ctx):
    dr = ctx.core.modules.drouting
    if dr is None:
        raise RuntimeError("drouting is not running (drouting.enabled: false)")
    return dr


# -- Python API -------------------------------------------------------------------

def do_routing(ctx, group=None, flags=""):
    """Route to the first gateway of the best rule for the R-URI user in ``group``."""
    return _dr(ctx).do_routing(ctx, group, flags)


def use_next_gw(ctx):
    """Move the request to the next gateway of its rule (failure route)."""
    return _dr(ctx).next_gw(ctx)


def dr_disable(ctx):
    """Take the gateway in use out of routing until probing brings it back."""
    return _dr(ctx).disable_current(ctx)


def is_from_gw(ctx, gw_type=-1, flags=""):
    """True if the request comes from a gateway (of ``gw_type``; -1 any)."""
    return _dr(ctx).is_from_gw(ctx.source.host, ctx.source.port, int(gw_type), "n" in flags)


# -- route functions ----------------------------------------------------------------

def _enabled(name, where, env):
    """A route using drouting when the configuration leaves it off is an error at load."""
    cfg = env.config
    section = getattr(cfg, "drouting", None) if cfg is not None else None
    if section is not None and not section.enabled:
        raise RouteError(where, f"{name} needs drouting.enabled: true (the dr_* tables)")


def _flags(value, allowed, name, where):
    text = "" if value is None else str(value)
    bad = sorted(set(text) - allowed)
    if bad:
        raise RouteError(where, f"{name}: unknown flag(s) {''.join(bad)!r} "
                                f"(known: {''.join(sorted(allowed))})")
    return text


def _do_routing(args, where, env):
    """Route by prefix, time and priority to a gateway: ``do_routing: ["0"(, flags F/L/C)]``."""
    nargs("do_routing", args, where, 0, 2, usage="[group[, flags]]")
    _enabled("do_routing", where, env)
    group = None
    if args and args[0] is not None and str(args[0]).strip() != "":
        text = str(args[0]).strip()
        if isinstance(args[0], bool) or ":" in text:
            raise RouteError(where, f"do_routing: the group must be an integer (sipdisp has "
                                    f"no drouting partitions), got {args[0]!r}")
        try:
            group = int(text)
        except ValueError:
            raise RouteError(where, f"do_routing: the group must be an integer, "
                                    f"got {args[0]!r}") from None
    flags = _flags(args[1] if len(args) > 1 else "", DO_ROUTING_FLAGS, "do_routing", where)
    return lambda ctx: _dr(ctx).do_routing(ctx, group, flags)


def _use_next_gw(args, where, env):
    """Fail over to the next gateway of the rule (failure route); False when none is left."""
    nargs("use_next_gw", args, where, 0)
    _enabled("use_next_gw", where, env)
    return use_next_gw


def _dr_disable(args, where, env):
    """Take the gateway in use out of routing until probing brings it back."""
    nargs("dr_disable", args, where, 0)
    _enabled("dr_disable", where, env)
    return dr_disable


def _is_from_gw(args, where, env):
    """True if the source address is a gateway's: ``is_from_gw: [(type(, flags n))]``."""
    nargs("is_from_gw", args, where, 0, 2, usage="[type[, flags]]")
    _enabled("is_from_gw", where, env)
    gw_type = -1
    if args and args[0] is not None and str(args[0]).strip() != "":
        try:
            gw_type = int(str(args[0]).strip())
        except ValueError:
            raise RouteError(where, f"is_from_gw: the type must be an integer, "
                                    f"got {args[0]!r}") from None
    ignore_port = "n" in _flags(args[1] if len(args) > 1 else "", IS_FROM_GW_FLAGS,
                                "is_from_gw", where)

    def from_gw(ctx):
        return _dr(ctx).is_from_gw(ctx.source.host, ctx.source.port, gw_type, ignore_port)
    return from_gw


def register(table):
    """Declare the drouting route functions in ``table`` (a FunctionTable)."""
    table.add("do_routing", _do_routing, action=True, condition=True)
    table.add(("use_next_gw", "dr_next_gw"), _use_next_gw, action=True, condition=True)
    table.add("dr_disable", _dr_disable, action=True, condition=True)
    table.add("is_from_gw", _is_from_gw, action=False, condition=True)
