"""Management front-ends over the one command registry (``root.registry``):

- ``manhole``: a Python console inside the proxy, over SSH;
- ``jsonrpc``: JSON-RPC 2.0 on HTTP (``POST /rpc``), used by ``sipdisp-ctl``;
- ``metrics``: Prometheus ``/metrics`` on the same HTTP listener;
- ``web``: that HTTP listener, with its optional bearer token.

``add_management(root)`` registers the ``system.*`` commands and adds the
console and HTTP services to the service tree when the config enables them;
in a worker process of a node (``SIPDISP_WORKER``) it adds only the private
control socket (``control``), through which the supervisor answers for the
whole node.
"""

import inspect
import os


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


def register_worker_commands(registry, root, k):
    """``worker.*``: what the supervisor asks a worker besides its commands
    (their descriptions, its metrics, its number and pid)."""

    @registry.command("worker.info")
    def info() -> dict:
        """This worker's number and process id."""
        return {"worker": k, "pid": os.getpid()}

    @registry.command("worker.commands")
    def commands() -> list:
        """Every command's description and documentation (system.methodHelp of each)."""
        out = []
        for command in registry:
            item = command.describe()
            item["doc"] = inspect.getdoc(command.func) or command.help
            out.append(item)
        return out

    @registry.command("worker.metrics")
    def metrics() -> list:
        """This worker's metric families as [name, kind, help, [[labels, value]...]]."""
        from .metrics import MetricsCollector
        collector = getattr(root, "_worker_metrics", None)
        if collector is None:
            collector = root._worker_metrics = MetricsCollector(root)
        return [[f.name, f.kind, f.help, [[labels, value] for labels, value in f.samples]]
                for f in collector.families()]


def add_management(root, reactor=None):
    """Register ``system.*`` and attach the enabled console and HTTP services to
    ``root``; in a worker, the control socket instead."""
    register_system_commands(root.registry)
    cfg = root.cfg
    from .control import worker_environment
    worker = worker_environment()
    if worker is not None:
        from .control import ControlService
        k, path = worker
        register_worker_commands(root.registry, root, k)
        control = ControlService(root.registry, path, reactor)
        control.setServiceParent(root)
        return [control]
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
