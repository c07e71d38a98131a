"""Management front-ends over the one command registry (``root.registry``):

- ``manhole``: a Python console inside the proxy, over SSH;
- ``jsonrpc``: JSON-RPC 2.0 on HTTP (``POST /rpc``), used by ``sipdisp-ctl``;
- ``metrics``: Prometheus ``/metrics`` on the same HTTP listener;
- ``web``: that HTTP listener, with its optional bearer token.

``add_management(root)`` registers the ``system.*`` commands and adds the
console and HTTP services to the service tree when the config enables them.
"""

import inspect


def register_system_commands(registry):
    """``system.listMethods`` and ``system.methodHelp`` (Kamailio's names)."""

    @registry.command("system.listMethods")
    def list_methods() -> list:
        """Every command name."""
        return registry.names()

    @registry.command("system.methodHelp")
    def method_help(name: str) -> dict:
        """A command's description: help line, parameters and full documentation."""
        command = registry.get(name)
        out = command.describe()
        out["doc"] = inspect.getdoc(command.func) or command.help
        return out


def add_management(root, reactor=None):
    """Register ``system.*`` and attach the enabled console and HTTP services to ``root``."""
    register_system_commands(root.registry)
    cfg = root.cfg
    services = []
    if cfg.console.enabled:
        from .manhole import ConsoleService
        services.append(ConsoleService(root, cfg.console, reactor))
    if cfg.http.enabled:
        from .web import HttpService
        services.append(HttpService(root, cfg.http, reactor))
    for service in services:
        service.setServiceParent(root)
    return services
