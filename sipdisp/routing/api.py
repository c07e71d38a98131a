"""Kamailio's route functions for Python routes (``routing.module``): the
same names as in the YAML route, taking the request context first.

    from sipdisp.routing.api import ds_select_dst, t_relay

    def request_route(ctx):
        if not ds_select_dst(ctx, 0, 4):
            ctx.reply(404, "No destination")
            return
        t_relay(ctx)

Everything else is on the context itself: ``ctx.reply``, ``ctx.record_route``,
``ctx.loose_route``, ``ctx.t_set_fr``, ``ctx.t_on_failure(function)``,
``ctx.t_on_reply(function)``, ``ctx.t_on_branch(function)``,
``ctx.t_is_canceled``, ``ctx.t_branch_timeout``, ``ctx.t_branch_replied``.
"""

from .builtins import relay_step, status_check, status_regex
from .plugin import EXIT


def _dispatcher(ctx):
    return ctx.core.modules.require("dispatcher")


def ds_select_dst(ctx, setid, alg, limit=0):
    """Pick a destination of ``setid`` with algorithm ``alg`` and set ``$du``."""
    return _dispatcher(ctx).select_dst(ctx, setid, alg, limit)


def ds_select_domain(ctx, setid, alg, limit=0):
    """Pick a destination and rewrite the R-URI host:port with it."""
    return _dispatcher(ctx).select_domain(ctx, setid, alg, limit)


def ds_next_dst(ctx):
    """Use the next destination of the selected order; False when none is left."""
    return _dispatcher(ctx).next_dst(ctx)


def ds_mark_dst(ctx, state="i"):
    """Mark the destination in use (``"i"``, ``"ip"``, ``"a"``, ``"t"``, ``"d"``)."""
    return _dispatcher(ctx).mark_dst(ctx, state)


def ds_is_from_list(ctx, setid=-1, mode=None):
    """True if the request comes from a destination of ``setid`` (-1: any set)."""
    return _dispatcher(ctx).is_from_list(ctx, setid, mode)


def t_relay(ctx):
    """Forward statefully; False on failure (the dispatcher's call load is released then)."""
    return relay_step(ctx.core.modules.dispatcher)(ctx)


#: pattern -> the compiled t_check_status condition, so each pattern compiles once
_status_checks = {}


def t_check_status(ctx, pattern):
    """In a failure route: does the failed branch's status match ``pattern``
    (``"500"``, ``"5[0-9][0-9]"``, ``"486|408"`` or a list of codes)?"""
    key = tuple(pattern) if isinstance(pattern, list) else pattern
    check = _status_checks.get(key)
    if check is None:
        check = _status_checks[key] = status_check(status_regex(pattern, "t_check_status"))
    return check(ctx)


def route(ctx, name):
    """Run the YAML route ``name``; True if it ended with ``exit``."""
    return ctx.core.modules.routing.route(name)(ctx) is EXIT


def failure_route(ctx, name):
    """The YAML failure route ``name``, for ``ctx.t_on_failure(...)``."""
    return ctx.core.modules.routing.failure_route(name)


def reply_route(ctx, name):
    """The YAML reply route ``name``, for ``ctx.t_on_reply(...)``."""
    return ctx.core.modules.routing.reply_route(name)


def branch_route(ctx, name):
    """The YAML branch route ``name``, for ``ctx.t_on_branch(...)``."""
    return ctx.core.modules.routing.branch_route(name)
