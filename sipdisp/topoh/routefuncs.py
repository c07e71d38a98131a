"""The topology hiding functions in the YAML route (OpenSIPS'
``topology_hiding`` module), declared in a routing function table by
:func:`register`:

    - if: has_totag
      then:
        - if: topology_hiding_match         # in-dialog: to the other party
          then: [t_relay, exit]
        - if: loose_route
          then: [t_relay, exit]
        ...
    - if: {is_method: INVITE}
      then:
        - topology_hiding: U                # U: keep the Contact's username
        - t_relay

Python routes call :func:`topology_hiding` and :func:`topology_hiding_match`
with the request context first. Both need the dialog module (its table
holds the hidden calls).
"""

from ..routing.plugin import RouteError, nargs
from . import hiding


def _dialogs(ctx):
    return ctx.core.modules.require("dialogs")


def _param(env):
    cfg = getattr(env, "config", None)
    section = getattr(cfg, "topology_hiding", None) if cfg is not None else None
    return section.did_param if section is not None else "did"


def topology_hiding(ctx, flags="", param="did"):
    """Hide the topology of the call this initial INVITE starts (flags: U keep
    the Contact username); False for other requests."""
    return hiding.hide(ctx, _dialogs(ctx), hiding.parse_flags(flags), param)


def topology_hiding_match(ctx, param="did"):
    """True when the in-dialog request belongs to a hidden call; it is then
    turned towards the other party, ready for t_relay."""
    return hiding.match(ctx, _dialogs(ctx), param)


def _topology_hiding(args, where, env):
    """Hide Via, Record-Route, Route and Contact of the call this INVITE starts, both ways (creates its dialog): ``topology_hiding: U`` (U keeps the Contact username); false for other requests."""
    if isinstance(args, list) and len(args) == 1 and args[0] is None:
        args = []
    nargs("topology_hiding", args, where, 0, 1, usage="[flags]")
    try:
        flags = hiding.parse_flags(args[0] if args else "")
    except ValueError as exc:
        raise RouteError(where, str(exc)) from None
    param = _param(env)
    return lambda ctx: hiding.hide(ctx, _dialogs(ctx), flags, param)


def _topology_hiding_match(args, where, env):
    """True for an in-dialog request of a hidden call (sent to the proxy's Contact); it is turned towards the other party, ready for t_relay."""
    if isinstance(args, list) and len(args) == 1 and args[0] is None:
        args = []
    nargs("topology_hiding_match", args, where, 0, 0)
    param = _param(env)
    return lambda ctx: hiding.match(ctx, _dialogs(ctx), param)


def register(table):
    """Declare topology_hiding and topology_hiding_match in ``table`` (a FunctionTable)."""
    table.add("topology_hiding", _topology_hiding, action=True, condition=True)
    table.add("topology_hiding_match", _topology_hiding_match, action=True, condition=True)
