"""The registrar's, auth's and nathelper's functions in the YAML route,
registered in the routing function table (imported by ``sipdisp.routing``).

    - if: {not: {auth_check: ["", subscriber, 1]}}
      then: [{auth_challenge: ["", 1]}, exit]
    - if: {lookup: location}
      then: [{route: RELAY}]

Arguments are checked when the route compiles; a realm may be a
pseudo-variable (``"$fd"``). Each function finds its module in
``ctx.core.modules`` when it runs.
"""

from ..routing.compiler import FUNCTIONS, function
from ..routing.pv import RouteError, compile_value
from . import api
from .registrar import parse_save_flags


def _nargs(name, args, where, lo, hi):
    if not lo <= len(args) <= hi:
        raise RouteError(where, f"{name} takes {lo} to {hi} argument(s), got {len(args)}")


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


def _realm(args, where):
    if not args or args[0] in ("", None):
        return lambda ctx: ""
    getter = compile_value(str(args[0]), where)
    return lambda ctx: str(getter(ctx) or "")


@function("save", action=True, condition=True)
def _save(args, where, env):
    """Store the REGISTER's bindings and answer 200 listing them: ``[location(, flags)]``."""
    _nargs("save", args, where, 0, 2)
    _table(args, where, "save", "location")
    try:
        flags = parse_save_flags(args[1]) if len(args) > 1 else 0
    except ValueError as exc:
        raise RouteError(where, str(exc)) from None
    return lambda ctx: api.save(ctx, "location", flags)


@function("lookup", action=True, condition=True)
def _lookup(args, where, env):
    """Point the request at the R-URI user's contacts, forking to all: ``[location(, uri or flags m/b)]``."""
    _nargs("lookup", args, where, 0, 2)
    _table(args, where, "lookup", "location")
    uri, flags = None, ""
    if len(args) > 1:
        second = str(args[1])
        if second.startswith(("sip:", "sips:", "$")):
            uri = compile_value(second, where)
        elif set(second) <= {"m", "b"}:
            flags = second  # OpenSIPS: m method filtering, b no branches
        else:
            raise RouteError(where, f"lookup: {second!r} is neither a URI nor flags (m, b)")
    if uri is None:
        return lambda ctx: api.lookup(ctx, "location", None, flags)
    return lambda ctx: api.lookup(ctx, "location", uri(ctx), flags)


@function("registered", action=False, condition=True)
def _registered(args, where, env):
    """True if the R-URI (or the given URI) has a live binding: ``[location(, uri)]``."""
    _nargs("registered", args, where, 0, 2)
    _table(args, where, "registered", "location")
    if len(args) > 1:
        uri = compile_value(str(args[1]), where)
        return lambda ctx: api.registered(ctx, "location", uri(ctx))
    return lambda ctx: api.registered(ctx)


def _authorize(name, call):
    def factory(args, where, env):
        _nargs(name, args, where, 0, 2)
        if len(args) > 1:
            _table(args[1:], where, name, "subscriber")
        realm = _realm(args, where)
        return lambda ctx: call(ctx, realm(ctx))
    factory.__doc__ = {
        "www_authorize": "Check Authorization against subscriber: ``[realm, subscriber]`` ('' = To domain).",
        "proxy_authorize": "Check Proxy-Authorization against subscriber: ``[realm, subscriber]``.",
    }[name]
    return factory


function("www_authorize", action=True, condition=True)(
    _authorize("www_authorize", api.www_authorize))
function("proxy_authorize", action=True, condition=True)(
    _authorize("proxy_authorize", api.proxy_authorize))


@function("auth_check", action=True, condition=True)
def _auth_check(args, where, env):
    """www_authorize for REGISTER, else proxy_authorize: ``[realm, subscriber, flags]`` (1: check identity)."""
    _nargs("auth_check", args, where, 0, 3)
    if len(args) > 1:
        _table(args[1:], where, "auth_check", "subscriber")
    flags = _flags(args[2], where, "auth_check") if len(args) > 2 else 0
    realm = _realm(args, where)
    return lambda ctx: api.auth_check(ctx, realm(ctx), "subscriber", flags)


def _challenge(name, call):
    def factory(args, where, env):
        _nargs(name, args, where, 0, 2)
        flags = _flags(args[1], where, name) if len(args) > 1 else 0
        realm = _realm(args, where)
        return lambda ctx: call(ctx, realm(ctx), flags)
    factory.__doc__ = {
        "www_challenge": "Answer 401 with a digest challenge: ``[realm, flags]`` (flags 1: qop=auth).",
        "proxy_challenge": "Answer 407 with a digest challenge: ``[realm, flags]``.",
        "auth_challenge": "401 for REGISTER, else 407: ``[realm, flags]``.",
    }[name]
    return factory


for _name, _call in (("www_challenge", api.www_challenge),
                     ("proxy_challenge", api.proxy_challenge),
                     ("auth_challenge", api.auth_challenge)):
    function(_name, action=True, condition=False)(_challenge(_name, _call))


def _simple(name, call, doc, action=True, condition=True, max_args=0):
    def factory(args, where, env):
        _nargs(name, args, where, 0, max_args)
        return call
    factory.__doc__ = doc
    function(name, action=action, condition=condition)(factory)


_simple("consume_credentials", api.consume_credentials,
        "Remove the credentials that authorized the request (not forwarded).")
_simple("db_check_to", api.db_check_to,
        "True if the authenticated user is the To user (else answer 403).", action=False)
_simple("db_check_from", api.db_check_from,
        "True if the authenticated user is the From user (else answer 403).", action=False)
_simple("is_from_local", api.is_from_local,
        "True if the From domain is local (proxy.domains, listeners, domain table).",
        action=False)
_simple("is_uri_host_local", api.is_uri_host_local,
        "True if the Request-URI domain is local.", action=False)
_simple("allow_source_address", api.allow_source_address,
        "True if the source address is in auth.trusted: ``[group]`` (ignored).",
        action=False, max_args=1)
_simple("is_trusted", api.is_trusted,
        "True for auth.trusted sources and dispatcher destinations (never challenged).",
        action=False)
_simple("fix_nated_register", api.fix_nated_register,
        "Have save() store the REGISTER's source address as received (NAT).")
_simple("fix_nated_contact", api.fix_nated_contact,
        "Rewrite the Contact host:port to the source address (NAT).")


@function("nat_uac_test", action=False, condition=True)
def _nat_uac_test(args, where, env):
    """True if any NAT test in flags says so: 1 Contact, 2 Via vs source, 4 Via, 8 SDP, 16 port, 32 source, 64 WS, 128 Contact port.

    1: the Contact host is private; 2: the top Via host is not the source
    address; 4: the top Via host is private; 8: the SDP c= address is
    private; 16: the source port is not the Via port; 32: the source is
    private; 64: WebSocket; 128: the Contact port is not the source port.
    """
    _nargs("nat_uac_test", args, where, 1, 1)
    flags = _flags(args[0], where, "nat_uac_test")
    return lambda ctx: api.nat_uac_test(ctx, flags)


if "is_present_hf" not in FUNCTIONS:
    @function("is_present_hf", action=False, condition=True)
    def _is_present_hf(args, where, env):
        """True if the request has a header of that name: ``is_present_hf: Authorization``."""
        _nargs("is_present_hf", args, where, 1, 1)
        from ..sip.headers import header_key
        key = header_key(str(args[0]).strip())
        return lambda ctx: ctx.request.has(key)
