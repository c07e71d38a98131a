"""The import structure of sipdisp/: every import between packages goes down
the declared layer order, and the low layers load no subsystem.

The order (README, "Architecture"): the base (logs, commands, config ...),
then sip -> transaction -> proxy -> storage -> routing -> probing -> the
subsystems (auth, accounting, dialog, registrar, dispatcher, loadbalancer,
each allowed the ones before it), the edge (dns, transport, console) beside them,
and on top the assembly (shipped, schema, service, tap, cli ...).
"""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "sipdisp"

BASE = ["sipdisp", "logs", "commands", "nodesecret", "collector", "config"]
CORE = ["sip", "transaction", "proxy", "storage", "routing", "probing"]
SUBSYSTEMS = ["auth", "accounting", "dialog", "registrar", "dispatcher", "loadbalancer", "cache", "drouting", "msilo", "aliases", "dialplan", "flood", "rtpengine", "topoh", "presence", "shared"]
TOP = ["shipped", "routedocs", "schema", "reload", "service", "tap", "cli", "ctl"]


def _below(order, name):
    return set(order[:order.index(name)])


#: package (or top-level module) -> what it may import besides itself
MAY_IMPORT = {}
for _name in BASE:
    MAY_IMPORT[_name] = _below(BASE, _name)
for _name in CORE:
    MAY_IMPORT[_name] = set(BASE) | _below(CORE, _name)
for _name in SUBSYSTEMS:
    MAY_IMPORT[_name] = set(BASE) | set(CORE) | _below(SUBSYSTEMS, _name)
# dns/: the RFC 3263 procedure and its cache (sans-IO) with the Twisted
# resolver driving them; the core gets it injected (core.resolver) and never
# imports it, so it sits at the edge and needs only the base
MAY_IMPORT["dns"] = set(BASE)
MAY_IMPORT["transport"] = set(BASE) | {"sip", "transaction", "proxy"}
MAY_IMPORT["console"] = set(BASE)
# the worker processes' supervisor and each worker's control socket (console's front-ends)
MAY_IMPORT["workers"] = set(BASE) | {"console"}
for _name in TOP:
    MAY_IMPORT[_name] = set(MAY_IMPORT) | set(TOP)


def _unit(module):
    """``sipdisp.proxy.core`` -> ``proxy``; ``sipdisp.service`` -> ``service``; ``sipdisp`` -> ``sipdisp``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name):
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def import_edges():
    """``(importing file, importing unit, imported unit, imported module)`` for
    every import of a sipdisp module anywhere in sipdisp/, lazy ones included."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[:len(package) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # "from .. import x" may name a module: count it under its own unit
                targets = [f"{stem}.{alias.name}" if _is_module(f"{stem}.{alias.name}") else stem
                           for alias in node.names]
            else:
                continue
            for target in targets:
                if target == "sipdisp" or target.startswith("sipdisp."):
                    edges.append((path.relative_to(ROOT), _unit(module), _unit(target), target))
    return edges


def test_every_unit_has_a_declared_place():
    """Each package and top-level module of sipdisp/ is in the layer order."""
    units = {_unit(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert sorted(units - set(MAY_IMPORT)) == []


def test_imports_follow_the_layer_order():
    """No import goes up or sideways against the declared order."""
    wrong = [f"{path}: {src} imports {target}" for path, src, dst, target in import_edges()
             if dst != src and dst not in MAY_IMPORT.get(src, set())]
    assert wrong == []


def test_the_walk_sees_the_imports_it_judges():
    """The import walk finds known edges, so an empty list of wrong ones means something."""
    edges = {(src, dst) for _, src, dst, _ in import_edges()}
    assert {("proxy", "transaction"), ("transaction", "sip"), ("registrar", "auth"),
            ("service", "registrar"), ("shipped", "dialog")} <= edges
    assert "routing" not in MAY_IMPORT["proxy"] and "registrar" not in MAY_IMPORT["auth"]


def _loaded(module):
    code = (f"import {module}, sys; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('sipdisp'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return {_unit(m) for m in out.split()}


def test_importing_config_or_routing_loads_no_subsystem():
    """import sipdisp.config and import sipdisp.routing pull in no subsystem, edge or
    assembly module: only what their layer may import."""
    for module in ("sipdisp.config", "sipdisp.routing"):
        unit = _unit(module)
        assert sorted(_loaded(module) - MAY_IMPORT[unit] - {unit}) == [], module
