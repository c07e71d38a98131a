"""The load balancer's functions in the YAML route, declared in a routing
function table by :func:`register`.

    - if: {lb_is_destination: ["$si", "$sp", 3]}      # from a FreeSWITCH of group 3
      then: [...]
    - if: {not: {lb_start_or_next: [1, pstn]}}         # most free "pstn" in group 1
      then: [{send_reply: [503, "No capacity"]}, exit]
    # in a failure route:
    - if: lb_next
      then: [{route: RELAY}]

Python routes call the functions at the end of this module with the request
context first (``lb_start_or_next(ctx, 1, "pstn")``).
"""

from ..routing.plugin import RouteError, nargs, value_arg
from .resources import parse_lb_flags, parse_requested


def _lb(ctx):
    lb = ctx.core.modules.load_balancer
    if lb is None:
        raise RuntimeError("the load balancer is not running")
    return lb


# -- Python API -------------------------------------------------------------------

def lb_start(ctx, group, resources, flags=""):
    """Send the call to the destination of ``group`` with the most free ``resources``."""
    return _lb(ctx).start(ctx, int(group), parse_requested(resources), parse_lb_flags(flags))


def lb_start_or_next(ctx, group, resources, flags=""):
    """``lb_next`` if this request started load balancing already, else ``lb_start``."""
    return _lb(ctx).start_or_next(ctx, int(group), parse_requested(resources),
                                  parse_lb_flags(flags))


def lb_next(ctx):
    """Fail the call over to the best destination not tried yet."""
    return _lb(ctx).next(ctx)


def lb_disable_dst(ctx):
    """Take the destination in use out of selection until probing brings it back."""
    return _lb(ctx).disable_current(ctx)


def lb_is_destination(ctx, host, port=0, group=-1, active=False):
    """True if ``host:port`` (port 0: any) is a destination of ``group`` (-1: any)."""
    return _lb(ctx).is_destination(str(host), int(port or 0), int(group), bool(active))


# -- route functions ----------------------------------------------------------------

def _group(value, where):
    """A group number written as an int or its digits (a float or a bool is refused)."""
    if isinstance(value, bool):
        raise RouteError(where, f"the group must be an integer, got {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise RouteError(where, f"the group must be an integer, got {value!r}") from None


def _start_args(name, args, where):
    nargs(name, args, where, 2, 3, usage="group, resources[, flags]")
    group = _group(args[0], where)
    try:
        resources = parse_requested(args[1])
        flags = parse_lb_flags(args[2] if len(args) > 2 and args[2] is not None else "")
    except ValueError as exc:
        raise RouteError(where, str(exc)) from None
    return group, resources, flags


def _lb_start(args, where, env):
    """Send to the destination with the most free capacity: ``lb_start: [group, "pstn"(, flags r/n/s)]``."""
    group, resources, flags = _start_args("lb_start", args, where)
    return lambda ctx: _lb(ctx).start(ctx, group, resources, flags)


def _lb_start_or_next(args, where, env):
    """lb_next if load balancing started for this request, else lb_start: ``[group, resources(, flags)]``."""
    group, resources, flags = _start_args("lb_start_or_next", args, where)
    return lambda ctx: _lb(ctx).start_or_next(ctx, group, resources, flags)


def _lb_next(args, where, env):
    """Fail over to the best destination not tried yet; False when none is left."""
    nargs("lb_next", args, where, 0)
    return lb_next


def _lb_disable_dst(args, where, env):
    """Take the destination in use out of selection until probing brings it back."""
    nargs("lb_disable_dst", args, where, 0)
    return lb_disable_dst


def _lb_is_destination(args, where, env):
    """True if the address is a destination: ``lb_is_destination: ["$si", "$sp"(, group(, active))]``."""
    nargs("lb_is_destination", args, where, 2, 4, usage="ip, port[, group[, active]]")
    host = value_arg(args[0], where, env)
    port = value_arg(args[1], where, env)
    group = _group(args[2], where) if len(args) > 2 and args[2] is not None else -1
    active = bool(int(args[3])) if len(args) > 3 else False

    def is_destination(ctx):
        h, p = host(ctx), port(ctx)
        if h is None:
            return False
        try:
            p = int(p or 0)
        except (TypeError, ValueError):
            return False
        return _lb(ctx).is_destination(str(h), p, group, active)
    return is_destination


def register(table):
    """Declare the load balancer's route functions in ``table`` (a FunctionTable)."""
    table.add("lb_start", _lb_start, action=True, condition=True)
    table.add("lb_start_or_next", _lb_start_or_next, action=True, condition=True)
    table.add("lb_next", _lb_next, action=True, condition=True)
    table.add("lb_disable_dst", _lb_disable_dst, action=True, condition=True)
    table.add("lb_is_destination", _lb_is_destination, action=False, condition=True)
