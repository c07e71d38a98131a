"""The presence module's functions in the YAML route, declared in a routing
function table by :func:`register` (OpenSIPS names):

    PRESENCE:
      - if: {is_method: PUBLISH}
        then: [handle_publish]        # answers and ends the route
      - if: {is_method: SUBSCRIBE}
        then: [handle_subscribe]

Python routes call :func:`handle_publish` and :func:`handle_subscribe` with
the request context.
"""

from ..routing.plugin import nargs


def _server(ctx):
    return ctx.core.modules.require("presence")


def handle_publish(ctx):
    """Answer a PUBLISH as the event state compositor and end the route;
    False for another method."""
    return _server(ctx).handle_publish(ctx)


def handle_subscribe(ctx):
    """Make, refresh or end a subscription, answer the SUBSCRIBE, NOTIFY the
    watcher and end the route; False for another method."""
    return _server(ctx).handle_subscribe(ctx)


def _handle_publish(args, where, env):
    """PUBLISH (RFC 3903): store, refresh, modify or remove event state, answer 200 with SIP-ETag (412, 423, 489 ...), notify the watchers; ends the route."""
    nargs("handle_publish", args, where, 0)
    return handle_publish


def _handle_subscribe(args, where, env):
    """SUBSCRIBE (RFC 6665): make, refresh or end a subscription, answer 200 (481, 489, 423 ...) and send the NOTIFY; ends the route."""
    nargs("handle_subscribe", args, where, 0)
    return handle_subscribe


def register(table):
    """Declare handle_publish and handle_subscribe in ``table`` (a FunctionTable)."""
    table.add("handle_publish", _handle_publish, action=True, condition=True)
    table.add("handle_subscribe", _handle_subscribe, action=True, condition=True)
