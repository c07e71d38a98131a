"""alias_db's functions in the YAML route, declared in a routing function
table by :func:`register`.

    - alias_db_lookup: dbaliases                 # OpenSIPS/Kamailio alias_db_lookup("dbaliases")
    - if: {alias_db_lookup: [dbaliases, d]}       # flags d (no domain), u (domain), r (reverse)
      then: [{xlog: "alias: now $ru"}]
    - alias_db_find: [dbaliases, "$fu", "$var(from_alias)", r]

Each lookup reads the table (through the storage; the route is suspended
while it is read, and runs again with the answer). What a lookup did is
kept in ``ctx.vars`` per call site, so a route that runs again after a
later suspension does not look up the canonical URI it wrote as if it were
an alias. Python routes call :func:`alias_db_lookup` and
:func:`alias_db_find` with the request context first.
"""

import itertools

from ..proxy.suspend import FetchFailed
from ..routing.plugin import RouteError, nargs, setter_arg, str_arg, value_arg
from ..sip.uri import parse_uri
from .aliases import check_table, parse_flags

_sites = itertools.count(1)


def _module(ctx):
    module = ctx.core.modules.aliases
    if module is None:
        raise RuntimeError("the aliases module is not running (aliases.enabled)")
    return module


def _lookup(ctx, module, table, user, domain, use_domain, reverse):
    """The target URI for ``user@domain`` (None: none), suspending the
    route while the table is read; False when the table cannot be read."""
    use = module.aliases.use_domain if use_domain is None else use_domain
    key = f"_alias:{table}:{int(use)}{int(reverse)}:{user}@{domain}"
    try:
        return module.suspender.fetch(ctx, key, lambda: module.aliases.find(
            user, domain, table, use, reverse))
    except FetchFailed as exc:
        module.failed(table, user, exc)
        return False


def _done(ctx, site, before, compute):
    """Run ``compute()`` -> ``(result, after)`` once per call site: a route
    run again (after a suspension) that comes back here with the value this
    site wrote gets the first outcome, without looking the new value up."""
    record = ctx.vars.get(site)
    if record is not None and record[0] == before:
        return record[1]
    result, after = compute()
    if after is not None:
        ctx.vars[site] = (after, result)
    return result


# -- Python API ---------------------------------------------------------------------

def alias_db_lookup(ctx, table="dbaliases", flags="", site="_alias_site:py"):
    """Replace the Request-URI with the user an alias in ``table`` points
    to; True if it did, False when the R-URI is no alias (or the table
    cannot be read)."""
    module = _module(ctx)
    use_domain, reverse = parse_flags(flags)
    uri = ctx.request.uri
    if not uri.user:
        return False

    def compute():
        target = _lookup(ctx, module, table, uri.user, uri.host, use_domain, reverse)
        if target is False:
            return False, None
        module.aliases.count(target is not None)
        if target is None:
            return False, None
        ctx.set_ruri(parse_uri(target))
        return True, str(ctx.request.uri)
    return _done(ctx, site, str(uri), compute)


def alias_db_find(ctx, table, value, setter, flags=""):
    """Look up the SIP URI ``value`` in ``table`` and store the result with
    ``setter(ctx, uri)``, leaving the request alone; True if found."""
    module = _module(ctx)
    use_domain, reverse = parse_flags(flags)
    try:
        uri = parse_uri(str(value))
    except Exception:
        return False
    if not uri.user:
        return False
    target = _lookup(ctx, module, table, uri.user, uri.host, use_domain, reverse)
    if target is False:
        return False
    module.aliases.count(target is not None)
    if target is None:
        return False
    setter(ctx, target)
    return True


# -- route function factories ---------------------------------------------------------

def _table_arg(value, where, name):
    text = str_arg(value, where, f"{name}: the table")
    try:
        return check_table(text)
    except ValueError as exc:
        raise RouteError(where, f"{name}: {exc}") from None


def _flags_arg(value, where, name):
    text = str_arg(value, where, f"{name}: the flags")
    try:
        parse_flags(text)
    except ValueError as exc:
        raise RouteError(where, f"{name}: {exc}") from None
    return text


def _check_enabled(where, name, env):
    cfg = env.config
    section = getattr(cfg, "aliases", None) if cfg is not None else None
    if section is not None and not section.enabled:
        raise RouteError(where, f"{name} needs aliases.enabled: true")


def _alias_db_lookup(args, where, env):
    """Replace the R-URI with the user its alias points to; false if none: ``[dbaliases(, flags d/u/r)]``."""
    nargs("alias_db_lookup", args, where, 1, 2, "table[, flags]")
    _check_enabled(where, "alias_db_lookup", env)
    table = _table_arg(args[0], where, "alias_db_lookup")
    flags = _flags_arg(args[1], where, "alias_db_lookup") if len(args) > 1 else ""
    site = f"_alias_site:{next(_sites)}"
    return lambda ctx: alias_db_lookup(ctx, table, flags, site)


def _alias_db_find(args, where, env):
    """Look up a URI (``$fu`` ...) in the alias table into a variable: ``[dbaliases, input, output(, flags)]``."""
    nargs("alias_db_find", args, where, 3, 4, "table, input, output[, flags]")
    _check_enabled(where, "alias_db_find", env)
    table = _table_arg(args[0], where, "alias_db_find")
    value = value_arg(args[1], where, env)
    setter = setter_arg(str(args[2]), where)
    flags = _flags_arg(args[3], where, "alias_db_find") if len(args) > 3 else ""
    return lambda ctx: alias_db_find(ctx, table, value(ctx), setter, flags)


def register(table):
    """Declare alias_db's functions in ``table``."""
    table.add("alias_db_lookup", _alias_db_lookup, action=True, condition=True)
    table.add("alias_db_find", _alias_db_find, action=True, condition=True)
