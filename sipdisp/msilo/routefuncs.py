"""The msilo module's functions in the YAML route, declared in a routing
function table by :func:`register`.

    - if: {is_method: MESSAGE}
      then:
        - if: {lookup: location}
          then: [{route: relay}]
        - if: {not: m_store}                  # stored: 202 Accepted, the route ends
          then: [{send_reply: [480, "Temporarily Unavailable"]}, exit]
    - if: {is_method: REGISTER}
      then: [{save: location}, m_dump, exit]  # her messages, once she is back

Python routes call :func:`m_store` and :func:`m_dump` with the request
context first.
"""

from ..routing.plugin import nargs, value_arg


def _silo(ctx):
    return ctx.core.modules.require("msilo")


def m_store(ctx, owner=None):
    """Store the MESSAGE for ``owner`` (default the R-URI), answer 202 Accepted
    and stop the route; False when it cannot be stored (the route goes on)."""
    return _silo(ctx).store(ctx, owner)


def m_dump(ctx, owner=None):
    """Send the messages stored for ``owner`` (default the To URI) to the
    contact the REGISTER bound; True when it bound one."""
    return _silo(ctx).dump(ctx, owner)


def _owner(name, args, where, env):
    nargs(name, args, where, 0, 1, usage="[owner URI]")
    if not args or args[0] in ("", None):
        return None
    getter = value_arg(str(args[0]), where, env)
    return lambda ctx: getter(ctx) or None


def _m_store(args, where, env):
    """Store the MESSAGE for a user with no contact and answer 202 Accepted (route ends); false over msilo.max_messages: ``[owner]`` (default $ru)."""
    owner = _owner("m_store", args, where, env)
    if owner is None:
        return lambda ctx: m_store(ctx)
    return lambda ctx: m_store(ctx, owner(ctx))


def _m_dump(args, where, env):
    """After save: send her stored MESSAGEs to the contact the REGISTER bound, deleting each on a 2xx: ``[owner]`` (default $tu)."""
    owner = _owner("m_dump", args, where, env)
    if owner is None:
        return lambda ctx: m_dump(ctx)
    return lambda ctx: m_dump(ctx, owner(ctx))


def register(table):
    """Declare m_store and m_dump in ``table`` (a FunctionTable)."""
    table.add("m_store", _m_store, action=True, condition=True)
    table.add("m_dump", _m_dump, action=True, condition=True)
