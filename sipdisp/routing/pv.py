"""Kamailio pseudo-variables (``$ru``, ``$rU``, ``$du``, ``$ci``, ``$var(x)`` ...)
compiled to getter closures, and ``xlog`` templates compiled to formatters.

A getter takes the RequestContext and returns a string, an int or None
(Kamailio's ``$null``). Unknown names are a :class:`RouteError` at compile
time, never a surprise at run time.
"""

import re

from ..config.model import ConfigError
from ..sip.uri import parse_uri


class RouteError(ConfigError):
    """A mistake in the routing configuration; one line, ``where`` is the dotted key path."""


def _uri_of(header, part):
    def get(ctx):
        address = ctx.request.address(header)
        if address is None:
            return None
        uri = address.uri
        if part == "uri":
            return str(uri)
        if part == "user":
            return uri.user if uri.is_sip else None
        return uri.host if uri.is_sip else None
    return get


def _ruri(ctx):
    return str(ctx.request.uri)


def _ruri_user(ctx):
    return ctx.request.uri.user


def _ruri_host(ctx):
    return ctx.request.uri.host


def _ruri_port(ctx):
    uri = ctx.request.uri
    return uri.port if uri.port is not None else uri.host_port[1]


def _du(ctx):
    return None if ctx.dst_uri is None else str(ctx.dst_uri)


def _reply_code(ctx):
    txn = ctx.proxy_txn
    reply = getattr(txn, "last_reply", None) if txn is not None else None
    return None if reply is None else reply.status


def _reply_reason(ctx):
    txn = ctx.proxy_txn
    reply = getattr(txn, "last_reply", None) if txn is not None else None
    return None if reply is None else reply.reason


#: the plain pseudo-variables: name -> getter(ctx)
SIMPLE = {
    "ru": _ruri,
    "rU": _ruri_user,
    "rd": _ruri_host,
    "rp": _ruri_port,
    "rm": lambda ctx: ctx.request.method,
    "du": _du,
    "ci": lambda ctx: ctx.request.call_id,
    "cs": lambda ctx: ctx.request.cseq,
    "si": lambda ctx: ctx.source.host,
    "sp": lambda ctx: ctx.source.port,
    "pr": lambda ctx: ctx.source.proto,
    "proto": lambda ctx: ctx.source.proto,
    "fu": _uri_of("from", "uri"),
    "fU": _uri_of("from", "user"),
    "fd": _uri_of("from", "host"),
    "tu": _uri_of("to", "uri"),
    "tU": _uri_of("to", "user"),
    "td": _uri_of("to", "host"),
    "ua": lambda ctx: ctx.request.get("user-agent"),
    "T_reply_code": _reply_code,
    "T_reply_reason": _reply_reason,
    "null": lambda ctx: None,
}

_DSDST_FIELDS = {"uri", "attrs", "grp", "dstid"}

PV_RE = re.compile(r"\$(?:(\w+)\(([^)]*)\)|(\w+))")


def _xavp_getter(arg, where):
    name, sep, field = arg.partition("=>")
    if name.strip() != "_dsdst_" or not sep or field.strip() not in _DSDST_FIELDS:
        raise RouteError(where, f"$xavp({arg}): only $xavp(_dsdst_=>uri|attrs|grp|dstid) "
                                "is known")
    field = field.strip()

    def get(ctx):
        order = ctx.vars.get("_dsdst_")
        if not order:
            return None
        dest = order[ctx.vars.get("_dsidx_", 0)]
        if field == "uri":
            return dest.uri
        if field == "attrs":
            return dest.attrs_text
        if field == "grp":
            return dest.setid
        return dest.duid
    return get


def compile_pv(text, where, variables=None):
    """A getter for one pseudo-variable written ``$name`` or ``$name(arg)``;
    ``variables`` (name -> getter) defaults to the core's :data:`SIMPLE`."""
    m = PV_RE.fullmatch(text.strip())
    if m is None:
        raise RouteError(where, f"{text!r} is not a pseudo-variable")
    func, arg, simple = m.groups()
    if simple:
        known = SIMPLE if variables is None else variables
        try:
            return known[simple]
        except KeyError:
            raise RouteError(where, f"unknown pseudo-variable ${simple} "
                                    f"(known: {', '.join('$' + k for k in known)})") from None
    if func in ("var", "avp"):
        key = arg.strip()
        return lambda ctx: ctx.vars.get(key)
    if func == "hdr":
        key = arg.strip().lower()
        return lambda ctx: ctx.request.get(key)
    if func == "xavp":
        return _xavp_getter(arg, where)
    raise RouteError(where, f"unknown pseudo-variable ${func}(...) "
                            "(known: $var(), $avp(), $hdr(), $xavp(_dsdst_=>...))")


def compile_value(value, where, variables=None):
    """A getter for a value: a pseudo-variable, a template with some, or a constant."""
    if isinstance(value, str) and "$" in value:
        if PV_RE.fullmatch(value.strip()):
            return compile_pv(value, where, variables)
        return compile_template(value, where, variables)
    return lambda ctx: value


def compile_template(text, where, variables=None):
    """``"going to <$ru> via <$du>"`` -> a function ``ctx -> str`` (None shows as ``<null>``)."""
    parts = []
    pos = 0
    for m in PV_RE.finditer(text):
        if m.start() > pos:
            parts.append(text[pos:m.start()])
        parts.append(compile_pv(m.group(0), where, variables))
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    if all(isinstance(p, str) for p in parts):
        constant = "".join(parts)
        return lambda ctx: constant

    def render(ctx):
        out = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
            else:
                value = part(ctx)
                out.append("<null>" if value is None else str(value))
        return "".join(out)
    return render


#: pseudo-variables a route may assign with ``set``: name -> setter(ctx, value)
def compile_setter(text, where):
    """A setter ``(ctx, value)`` for ``$du``, ``$ru``, ``$rU``, ``$rd``, ``$var(x)``, ``$avp(x)``."""
    m = PV_RE.fullmatch(text.strip())
    if m is None:
        raise RouteError(where, f"{text!r} is not a pseudo-variable")
    func, arg, simple = m.groups()
    if func in ("var", "avp"):
        key = arg.strip()

        def set_var(ctx, value):
            ctx.vars[key] = value
        return set_var
    if simple == "du":
        def set_du(ctx, value):
            if value is None:
                ctx.dst_uri = None
            else:
                ctx.set_dst(value)
        return set_du
    if simple == "ru":
        return lambda ctx, value: ctx.set_ruri(value)
    if simple in ("rU", "rd"):
        def set_part(ctx, value):
            uri = ctx.request.uri.copy()
            if simple == "rU":
                uri.user = value
            else:
                uri.host = value
            ctx.set_ruri(parse_uri(uri._format()))
        return set_part
    raise RouteError(where, f"{text} cannot be assigned (only $du, $ru, $rU, $rd, "
                            "$var(x) and $avp(x) can)")
