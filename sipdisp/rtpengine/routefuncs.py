"""rtpengine's functions in the YAML route (Kamailio's rtpengine module and
the rtpproxy names of the Kamailio and OpenSIPS seeds), and nathelper's
``fix_nated_sdp``, declared in a routing function table by :func:`register`.

    request_route:
      - if: {has_body: application/sdp}
        then: [{rtpengine_manage: "replace-origin replace-session-connection"}]
      - {t_on_reply: MEDIA}
      ...
    onreply_routes:
      MEDIA:
        - if: {has_body: application/sdp}
          then: [{rtpengine_manage: "replace-origin replace-session-connection"}]

The flags string is Kamailio's (see :mod:`sipdisp.rtpengine.flags`); a
flags string with pseudo-variables (``"direction=$var(dir)"``) is parsed
when the function runs, any other when the route compiles. Each function
is false when rtpengine could not do it (every instance down, an error
reply): the route decides what then.
"""

from ..logs import Logger, RepeatLimiter
from ..routing.plugin import RouteError, int_arg, nargs, str_arg, template_arg
from . import sdp as sdplib
from .flags import FlagError, parse_flags, rtpproxy_flags


_unset_log = RepeatLimiter(Logger(namespace="sipdisp.rtpengine"), limit=1, interval=60.0)


def _call(ctx, method, flags):
    engine = ctx.core.modules.rtpengine
    if engine is None:
        _unset_log.warn("rtpengine-unset", "rtpengine.sockets is not set: {method} is false",
                        method=method)
        return False
    return getattr(engine, method)(ctx, flags)


def _flags_getter(name, args, where, env, translate=None):
    """``ctx -> Flags`` of the first argument (constant: parsed once now)."""
    if not args or args[0] in ("", None):
        text = ""
    else:
        text = str_arg(args[0], where, f"{name} flags")
    if translate is not None:
        try:
            text = translate(text)
        except FlagError as exc:
            raise RouteError(where, f"{name}: {exc}") from None
    if "$" not in text:
        try:
            flags = parse_flags(text)
        except FlagError as exc:
            raise RouteError(where, f"{name}: {exc}") from None
        return lambda ctx: flags
    fmt = template_arg(text, where, env)

    def flags_of(ctx):
        try:
            return parse_flags(fmt(ctx))
        except FlagError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return flags_of


def _command(name, method, max_args=1, translate=None):
    def compile_(args, where, env):
        nargs(name, args, where, 0, max_args, usage="[flags]")
        flags = _flags_getter(name, args, where, env, translate)
        return lambda ctx: _call(ctx, method, flags(ctx))
    compile_.__doc__ = _DOCS[name]
    return compile_


_DOCS = {
    "rtpengine_offer": "Send the message's SDP to rtpengine as an offer and put its answer in the body: ``[flags]`` (Kamailio's, e.g. ``\"ICE=remove RTP/AVP replace-origin\"``).",
    "rtpengine_answer": "Send the message's SDP to rtpengine as an answer and put the rewritten SDP in the body: ``[flags]``.",
    "rtpengine_delete": "End the call's rtpengine session (sent, not waited for): ``[flags]``.",
    "rtpengine_manage": "Offer, answer or delete as the message asks (Kamailio's rtpengine_manage): ``[flags]``.",
    "rtpengine_query": "Ask rtpengine about the call's session (the reply dict is kept in ctx.vars['rtpengine_query']): ``[flags]``.",
    "rtpproxy_offer": "rtpproxy's name for rtpengine_offer, with its one-letter flags (``co``...): ``[flags[, ip]]``.",
    "rtpproxy_answer": "rtpproxy's name for rtpengine_answer, with its one-letter flags: ``[flags[, ip]]``.",
    "rtpproxy_manage": "rtpproxy's name for rtpengine_manage, with its one-letter flags: ``[flags[, ip]]``.",
    "rtpproxy_destroy": "rtpproxy's name for rtpengine_delete: ``[flags]``.",
    "unforce_rtp_proxy": "rtpproxy's old name for rtpengine_delete.",
}


def _set_rtpengine_set(args, where, env):
    """Choose the rtpengine set: ``0`` (one set exists: rtpengine.sockets)."""
    nargs("set_rtpengine_set", args, where, 1, 2, usage="set[, set2]")
    for arg in args:
        if int_arg(arg, where, "set_rtpengine_set set") != 0:
            raise RouteError(where, "set_rtpengine_set: only set 0 (rtpengine.sockets) exists")
    return lambda ctx: True


def fix_nated_sdp(ctx, flags, ip=None):
    """nathelper's ``fix_nated_sdp``: the SDP changed as ``flags`` says
    (1 a=direction:active, 2 c= to the source address or ``ip`` with
    a=oldmediaip, 4 a=nortpproxy:yes, 8 o= too); False without an SDP."""
    msg = ctx.request
    span = sdplib.sdp_span(msg)
    if span is None:
        return False
    sdp = msg.body[span[0]:span[1]]
    new = sdplib.fix_nated_sdp(sdp, flags, ip or ctx.source.host)
    if new != sdp:
        sdplib.set_sdp(msg, new, span)
    return True


def _fix_nated_sdp(args, where, env):
    """Rewrite the SDP for a NATed client: ``flags[, ip]``; 1 a=direction:active, 2 c= to the source address (a=oldmediaip kept), 4 a=nortpproxy:yes, 8 o= too."""
    nargs("fix_nated_sdp", args, where, 1, 2, usage="flags[, ip]")
    flags = int_arg(args[0], where, "fix_nated_sdp flags")
    if not 0 <= flags <= 15:
        raise RouteError(where, f"fix_nated_sdp: flags are 1, 2, 4 and 8, got {flags}")
    if len(args) < 2 or args[1] in ("", None):
        return lambda ctx: fix_nated_sdp(ctx, flags)
    ip = template_arg(str(args[1]), where, env)
    return lambda ctx: fix_nated_sdp(ctx, flags, ip(ctx))


def _has_sdp(args, where, env):
    """True when the message body carries an SDP (plain or a multipart part)."""
    nargs("has_sdp", args, where, 0, 0)
    return lambda ctx: sdplib.has_sdp(ctx.request)


def _has_body(args, where, env):
    """True when the message has a body (of that type: ``[mime]``; ``application/sdp`` also finds a multipart SDP part)."""
    nargs("has_body", args, where, 0, 1, usage="[mime type]")
    mime = str_arg(args[0], where, "has_body type").strip().lower() if args and args[0] else ""
    if mime == "application/sdp":
        return lambda ctx: sdplib.has_sdp(ctx.request)

    def check(ctx):
        msg = ctx.request
        if not msg.body:
            return False
        if not mime:
            return True
        ctype = (msg.get("content-type") or "").split(";", 1)[0].strip().lower()
        return ctype == mime
    return check


def register(table):
    """Declare the rtpengine functions, their rtpproxy names and fix_nated_sdp in ``table``."""
    for name, method in (("rtpengine_offer", "offer"), ("rtpengine_answer", "answer"),
                         ("rtpengine_delete", "delete"), ("rtpengine_manage", "manage"),
                         ("rtpengine_query", "query")):
        table.add(name, _command(name, method), action=True, condition=True)
    for name, method in (("rtpproxy_offer", "offer"), ("rtpproxy_answer", "answer"),
                         ("rtpproxy_manage", "manage")):
        table.add(name, _command(name, method, 2, rtpproxy_flags), action=True, condition=True)
    table.add("rtpproxy_destroy", _command("rtpproxy_destroy", "delete", 1, rtpproxy_flags),
              action=True, condition=True)
    table.add("unforce_rtp_proxy", _command("unforce_rtp_proxy", "delete", 0),
              action=True, condition=True)
    table.add("set_rtpengine_set", _set_rtpengine_set, action=True, condition=True)
    table.add("fix_nated_sdp", _fix_nated_sdp, action=True, condition=True)
    table.add("has_sdp", _has_sdp, action=False, condition=True)
    table.add("has_body", _has_body, action=False, condition=True)
