"""The route that ships, for tests: etc/sipdisp.yaml compiled onto a ProxyCore.

Tests of the core and the torture tests run this route, not a hand-written
copy of it, so what they check is what a default installation runs:

    core = ProxyCore([listener], None)
    dispatcher = shipped_route(core, ["sip:127.0.0.1:5080", "sip:127.0.0.1:5090"])

The next hops are the dispatcher's set 0, which the shipped DISPATCH block
selects round robin. The dispatcher is not started: no ping or load-sweep
timer joins the core's heap, so a test's clock only fires what the route and
the transactions armed.
"""

import copy
import functools
from pathlib import Path

from sipdisp.schema import config_from_dict, load_config
from sipdisp.dispatcher.service import dispatcher_from_config
from sipdisp.routing import Modules, build_routing
from sipdisp.shipped import shipped_functions

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "etc" / "sipdisp.yaml"

#: the sections of the shipped file the route and the dispatcher read; the
#: others (listen addresses, storage, console ...) belong to the service tree
ROUTE_SECTIONS = ("proxy", "routing", "dispatcher", "registrar", "auth", "nat")


@functools.lru_cache(maxsize=1)
def _shipped_sections():
    shipped = load_config(SHIPPED_CONFIG).as_dict()
    return {name: shipped[name] for name in ROUTE_SECTIONS}


def shipped_route(core, next_hops=("sip:127.0.0.1:5080",), *, branch_timeout=None,
                  failover_codes=None, now=0.0, **sections):
    """Compile the shipped etc/sipdisp.yaml route onto ``core`` (``core.route``),
    dispatching over ``next_hops`` (URIs) as set 0; returns the Dispatcher.

    ``branch_timeout`` and ``failover_codes`` set ``proxy.branch_timeout`` and
    ``proxy.failover_codes`` (what RTF_DISPATCH uses); ``sections`` override
    whole keys of other sections, e.g. ``registrar={"enabled": False}``.
    """
    raw = copy.deepcopy(_shipped_sections())
    raw.update({"console": {"enabled": False}, "http": {"enabled": False}})
    if branch_timeout is not None:
        raw["proxy"]["branch_timeout"] = branch_timeout
    if failover_codes is not None:
        raw["proxy"]["failover_codes"] = list(failover_codes)
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    cfg = config_from_dict(raw)
    dispatcher = dispatcher_from_config(cfg, core)
    dispatcher.load([{"setid": 0, "destination": uri, "flags": 0, "priority": 0, "attrs": ""}
                     for uri in next_hops], now)
    # the one place tests compile the shipped route: a change of build_routing's
    # signature is made here and nowhere else
    modules = modules_of(core)
    modules.dispatcher = dispatcher
    core.route = build_routing(cfg, shipped_functions(), modules, core).entry
    return dispatcher


def modules_of(core):
    """``core.modules``: the :class:`Modules` routes find subsystems in, made
    for a core a test built without one (the service tree passes its own)."""
    if core.modules is None:
        core.modules = Modules()
    return core.modules
