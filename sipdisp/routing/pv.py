"""Kamailio pseudo-variables (``$ru``, ``$rU``, ``$du``, ``$ci``, ``$var(x)`` ...)
compiled to getter closures, and ``xlog`` templates compiled to formatters.

A getter takes the RequestContext and returns a string, an int or None
(Kamailio's ``$null``). Unknown names are a :class:`RouteError` at compile
time, never a surprise at run time.
"""

import re

from ..config.model import ConfigError
from ..sip.address import parse_address
from ..sip.errors import SipParseError
from ..sip.headers import format_params, split_commas
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


def _first_contact(ctx):
    """The first Contact of the current message (request or reply), parsed, or None."""
    value = ctx.request.get("contact")
    if not value or value.strip() == "*":
        return None
    try:
        return parse_address(split_commas(value)[0], "Contact")
    except SipParseError:
        return None


def _contact(ctx):
    """``$ct``: the Contact header value of the current message."""
    return ctx.request.get("contact")


#: ``$ct.fields(name)``: the parts of the first Contact
_CONTACT_FIELDS = ("uri", "name", "expires", "q", "params")


def _contact_field(field, where):
    if field not in _CONTACT_FIELDS:
        raise RouteError(where, f"$ct.fields({field}): known fields are "
                                f"{', '.join(_CONTACT_FIELDS)}")

    def get(ctx):
        address = _first_contact(ctx)
        if address is None:
            return None
        if field == "uri":
            return str(address.uri)
        if field == "name":
            return address.display.strip('"') if address.display else None
        if field == "params":
            return format_params(address.params)[1:] or None
        return address.param(field)
    return get


_AUTH_USERNAME = re.compile(r'(?i)(?:^|[\s,])username\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_AUTH_REALM = re.compile(r'(?i)(?:^|[\s,])realm\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def _credentials(ctx):
    """The Authorization (REGISTER) or Proxy-Authorization value, whichever the
    request carries (Kamailio's ``$au`` looks at both, in that order for REGISTER)."""
    req = ctx.request
    if not req.is_request:
        return None
    first, second = ("authorization", "proxy-authorization")
    if req.method != "REGISTER":
        first, second = second, first
    return req.get(first) or req.get(second)


def _auth_param(regex):
    def get(ctx):
        value = _credentials(ctx)
        if not value:
            return None
        m = regex.search(value)
        if m is None:
            return None
        return m.group(1) if m.group(1) is not None else m.group(2)
    return get


_auth_username = _auth_param(_AUTH_USERNAME)


def _auth_user(ctx):
    """``$aU``: the user part of the credentials' username (before ``@``)."""
    name = _auth_username(ctx)
    return None if name is None else name.partition("@")[0]


def _auth_domain(ctx):
    """``$ad``: the domain of the credentials' username (after ``@``), else the realm."""
    name = _auth_username(ctx)
    if name is not None and "@" in name:
        return name.partition("@")[2]
    return _auth_param(_AUTH_REALM)(ctx)


def _status(ctx):
    """``$rs`` outside a reply route: the failed branch's final status (failure routes)."""
    branch = ctx.failed_branch
    if branch is not None and branch.final_status is not None:
        return branch.final_status
    return _reply_code(ctx)


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
    "rs": _status,
    "rr": _reply_reason,
    "ct": _contact,
    "au": _auth_username,
    "aU": _auth_user,
    "ad": _auth_domain,
    "ar": _auth_param(_AUTH_REALM),
    "null": lambda ctx: None,
}

#: what the request's pseudo-variables read in a reply route, where the
#: current message is the reply (as Kamailio: $ru, $du ... are null there,
#: $rm is the CSeq method, $rs and $rr the reply's status and reason)
REPLY_VARIABLES = {
    "ru": lambda ctx: None,
    "rU": lambda ctx: None,
    "rd": lambda ctx: None,
    "rp": lambda ctx: None,
    "du": lambda ctx: None,
    "rm": lambda ctx: ctx.request.cseq_method,
    "rs": lambda ctx: ctx.request.status,
    "rr": lambda ctx: ctx.request.reason,
    "T_reply_code": lambda ctx: ctx.request.status,
    "T_reply_reason": lambda ctx: ctx.request.reason,
    "au": lambda ctx: None,
    "aU": lambda ctx: None,
    "ad": lambda ctx: None,
    "ar": lambda ctx: None,
}

_DSDST_FIELDS = {"uri", "attrs", "grp", "dstid"}

PV_RE = re.compile(r"\$(?:(\w+(?:\.\w+)?)\(([^)]*)\)|(\w+))")


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
            raise RouteError(where, f"unknown pseudo-variable ${simple} (known: "
                                    f"{', '.join('$' + k for k in known if '(' not in k)})") from None
    if func == "var":
        key = arg.strip()
        return lambda ctx: ctx.vars.get(key)
    if func == "avp":
        key = arg.strip()

        def get_avp(ctx):
            avps = ctx.avps
            values = avps.get(key) if avps is not None else None
            return values[-1] if values else None
        return get_avp
    if func == "ct.fields":
        return _contact_field(arg.strip(), where)
    if func == "hdr":
        key = arg.strip().lower()
        return lambda ctx: ctx.request.get(key)
    if func == "xavp":
        return _xavp_getter(arg, where)
    # a subsystem's $name(...) (FunctionTable.add_pv_function: "sht()" -> factory)
    factory = variables.get(func + "()") if variables is not None else None
    if factory is not None:
        return factory(arg, where, variables)
    raise RouteError(where, f"unknown pseudo-variable ${func}(...) "
                            "(known: $var(), $avp(), $hdr(), $ct.fields(), $xavp(_dsdst_=>...))")


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
def compile_setter(text, where, variables=None):
    """A setter ``(ctx, value)`` for ``$du``, ``$ru``, ``$rU``, ``$rd``, ``$var(x)``,
    ``$avp(x)``, and a subsystem's ``$name(...)`` that has one (``variables``)."""
    m = PV_RE.fullmatch(text.strip())
    if m is None:
        raise RouteError(where, f"{text!r} is not a pseudo-variable")
    func, arg, simple = m.groups()
    factory = variables.get(func + "()=") if func and variables is not None else None
    if factory is not None:
        return factory(arg, where, variables)
    if func == "var":
        key = arg.strip()

        def set_var(ctx, value):
            ctx.vars[key] = value
        return set_var
    if func == "avp":
        key = arg.strip()

        def set_avp(ctx, value):
            # Kamailio: an assignment adds a value on top of the AVP's list,
            # $null removes the newest one
            avps = ctx.avps
            if avps is None:
                avps = ctx.avps = {}
            values = avps.get(key)
            if value is None:
                if values:
                    values.pop()
            elif values is None:
                avps[key] = [value]
            else:
                values.append(value)
        return set_avp
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
