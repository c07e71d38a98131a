"""The registrar's, auth's and nathelper's functions in the YAML route,
declared in a routing function table by :func:`register`.

    - if: {not: {auth_check: ["", subscriber, 1]}}
      then: [{auth_challenge: ["", 1]}, exit]
    - if: {lookup: location}
      then: [{route: RELAY}]

Arguments are checked when the route compiles; a realm may be a
pseudo-variable (``"$fd"``). Each function finds its module in
``ctx.core.modules`` when it runs.
"""

from ..routing.plugin import RouteError, nargs, value_arg
from ..sip.headers import header_key
from . import api
from .registrar import parse_save_flags


def _table(args, where, name, expected):
    if args and str(args[0]) != expected:
        raise RouteError(where, f"{name}: only the {expected!r} table exists, got {args[0]!r}")


def _flags(value, where, name):
    if isinstance(value, bool):
        raise RouteError(where, f"{name}: flags must be a number, got {value!r}")
    try:
        return int(str(value), 0)
    except ValueError:
        raise RouteError(where, f"{name}: flags must be a number, got {value!r}") from None


def _realm(args, where, env):
    if not args or args[0] in ("", None):
        return lambda ctx: ""
    getter = value_arg(str(args[0]), where, env)
    return lambda ctx: str(getter(ctx) or "")


def _save(args, where, env):
    """Store the REGISTER's bindings and answer 200 listing them: ``[location(, flags)]``."""
    nargs("save", args, where, 0, 2)
    _table(args, where, "save", "location")
    try:
        flags = parse_save_flags(args[1]) if len(args) > 1 else 0
    except ValueError as exc:
        raise RouteError(where, str(exc)) from None
    return lambda ctx: api.save(ctx, "location", flags)


def _lookup(args, where, env):
    """Point the request at the R-URI user's contacts, forking to all: ``[location(, uri or flags m/b)]``."""
    nargs("lookup", args, where, 0, 2)
    _table(args, where, "lookup", "location")
    uri, flags = None, ""
    if len(args) > 1:
        second = str(args[1])
        if second.startswith(("sip:", "sips:", "$")):
            uri = value_arg(second, where, env)
        elif set(second) <= {"m", "b"}:
            flags = second  # OpenSIPS: m method filtering, b no branches
        else:
            raise RouteError(where, f"lookup: {second!r} is neither a URI nor flags (m, b)")
    if uri is None:
        return lambda ctx: api.lookup(ctx, "location", None, flags)
    return lambda ctx: api.lookup(ctx, "location", uri(ctx), flags)


def _registered(args, where, env):
    """True if the R-URI (or the given URI) has a live binding: ``[location(, uri)]``."""
    nargs("registered", args, where, 0, 2)
    _table(args, where, "registered", "location")
    if len(args) > 1:
        uri = value_arg(str(args[1]), where, env)
        return lambda ctx: api.registered(ctx, "location", uri(ctx))
    return lambda ctx: api.registered(ctx)


def _authorize(name, call):
    def factory(args, where, env):
        nargs(name, args, where, 0, 2)
        if len(args) > 1:
            _table(args[1:], where, name, "subscriber")
        realm = _realm(args, where, env)
        return lambda ctx: call(ctx, realm(ctx))
    factory.__doc__ = {
        "www_authorize": "Check Authorization against subscriber: ``[realm, subscriber]`` ('' = To domain).",
        "proxy_authorize": "Check Proxy-Authorization against subscriber: ``[realm, subscriber]``.",
    }[name]
    return factory


def _auth_check(args, where, env):
    """www_authorize for REGISTER, else proxy_authorize: ``[realm, subscriber, flags]`` (1: check identity)."""
    nargs("auth_check", args, where, 0, 3)
    if len(args) > 1:
        _table(args[1:], where, "auth_check", "subscriber")
    flags = _flags(args[2], where, "auth_check") if len(args) > 2 else 0
    realm = _realm(args, where, env)
    return lambda ctx: api.auth_check(ctx, realm(ctx), "subscriber", flags)


def _challenge(name, call):
    def factory(args, where, env):
        nargs(name, args, where, 0, 2)
        flags = _flags(args[1], where, name) if len(args) > 1 else 0
        realm = _realm(args, where, env)
        return lambda ctx: call(ctx, realm(ctx), flags)
    factory.__doc__ = {
        "www_challenge": "Answer 401 with a digest challenge: ``[realm, flags]`` (flags 1: qop=auth).",
        "proxy_challenge": "Answer 407 with a digest challenge: ``[realm, flags]``.",
        "auth_challenge": "401 for REGISTER, else 407: ``[realm, flags]``.",
    }[name]
    return factory


def _simple(name, call, max_args=0):
    """A factory for a function that takes no argument worth compiling:
    it checks the count and returns ``call`` itself as the closure."""
    def factory(args, where, env):
        nargs(name, args, where, 0, max_args)
        return call
    return factory


#: (name, Python API function, action, condition, most arguments, doc line)
_SIMPLE = (
    ("consume_credentials", api.consume_credentials, True, True, 0,
     "Remove the credentials that authorized the request (not forwarded)."),
    ("db_check_to", api.db_check_to, False, True, 0,
     "True if the authenticated user is the To user (else answer 403)."),
    ("db_check_from", api.db_check_from, False, True, 0,
     "True if the authenticated user is the From user (else answer 403)."),
    ("is_from_local", api.is_from_local, False, True, 0,
     "True if the From domain is local (proxy.domains, listeners, domain table)."),
    ("is_uri_host_local", api.is_uri_host_local, False, True, 0,
     "True if the Request-URI domain is local."),
    ("allow_source_address", api.allow_source_address, False, True, 1,
     "True if the source address is in auth.trusted: ``[group]`` (ignored)."),
    ("is_trusted", api.is_trusted, False, True, 0,
     "True for auth.trusted sources and dispatcher destinations (never challenged)."),
    ("fix_nated_register", api.fix_nated_register, True, True, 0,
     "Have save() store the REGISTER's source address as received (NAT)."),
    ("fix_nated_contact", api.fix_nated_contact, True, True, 0,
     "Rewrite the Contact host:port to the source address (NAT)."),
)


def _nat_uac_test(args, where, env):
    """True if any NAT test in flags says so: 1 Contact, 2 Via vs source, 4 Via, 8 SDP, 16 port, 32 source, 64 WS, 128 Contact port.

    1: the Contact host is private; 2: the top Via host is not the source
    address; 4: the top Via host is private; 8: the SDP c= address is
    private; 16: the source port is not the Via port; 32: the source is
    private; 64: WebSocket; 128: the Contact port is not the source port.
    """
    nargs("nat_uac_test", args, where, 1, 1)
    flags = _flags(args[0], where, "nat_uac_test")
    return lambda ctx: api.nat_uac_test(ctx, flags)


def _is_present_hf(args, where, env):
    """True if the request has a header of that name: ``is_present_hf: Authorization``."""
    nargs("is_present_hf", args, where, 1, 1)
    key = header_key(str(args[0]).strip())
    return lambda ctx: ctx.request.has(key)


def register(table):
    """Declare the registrar's, auth's and NAT functions in ``table`` (a FunctionTable)."""
    table.add("save", _save, action=True, condition=True)
    table.add("lookup", _lookup, action=True, condition=True)
    table.add("registered", _registered, action=False, condition=True)
    table.add("www_authorize", _authorize("www_authorize", api.www_authorize),
              action=True, condition=True)
    table.add("proxy_authorize", _authorize("proxy_authorize", api.proxy_authorize),
              action=True, condition=True)
    table.add("auth_check", _auth_check, action=True, condition=True)
    for name, call in (("www_challenge", api.www_challenge),
                       ("proxy_challenge", api.proxy_challenge),
                       ("auth_challenge", api.auth_challenge)):
        table.add(name, _challenge(name, call), action=True, condition=False)
    for name, call, action, condition, max_args, doc in _SIMPLE:
        table.add(name, _simple(name, call, max_args), action=action, condition=condition,
                  doc=doc)
    table.add("nat_uac_test", _nat_uac_test, action=False, condition=True)
    table.add("is_present_hf", _is_present_hf, action=False, condition=True)
