"""Routing configuration: the declarative YAML route in Kamailio's vocabulary
(compiled once into closures), or a Python request route.

    routing = build_routing(cfg, functions, modules, core)
    core.route = routing.entry          # the function the core calls per request

``functions`` is the :class:`FunctionTable` the route may call and
``modules`` the running subsystems (:class:`Modules`); the service tree
builds both (``sipdisp.shipped.shipped_functions()``: the core's functions
and every subsystem's ``register``). The plugin API for subsystems is
:mod:`sipdisp.routing.plugin`. Importing this package imports no subsystem.

See docs/routing.md for the vocabulary and the built-in (seed) route.
"""

import importlib
import re

from ..config.model import ConfigError
from .compiler import EXIT, RETURN, Env, FailureRoute, Routing, compile_routing
from .default import DEFAULT_ROUTING_YAML, default_routing
from .plugin import FunctionTable, Modules, RouteError

_MODULE_RE = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*\Z")


def routing_spec(cfg):
    """The spec to compile from ``cfg.routing``: the built-in route when
    ``request_route`` is null, with ``routes``, ``failure_routes``,
    ``onreply_routes`` and ``branch_routes`` from the config added or
    replacing built-in ones of the same name."""
    section = cfg.routing
    if section.request_route is None:
        spec = default_routing()
    else:
        spec = {"request_route": section.request_route, "routes": {}, "failure_routes": {}}
    spec["routes"].update(section.routes or {})
    spec["failure_routes"].update(section.failure_routes or {})
    spec.setdefault("onreply_routes", {}).update(section.onreply_routes or {})
    spec.setdefault("branch_routes", {}).update(section.branch_routes or {})
    return spec


def check_module_name(text):
    """ConfigError unless ``text`` looks like ``package.module:function``."""
    if not _MODULE_RE.match(text or ""):
        raise ConfigError("routing.module", f"{text!r} is not package.module:function")


def load_module_route(text):
    """Import ``package.module:function`` and return the function; ConfigError if it cannot."""
    check_module_name(text)
    module_name, _, attr = text.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError("routing.module", f"cannot import {module_name}: {exc}") from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise ConfigError("routing.module", f"{module_name} has no function {attr}")
    return func


def build_routing(cfg, functions, modules=None, core=None):
    """Compile the configured routing against the function table
    ``functions`` and the running ``modules``. Returns the :class:`Routing`,
    whose ``entry`` is the request route to give the core (the Python
    function of ``routing.module`` when set). The routing is also
    ``modules.routing``, so Python routes can call YAML routes."""
    modules = modules if modules is not None else Modules()
    routing = compile_routing(routing_spec(cfg), Env(functions, modules, cfg, core))
    routing.entry = routing.request_route
    if cfg.routing.module:
        routing.entry = load_module_route(cfg.routing.module)
    modules.routing = routing
    return routing


def validate_routing(cfg, functions):
    """Compile the configured routing against ``functions`` without running
    modules (a configuration check)."""
    compile_routing(routing_spec(cfg), Env(functions, config=cfg))
    if cfg.routing.module:
        check_module_name(cfg.routing.module)


__all__ = ["EXIT", "RETURN", "Env", "FailureRoute", "FunctionTable", "Modules", "Routing",
           "RouteError", "build_routing", "compile_routing", "default_routing",
           "routing_spec", "validate_routing", "DEFAULT_ROUTING_YAML"]
