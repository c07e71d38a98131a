"""Kamailio's registrar, auth and nathelper functions for Python routes
(``routing.module``), taking the request context first; the YAML route
functions of the same names call these.

    from sipdisp.registrar.api import lookup, registered, save, auth_check, auth_challenge
    from sipdisp.routing.api import t_relay

    def request_route(ctx):
        if ctx.is_method("REGISTER"):
            if not auth_check(ctx, "", 1):
                auth_challenge(ctx, "", 1)
                return
            save(ctx)
            return
        if lookup(ctx):
            t_relay(ctx)
        elif registered(ctx):
            ctx.reply(480, "Temporarily Unavailable")
        else:
            ctx.reply(404, "Not Found")

The subsystems are found in ``ctx.core.modules`` (:class:`~sipdisp.routing.plugin.Modules`): ``registrar`` (None
when ``registrar.enabled`` is false: ``save`` then answers 404 "No
registrar") and ``auth``.
"""

from . import nat
from .registrar import parse_save_flags


def _registrar(ctx):
    return ctx.core.modules.registrar


def _auth(ctx):
    auth = ctx.core.modules.auth
    if auth is None:
        raise RuntimeError("the auth module is not running")
    return auth


def save(ctx, table="location", flags=0):
    """Store the REGISTER's bindings and answer it (200 with every binding)."""
    registrar = _registrar(ctx)
    if registrar is None:
        ctx.reply(404, "No registrar")
        return False
    return registrar.save(ctx, parse_save_flags(flags))


def lookup(ctx, table="location", uri=None, flags=""):
    """Point the request at the AOR's contacts (forking to all with
    append_branches); False when none is registered or reachable. ``flags``
    are OpenSIPS': ``m`` method filtering, ``b`` no branches (best contact)."""
    registrar = _registrar(ctx)
    if registrar is None:
        ctx.vars["lookup_rc"] = -1
        return False
    return registrar.lookup(ctx, uri, True if "m" in flags else None,
                            False if "b" in flags else None)


def registered(ctx, table="location", uri=None):
    """True if the AOR (Request-URI or ``uri``) has a live binding."""
    registrar = _registrar(ctx)
    return registrar is not None and registrar.registered(ctx, uri)


def www_authorize(ctx, realm="", table="subscriber"):
    """Check ``Authorization`` against the subscriber table."""
    return _auth(ctx).www_authorize(ctx, realm)


def proxy_authorize(ctx, realm="", table="subscriber"):
    """Check ``Proxy-Authorization`` against the subscriber table."""
    return _auth(ctx).proxy_authorize(ctx, realm)


def auth_check(ctx, realm="", table="subscriber", flags=0):
    """www_authorize for REGISTER, proxy_authorize otherwise; flag 1 also checks identity."""
    if isinstance(table, int):  # auth_check(ctx, realm, flags)
        table, flags = "subscriber", table
    return _auth(ctx).auth_check(ctx, realm, flags)


def www_challenge(ctx, realm="", flags=0):
    """Answer 401 with a challenge."""
    _auth(ctx).www_challenge(ctx, realm, int(flags))


def proxy_challenge(ctx, realm="", flags=0):
    """Answer 407 with a challenge."""
    _auth(ctx).proxy_challenge(ctx, realm, int(flags))


def auth_challenge(ctx, realm="", flags=0):
    """401 for REGISTER, else 407."""
    _auth(ctx).auth_challenge(ctx, realm, int(flags))


def consume_credentials(ctx):
    """Remove the credentials that authorized the request."""
    return _auth(ctx).consume_credentials(ctx)


def db_check_to(ctx):
    """The authenticated user is the To user."""
    return _auth(ctx).db_check_to(ctx)


def db_check_from(ctx):
    """The authenticated user is the From user."""
    return _auth(ctx).db_check_from(ctx)


def is_from_local(ctx):
    """The From domain is local."""
    return _auth(ctx).is_from_local(ctx)


def is_uri_host_local(ctx):
    """The Request-URI domain is local."""
    return _auth(ctx).is_uri_host_local(ctx)


def allow_source_address(ctx, group=1):
    """The source address is in ``auth.trusted``."""
    return _auth(ctx).allow_source_address(ctx)


def is_trusted(ctx):
    """``allow_source_address`` or a dispatcher destination (FreeSWITCH)."""
    return _auth(ctx).is_trusted(ctx)


nat_uac_test = nat.nat_uac_test
fix_nated_register = nat.fix_nated_register
fix_nated_contact = nat.fix_nated_contact
