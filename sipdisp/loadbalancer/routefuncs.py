"""The load balancer's functions in the YAML route, registered in the routing
function table (imported by ``sipdisp.routing``).

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

from ..routing.compiler import function
from ..routing.pv import RouteError, compile_value
from .resources import parse_lb_flags, parse_requested


def _lb(ctx):
    lb = ctx.core.modules.get("load_balancer")
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
    if isinstance(value, bool):
        raise RouteError(where, f"the group must be an integer, got {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise RouteError(where, f"the group must be an integer, got {value!r}") from None


def _start_args(name, args, where):
    if not 2 <= len(args) <= 3:
        raise RouteError(where, f"{name} takes 2 or 3 argument(s) (group, resources[, flags]), "
                                f"got {len(args)}")
    group = _group(args[0], where)
    try:
        resources = parse_requested(args[1])
        flags = parse_lb_flags(args[2] if len(args) > 2 and args[2] is not None else "")
    except ValueError as exc:
        raise RouteError(where, str(exc)) from None
    return group, resources, flags


@function("lb_start", action=True, condition=True)
def _lb_start(args, where, env):
    """Send to the destination with the most free capacity: ``lb_start: [group, "pstn"(, flags r/n/s)]``."""
    group, resources, flags = _start_args("lb_start", args, where)
    return lambda ctx: _lb(ctx).start(ctx, group, resources, flags)


@function("lb_start_or_next", action=True, condition=True)
def _lb_start_or_next(args, where, env):
    """lb_next if load balancing started for this request, else lb_start: ``[group, resources(, flags)]``."""
    group, resources, flags = _start_args("lb_start_or_next", args, where)
    return lambda ctx: _lb(ctx).start_or_next(ctx, group, resources, flags)


@function("lb_next", action=True, condition=True)
def _lb_next(args, where, env):
    """Fail over to the best destination not tried yet; False when none is left."""
    if args:
        raise RouteError(where, f"lb_next takes no argument, got {len(args)}")
    return lb_next


@function("lb_disable_dst", action=True, condition=True)
def _lb_disable_dst(args, where, env):
    """Take the destination in use out of selection until probing brings it back."""
    if args:
        raise RouteError(where, f"lb_disable_dst takes no argument, got {len(args)}")
    return lb_disable_dst


@function("lb_is_destination", action=False, condition=True)
def _lb_is_destination(args, where, env):
    """True if the address is a destination: ``lb_is_destination: ["$si", "$sp"(, group(, active))]``."""
    if not 2 <= len(args) <= 4:
        raise RouteError(where, f"lb_is_destination takes 2 to 4 argument(s) (ip, port"
                                f"[, group[, active]]), got {len(args)}")
    host = compile_value(args[0], where)
    port = compile_value(args[1], where)
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
