"""Build the optional compiled SIP parser in place (``make accel``).

mypyc compiles the parser modules of sipdisp/sip (``_build.MODULES``) from
the same source the pure-Python path runs: each ``X.py`` gets an
``X.<abi>.so`` beside it, which Python imports in its place, plus one shared
runtime library, ``sipdisp/sip/accel__mypyc.<abi>.so``, and
``sipdisp/sip/accel.sources``, the SHA-256 of each source built (see
sipdisp/sip/_build.py: a source edited since the build brings the
pure-Python modules back).

Needs mypy (a build dependency only: the compiled modules import nothing
from it) and a C compiler. ``python scripts/build_accel.py clean`` removes
the build.
"""

import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUP = "sipdisp.sip.accel"


def _build_module():
    # the chooser alone, without importing the package (which would import
    # the modules being built)
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "sipdisp_accel_build", ROOT / "sipdisp" / "sip" / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean():
    """Remove the compiled modules, the runtime library, the stamp and the C files."""
    b = _build_module()
    for path in b.HERE.glob("*.so"):
        if path.name.split(".", 1)[0] in b.MODULES + ("accel__mypyc",):
            path.unlink()
    b.STAMP.unlink(missing_ok=True)
    shutil.rmtree(ROOT / "build" / "accel", ignore_errors=True)


def build():
    """Compile the modules in place and write the stamp."""
    from mypyc.build import mypycify
    from setuptools import setup

    b = _build_module()
    clean()
    hashes = b.source_hashes()
    paths = [f"sipdisp/sip/{name}.py" for name in b.MODULES]
    setup(name="sipdisp-accel",
          ext_modules=mypycify(paths, group_name=GROUP, target_dir="build/accel"),
          script_args=["build_ext", "--inplace", "--build-temp", "build/accel/temp",
                       "--build-lib", "build/accel/lib"])
    if b.source_hashes() != hashes:
        clean()
        raise SystemExit("the sources changed during the build; run it again")
    b.STAMP.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    os.chdir(ROOT)
    if sys.argv[1:] == ["clean"]:
        clean()
    else:
        build()
