"""Built-in routes. ``seed_route`` is the Kamailio seed's ``request_route``
with the single next hop of the foundation (the dispatcher replaces DISPATCH).

Each step names the seed block it stands for, so the README's mapping can
point here.
"""


def make_seed_route(next_hop, branch_timeout=2.0, failover=None):
    """The seed's request_route: REQINIT (in the core), WITHINDLG, Record-Route,
    REGISTRAR (404 until a registrar exists), 484, and DISPATCH to ``next_hop``
    with a per-branch final-reply timer of ``branch_timeout`` seconds.

    ``failover`` is an optional failure route (RTF_DISPATCH), called as
    ``failover(ctx)`` when every branch failed.
    """
    fr_ms = int(branch_timeout * 1000)

    def request_route(ctx):
        # WITHINDLG: sequential requests follow the recorded route set.
        if ctx.has_totag:
            if ctx.loose_route():
                ctx.t_relay()
                return
            if ctx.is_method("ACK"):
                return  # ACK without a matching transaction: discard
            ctx.reply(404, "Not here")
            return
        # initial requests: preloaded Route must point at us (then it is removed)
        if not ctx.remove_preloaded_route():
            ctx.reply(403, "Preloaded Route Not Allowed")
            return
        if ctx.is_method("OPTIONS") and ctx.uri_is_myself() and ctx.ruri.user is None:
            ctx.reply(200, "OK", (("allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, "
                                   "REGISTER, MESSAGE, INFO, UPDATE, REFER, NOTIFY, SUBSCRIBE"),
                                  ("accept", "application/sdp")))
            return
        if ctx.is_method("INVITE|SUBSCRIBE"):
            ctx.record_route()
        if ctx.is_method("PUBLISH|SUBSCRIBE"):
            ctx.reply(404, "Not here")  # route(PRESENCE)
            return
        if ctx.is_method("REGISTER"):
            ctx.reply(404, "No registrar")  # route(REGISTRAR) until the registrar exists
            return
        if ctx.ruri.user is None:
            ctx.reply(484, "Address Incomplete")
            return
        if ctx.is_method("ACK"):
            return
        # DISPATCH
        ctx.set_dst(next_hop)
        ctx.t_set_fr(0, fr_ms)
        if failover is not None:
            ctx.t_on_failure(failover)
        if not ctx.t_relay():
            if not ctx.handled:
                ctx.reply(500, "Relay Failed")

    return request_route
