"""Which build of the parser modules runs: the compiled one or pure Python.

``make accel`` (scripts/build_accel.py) compiles MODULES with mypyc in
place: an extension module beside each source, which Python would import
instead of it, and ``accel.sources``, the SHA-256 of each source it was
built from. :func:`choose`, run by ``sipdisp.sip`` before it imports them,
keeps the compiled modules only when all are there and every source still
matches; otherwise,
or with ``SIPDISP_PURE=1`` in the environment, a finder ahead of the
standard path finder loads the ``.py`` sources, so a stale build never runs and
the pure-Python path can be tested beside a built tree.
"""

import hashlib
import importlib.util
import json
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES, PathFinder
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: what parse_message pulls in, in import order (errors.py and this module
#: stay interpreted: an exception class and a decorator gain nothing)
MODULES = ("headers", "uri", "via", "address", "message", "parser")
STAMP = HERE / "accel.sources"
PACKAGE = __name__.rpartition(".")[0]


def source_hashes():
    """``{module: SHA-256 of its source}`` for MODULES."""
    return {name: hashlib.sha256((HERE / f"{name}.py").read_bytes()).hexdigest()
            for name in MODULES}


def compiled_modules():
    """The modules of MODULES with an extension this interpreter would import
    instead of the source (a build for another Python version does not count)."""
    return {name for name in MODULES for suffix in EXTENSION_SUFFIXES
            if (HERE / f"{name}{suffix}").exists()}


class PureFinder:
    """Finds MODULES as their ``.py`` sources, ahead of the compiled build."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        """The source spec of a parser module; None for anything else."""
        package, _, module = name.rpartition(".")
        if package == PACKAGE and module in MODULES:
            return importlib.util.spec_from_file_location(name, HERE / f"{module}.py")
        return None


def choose():
    """Decide the build before MODULES are imported; returns what runs:
    ``"compiled"`` or ``"pure"`` with the reason when a build is present."""
    compiled = compiled_modules()
    if not compiled:
        return "pure"
    if os.environ.get("SIPDISP_PURE", "") not in ("", "0"):
        reason = "pure (SIPDISP_PURE is set)"
    else:
        try:
            stamp = json.loads(STAMP.read_text())
        except (OSError, ValueError):
            stamp = None
        if stamp == source_hashes() and len(compiled) == len(MODULES):
            return "compiled"
        reason = "pure (the compiled build is stale or incomplete: make accel)"
    if not any(f is PureFinder for f in sys.meta_path):
        # just ahead of the standard path finder, behind any import hook
        # installed before (atheris's instrumentation asks the finders after
        # its own, and must get the source to instrument it)
        finders = sys.meta_path
        at = finders.index(PathFinder) if PathFinder in finders else len(finders)
        finders.insert(at, PureFinder)
    return reason
