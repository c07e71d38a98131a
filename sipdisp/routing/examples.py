"""An example of a Python route, for
``routing.module: "sipdisp.routing.examples:request_route"`` (docs/routing.md).

A Python route need not repeat the built-in one: its YAML blocks are compiled
even when a module is set, so this route runs them by name and writes in
Python only the choice of the node.
"""

from .api import ds_select_dst, failure_route, route, t_relay


def request_route(ctx):
    """The built-in REQINIT, WITHINDLG and REGISTRAR blocks, then a node of set 0
    round robin, failing over through the built-in RTF_DISPATCH."""
    for block in ("REQINIT", "WITHINDLG", "REGISTRAR"):
        if route(ctx, block):  # the block ended the request: answered or relayed
            return
    ctx.request.remove("route")  # an initial request follows no preloaded Route
    if ctx.is_method("INVITE"):
        ctx.record_route()
    if not ds_select_dst(ctx, 0, 4):
        ctx.reply(404, "No destination")
        return
    ctx.t_set_fr(0, 2000)
    ctx.t_on_failure(failure_route(ctx, "RTF_DISPATCH"))
    if not t_relay(ctx):
        ctx.reply(500, "Server Internal Error")
