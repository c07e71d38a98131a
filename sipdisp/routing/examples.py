"""The Kamailio seed's request_route as a Python route: an example for
``routing.module: "sipdisp.routing.examples:request_route"``, doing what the
built-in YAML route does (without the accounting flags)."""

from .api import ds_mark_dst, ds_next_dst, ds_select_dst, t_check_status, t_relay


def request_route(ctx):
    """REQINIT and CANCEL are done by the core; WITHINDLG, RR, REGISTRAR, 484, DISPATCH."""
    if ctx.has_totag:  # WITHINDLG
        if ctx.loose_route():
            relay(ctx)
        elif not ctx.is_method("ACK"):
            ctx.reply(404, "Not here")
        return
    ctx.request.remove("route")
    if ctx.is_method("INVITE|SUBSCRIBE"):
        ctx.record_route()
    if ctx.is_method("PUBLISH|SUBSCRIBE"):
        ctx.reply(404, "Not here")
        return
    if ctx.is_method("REGISTER"):
        ctx.reply(404, "No registrar")
        return
    if ctx.ruri.user is None:
        ctx.reply(484, "Address Incomplete")
        return
    dispatch(ctx)


def dispatch(ctx):
    """route[DISPATCH]: round robin over set 0, 2 s per branch."""
    if not ds_select_dst(ctx, 0, 4):
        ctx.reply(404, "No destination")
        return
    ctx.t_set_fr(0, 2000)
    ctx.t_on_failure(rtf_dispatch)
    relay(ctx)


def rtf_dispatch(ctx):
    """failure_route[RTF_DISPATCH]: on 500 or a silent timeout, mark and try the next."""
    if ctx.t_is_canceled():
        return
    if t_check_status(ctx, "500") or (ctx.t_branch_timeout() and not ctx.t_branch_replied()):
        ds_mark_dst(ctx, "ip")
        if ds_next_dst(ctx):
            ctx.t_set_fr(0, 2000)
            ctx.t_on_failure(rtf_dispatch)
            relay(ctx)


def relay(ctx):
    """route[RELAY]."""
    if not t_relay(ctx):
        ctx.reply(500, "Server Internal Error")
