"""The dispatcher's functions in the YAML route (Kamailio's dispatcher
module): ``ds_select_dst``, ``ds_select_domain``, ``ds_next_dst``,
``ds_mark_dst`` and ``ds_is_from_list``.

    - if: {not: {ds_select_dst: [0, 4]}}
      then: [{send_reply: [404, "No destination"]}, exit]

Each closure is bound to the dispatcher the route is compiled against
(``env.modules.dispatcher``); without one (a configuration check) the functions
compile and answer False.
"""

from ..probing import parse_state_letters
from ..routing.plugin import RouteError, int_arg, nargs, str_arg, value_arg
from ..sip.uri import parse_uri
from .algorithms import HASH_PVAR, check_algorithm


def _set_alg(args, where, name):
    nargs(name, args, where, 2, 3)
    setid = int_arg(args[0], where, "the set id")
    try:
        alg = check_algorithm(args[1])
    except ValueError as exc:
        raise RouteError(where, str(exc)) from None
    limit = int_arg(args[2], where, "the limit") if len(args) > 2 else 0
    return setid, alg, limit


def _hash_key(env, where):
    """Algorithm 7's key: ``dispatcher.hash_pvar`` compiled into ``ctx -> str``
    (Kamailio's hash_pvar; "" when the variable is unset); a RouteError when
    the key is not configured."""
    config = env.config
    text = config.dispatcher.hash_pvar if config is not None else ""
    if not text:
        raise RouteError(where, "algorithm 7 hashes dispatcher.hash_pvar, which is not set "
                                "(a pseudo-variable such as \"$fU\" or \"$fU@$fd\")")
    getter = value_arg(text, where, env)

    def key(ctx):
        value = getter(ctx)
        return "" if value is None else str(value)
    return key


def _selector(name, method):
    """The factory of ``ds_select_dst``/``ds_select_domain``: ``[set, alg(, limit)]``
    compiled into a call of the dispatcher's ``method``."""
    def factory(args, where, env):
        setid, alg, limit = _set_alg(args, where, name)
        key = _hash_key(env, where) if alg == HASH_PVAR else None
        dispatcher = env.modules.dispatcher
        if dispatcher is None:
            return lambda ctx: False
        select = getattr(dispatcher, method)
        if key is not None:
            return lambda ctx: select(ctx, setid, alg, limit, key=key(ctx))
        return lambda ctx: select(ctx, setid, alg, limit)
    return factory


def _ds_next_dst(args, where, env):
    """Use the next destination of the selected order; False when none is left."""
    nargs("ds_next_dst", args, where, 0)
    dispatcher = env.modules.dispatcher
    if dispatcher is None:
        return lambda ctx: False
    return dispatcher.next_dst


def _ds_mark_dst(args, where, env):
    """Mark the destination in use: ``"i"`` (default), ``"a"``, ``"t"``, ``"d"``, plus ``"p"``."""
    nargs("ds_mark_dst", args, where, 0, 1)
    try:
        state = parse_state_letters(str_arg(args[0], where, "the state") if args else "i")
    except ValueError as exc:
        raise RouteError(where, str(exc)) from None
    dispatcher = env.modules.dispatcher
    if dispatcher is None:
        return lambda ctx: False
    mark = dispatcher.mark_dst
    return lambda ctx: mark(ctx, state)


def _ds_is_from_list(args, where, env):
    """True if the request comes from a destination: ``[set(, mode(, uri))]``, set -1 = all."""
    nargs("ds_is_from_list", args, where, 0, 3)
    setid = int_arg(args[0], where, "the set id") if args else -1
    mode = int_arg(args[1], where, "the mode") if len(args) > 1 else None
    uri = None
    if len(args) > 2:
        try:
            uri = parse_uri(str_arg(args[2], where, "the URI"))
        except Exception as exc:
            raise RouteError(where, f"bad URI: {exc}") from None
    dispatcher = env.modules.dispatcher
    if dispatcher is None:
        return lambda ctx: False
    check = dispatcher.is_from_list
    return lambda ctx: check(ctx, setid, mode, uri)


def register(table):
    """Declare the dispatcher's route functions in ``table`` (a FunctionTable)."""
    table.add("ds_select_dst", _selector("ds_select_dst", "select_dst"), action=True,
              condition=True, doc="Pick a destination of a set with an algorithm: "
                                  "``[set, alg(, limit)]``; sets $du.")
    table.add("ds_select_domain", _selector("ds_select_domain", "select_domain"),
              action=True, condition=True,
              doc="As ds_select_dst, but rewriting the R-URI host and port.")
    table.add(("ds_next_dst", "ds_next_domain"), _ds_next_dst, action=True, condition=True)
    table.add("ds_mark_dst", _ds_mark_dst, action=True, condition=True)
    table.add("ds_is_from_list", _ds_is_from_list, action=False, condition=True)
