"""The flood functions of the YAML route (Kamailio's pike and htable names),
declared in a routing function table by :func:`register`.

The seed's ``WITH_ANTIFLOOD`` block of ``route[REQINIT]``::

    - if: {ne: ["$sht(ipban=>$si)", null]}     # $sht(ipban=>$si)!=$null
      then: [exit]                             # already banned
    - if: {not: pike_check_req}
      then:
        - xlog: "ALERT: pike blocking $rm from $fu (IP:$si:$sp)"
        - set: {"$sht(ipban=>$si)": 1}        # banned for the table's autoexpire
        - exit

A live key of the ban table (``flood.ban_table``) is dropped at the
transport edge from then on, before parsing. ``sht_lock``/``sht_unlock``
are accepted and do nothing: the core runs one request at a time, so a
read-modify-write in the route is atomic already.
"""

from ..routing.plugin import RouteError, int_arg, nargs, setter_arg, str_arg, value_arg
from ..routing.pv import compile_value


def _flood(env):
    modules = env.modules

    def running():
        flood = modules.flood
        if flood is None:
            raise RuntimeError("the flood module is not running")
        return flood
    return running


def _known_tables(env):
    """The table names the configuration defines, or None when validating without one."""
    section = getattr(env.config, "flood", None) if env.config is not None else None
    if section is None:
        return None
    return set(section.htables) | {section.ban_table}


def _table_name(name, where, env):
    name = str_arg(name, where, "the hash table").strip()
    known = _known_tables(env)
    if known is not None and name not in known:
        raise RouteError(where, f"no hash table {name!r} (define it in flood.htables; known: "
                                f"{', '.join(sorted(known))})")
    return name


def _text(value):
    return None if value is None else value if isinstance(value, str) else str(value)


def _split(arg, where, variables):
    """``"ipban=>$si"`` -> (table name, key getter)."""
    name, sep, key = arg.partition("=>")
    if not sep or not name.strip() or not key.strip():
        raise RouteError(where, f"$sht({arg}): write $sht(table=>key), such as $sht(ipban=>$si)")
    return name.strip(), compile_value(key.strip(), where, variables)


# -- route functions ------------------------------------------------------------------

def _pike_check_req(args, where, env):
    """Kamailio ``pike_check_req()``: false when the source sent more than ``flood.reqs_density_per_unit`` requests in ``flood.sampling_time_unit`` (trusted sources never)."""
    nargs("pike_check_req", args, where, 0)
    flood = _flood(env)

    def pike_check_req(ctx):
        return flood().guard.check_request(ctx.source.host, ctx.now)
    return pike_check_req


def _sht_rm(args, where, env):
    """Remove an item: ``sht_rm: [ipban, "$si"]``; false if it was not there."""
    nargs("sht_rm", args, where, 2, 2, "table, key")
    name = _table_name(args[0], where, env)
    key, flood = value_arg(args[1], where, env), _flood(env)

    def sht_rm(ctx):
        k = _text(key(ctx))
        return k is not None and flood().table(name).delete(k)
    return sht_rm


def _name_op(fname, args, where, env):
    nargs(fname, args, where, 3, 3, "table, eq|sw|re, value")
    name = _table_name(args[0], where, env)
    op = str_arg(args[1], where, "the operator").strip()
    if op not in ("eq", "sw", "re"):
        raise RouteError(where, f"{fname}: the operator is eq, sw or re, got {op!r}")
    return name, op, value_arg(args[2], where, env), _flood(env)


def _sht_match_name(args, where, env):
    """Kamailio ``sht_match_name``: true if a key equals (eq), starts with (sw) or matches (re) the value: ``[table, op, value]``."""
    name, op, value, flood = _name_op("sht_match_name", args, where, env)

    def sht_match_name(ctx):
        v = _text(value(ctx))
        return v is not None and flood().table(name).match_name(op, v, ctx.now)
    return sht_match_name


def _sht_rm_name(args, where, env):
    """Kamailio ``sht_rm_name``: remove the keys that equal (eq), start with (sw) or match (re) the value: ``[table, op, value]``."""
    name, op, value, flood = _name_op("sht_rm_name", args, where, env)

    def sht_rm_name(ctx):
        v = _text(value(ctx))
        return v is not None and flood().table(name).remove_names(op, v, ctx.now) > 0
    return sht_rm_name


def _sht_reset(args, where, env):
    """Kamailio ``sht_reset``: empty a table: ``sht_reset: ipban``."""
    nargs("sht_reset", args, where, 1)
    name, flood = _table_name(args[0], where, env), _flood(env)

    def sht_reset(ctx):
        flood().table(name).reset()
        return True
    return sht_reset


def _sht_setex(args, where, env):
    """Kamailio ``sht_setxi``/``sht_setxs``: write an item with its own expiry: ``[table, key, value, expire s]``."""
    nargs("sht_setxs", args, where, 4, 4, "table, key, value, expire")
    name = _table_name(args[0], where, env)
    key, value = value_arg(args[1], where, env), value_arg(args[2], where, env)
    if isinstance(args[3], str) and "$" in args[3]:
        get_expire = value_arg(args[3], where, env)
    else:
        seconds = int_arg(args[3], where, "the expiry")
        get_expire = lambda ctx: seconds  # noqa: E731
    flood = _flood(env)

    def sht_setx(ctx):
        k = _text(key(ctx))
        try:
            expire = int(get_expire(ctx))
        except (TypeError, ValueError):
            return False
        if k is None:
            return False
        return flood().set(name, k, value(ctx), ctx.now, expire)
    return sht_setx


def _sht_get(args, where, env):
    """Read an item into a variable: ``sht_get: [ipban, "$si", "$var(v)"]``; false when absent."""
    nargs("sht_get", args, where, 3, 3, "table, key, $var(out)")
    name = _table_name(args[0], where, env)
    key, out, flood = value_arg(args[1], where, env), setter_arg(str(args[2]), where), _flood(env)

    def sht_get(ctx):
        k = _text(key(ctx))
        value = None if k is None else flood().get(name, k, ctx.now)
        if value is None:
            return False
        out(ctx, value)
        return True
    return sht_get


def _sht_set(args, where, env):
    """Write an item for the table's autoexpire: ``sht_set: [ipban, "$si", 1]`` (as ``$sht(ipban=>$si) = 1``)."""
    nargs("sht_set", args, where, 3, 3, "table, key, value")
    name = _table_name(args[0], where, env)
    key, value, flood = value_arg(args[1], where, env), value_arg(args[2], where, env), _flood(env)

    def sht_set(ctx):
        k = _text(key(ctx))
        return k is not None and flood().set(name, k, value(ctx), ctx.now)
    return sht_set


def _sht_lock(args, where, env):
    """Kamailio ``sht_lock``/``sht_unlock``: accepted, nothing to do (one request runs at a time)."""
    nargs("sht_lock", args, where, 1)
    str_arg(args[0], where, "the item (table=>key)")
    return lambda ctx: True


def register(table):
    """Declare pike_check_req, the sht_* functions and ``$sht(table=>key)``."""
    table.add("pike_check_req", _pike_check_req, action=True, condition=True)
    table.add("sht_rm", _sht_rm, action=True, condition=True)
    table.add("sht_match_name", _sht_match_name, action=False, condition=True)
    table.add("sht_has_name", _sht_match_name, action=False, condition=True)
    table.add("sht_rm_name", _sht_rm_name, action=True, condition=True)
    table.add("sht_reset", _sht_reset, action=True, condition=False)
    table.add(("sht_setxs", "sht_setxi"), _sht_setex, action=True, condition=True)
    table.add("sht_get", _sht_get, action=True, condition=True)
    table.add("sht_set", _sht_set, action=True, condition=True)
    table.add(("sht_lock", "sht_unlock"), _sht_lock, action=True, condition=False)
    table.add_pv_function("sht", _sht_getter, _sht_setter)


# -- $sht(table=>key): its factories get (arg, where, variables), not the Env, so
# the module is the core's (ctx.core.modules) and the table names are checked
# when the configuration loads (settings.flood_tables)

def _module_of(ctx):
    flood = ctx.core.modules.flood if ctx.core.modules is not None else None
    if flood is None:
        raise RuntimeError("the flood module is not running")
    return flood


def _sht_getter(arg, where, variables):
    """``$sht(table=>key)``: the item's value, or null."""
    name, key = _split(arg, where, variables)

    def get(ctx):
        k = _text(key(ctx))
        return None if k is None else _module_of(ctx).get(name, k, ctx.now)
    return get


def _sht_setter(arg, where, variables):
    """``$sht(table=>key) = value`` (null deletes)."""
    name, key = _split(arg, where, variables)

    def set_item(ctx, value):
        k = _text(key(ctx))
        if k is not None:
            _module_of(ctx).set(name, k, value, ctx.now)
    return set_item
