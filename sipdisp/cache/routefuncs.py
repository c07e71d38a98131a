"""The cache functions of the YAML route (OpenSIPS cachedb's names and
arguments), declared in a routing function table by :func:`register`.

    - cache_store: [redis, "$fd:$fU", "$hdr(Contact)", 3600]   # the seed's REGISTER line
    - if: {cache_fetch: [redis, "$fd:$rU", "$var(contact)"]}
      then: [{xlog: "cached contact $var(contact)"}]
    - cache_add: [local, "calls:$fU", 1, 60, "$var(calls)"]    # a counter over 60 s
    - cache_remove: [redis, "$fd:$fU"]

The engine is a name of ``cache.engines`` (``local`` is always there).
Every function returns false, with a rate-limited warning, when its engine
is down or refuses; the route goes on. Python routes call the functions at
the end of this module with the request context first.
"""

import itertools

from ..routing.plugin import RouteError, int_arg, nargs, setter_arg, str_arg, value_arg
from .settings import DEFAULT_ENGINES

#: every call site gets its own key in ctx.vars for its outcome (see cache.py)
_sites = itertools.count(1)


def _engine_name(args, where, env):
    name = str_arg(args[0], where, "the cache engine")
    cfg = env.config
    section = getattr(cfg, "cache", None) if cfg is not None else None
    known = section.engines if section is not None else DEFAULT_ENGINES
    if name not in known:
        raise RouteError(where, f"no cache engine {name!r} (define it in cache.engines; "
                                f"known: {', '.join(sorted(known))})")
    return name


def _int_getter(value, where, env, what):
    """A getter ``ctx -> int or None`` for a constant or a pseudo-variable."""
    if isinstance(value, str) and "$" in value:
        get = value_arg(value, where, env)

        def number(ctx):
            try:
                return int(get(ctx))
            except (TypeError, ValueError):
                return None
        return number
    n = int_arg(value, where, what)
    return lambda ctx: n


def _cache(env):
    modules = env.modules

    def running():
        cache = modules.cache
        if cache is None:
            raise RuntimeError("the cache module is not running")
        return cache
    return running


def _text(value):
    return value if isinstance(value, str) else str(value)


# -- route functions -----------------------------------------------------------------

def _cache_store(args, where, env):
    """Store a value: ``cache_store: [engine, key, value(, expire s)]``; false if the engine is down or full."""
    nargs("cache_store", args, where, 3, 4, "engine, key, value[, expire]")
    name = _engine_name(args, where, env)
    key, value = value_arg(args[1], where, env), value_arg(args[2], where, env)
    expire = _int_getter(args[3] if len(args) > 3 else 0, where, env, "the expiry")
    cache, site = _cache(env), f"_cache{next(_sites)}"

    def store(ctx):
        done = ctx.vars.get(site)
        if done is not None:
            return done
        c, k, v, e = cache(), _text(key(ctx)), value(ctx), expire(ctx)
        if v is None or e is None:
            ok = c.failed(name, "store", k, "bad_argument",
                          "the value is null" if v is None else "the expiry is not a number")
        else:
            ok = c.store(name, k, _text(v), e, ctx.now)
        ctx.vars[site] = ok
        return ok
    return store


def _reader(fname, method, doc):
    """The factory of ``fname: [engine, key, "$var(out)"]``: ``Cache.<method>``
    read into the variable; false when absent or down."""
    def factory(args, where, env):
        nargs(fname, args, where, 3, 3, "engine, key, $var(out)")
        name = _engine_name(args, where, env)
        key, out = value_arg(args[1], where, env), setter_arg(str(args[2]), where)
        cache, site = _cache(env), f"_cache{next(_sites)}"

        def read(ctx):
            value = getattr(cache(), method)(ctx, site, name, _text(key(ctx)))
            if value is None:
                return False
            out(ctx, value)
            return True
        read.__name__ = fname
        return read
    factory.__doc__ = doc
    return factory


_cache_fetch = _reader(
    "cache_fetch", "fetch",
    'Read a value into a variable: ``cache_fetch: [engine, key, "$var(out)"]``; false if absent or down.')
_cache_counter_fetch = _reader(
    "cache_counter_fetch", "counter_fetch",
    'Read a counter into a variable: ``cache_counter_fetch: [engine, key, "$var(out)"]``.')


def _cache_remove(args, where, env):
    """Remove a key: ``cache_remove: [engine, key]``; false if the engine is down."""
    nargs("cache_remove", args, where, 2, 2, "engine, key")
    name = _engine_name(args, where, env)
    key = value_arg(args[1], where, env)
    cache, site = _cache(env), f"_cache{next(_sites)}"

    def remove(ctx):
        done = ctx.vars.get(site)
        if done is not None:
            return done
        ok = cache().remove(name, _text(key(ctx)), ctx.now)
        ctx.vars[site] = ok
        return ok
    return remove


def _counter(fname, sign):
    usage = "engine, key, amount[, expire[, $var(new)]]"

    def factory(args, where, env):
        nargs(fname, args, where, 3, 5, usage)
        name = _engine_name(args, where, env)
        key = value_arg(args[1], where, env)
        amount = _int_getter(args[2], where, env, "the amount")
        expire = _int_getter(args[3] if len(args) > 3 else 0, where, env, "the expiry")
        out = setter_arg(str(args[4]), where) if len(args) > 4 else None
        cache, site = _cache(env), f"_cache{next(_sites)}"

        def add(ctx):
            done = ctx.vars.get(site + "!")
            if done is not None:
                return done
            c, k, n, e = cache(), _text(key(ctx)), amount(ctx), expire(ctx)
            if n is None or e is None:
                ok = c.failed(name, "add", k, "bad_argument", "the amount or expiry is not a number")
            else:
                result = c.add(ctx, site, name, k, sign * n, e, out is not None)
                ok = result is not None
                if ok and out is not None:
                    out(ctx, result)
            ctx.vars[site + "!"] = ok
            return ok
        return add
    factory.__doc__ = (f"{'Add to' if sign > 0 else 'Subtract from'} a counter: "
                       f"``{fname}: [{usage}]``; the new value into the variable.")
    return factory


def register(table):
    """Declare the cache functions (steps and conditions)."""
    table.add("cache_store", _cache_store, action=True, condition=True)
    table.add("cache_fetch", _cache_fetch, action=True, condition=True)
    table.add("cache_remove", _cache_remove, action=True, condition=True)
    table.add("cache_add", _counter("cache_add", 1), action=True, condition=True)
    table.add("cache_sub", _counter("cache_sub", -1), action=True, condition=True)
    table.add("cache_counter_fetch", _cache_counter_fetch, action=True, condition=True)


# -- Python API -------------------------------------------------------------------

def _module(ctx):
    cache = ctx.core.modules.cache
    if cache is None:
        raise RuntimeError("the cache module is not running")
    return cache


def cache_store(ctx, engine, key, value, expire=0):
    """Store ``value`` under ``key`` for ``expire`` seconds (0: no expiry); False if refused."""
    return _module(ctx).store(engine, key, _text(value), expire, ctx.now)


def cache_fetch(ctx, engine, key):
    """The value of ``key`` or None (suspends the request on an asynchronous engine)."""
    return _module(ctx).fetch(ctx, f"_cache:py:{engine}:{key}", engine, key)


def cache_remove(ctx, engine, key):
    """Remove ``key``; False if the engine refused."""
    return _module(ctx).remove(engine, key, ctx.now)


def cache_add(ctx, engine, key, amount, expire=0):
    """Add ``amount`` to the counter ``key``: its new value, or None on failure."""
    return _module(ctx).add(ctx, f"_cache:py:add:{engine}:{key}", engine, key, amount, expire,
                            True)
