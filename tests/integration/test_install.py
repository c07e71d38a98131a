"""
The working tree is runnable by twistd, and a regular install ships both the
sipdisp packages and the twistd plugin file.
"""

import importlib.metadata
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGIN = os.path.join("twisted", "plugins", "sipdisp_plugin.py")
NO_PLUGIN = f"{PLUGIN} is not written yet (the lead adds it); nothing to discover"

LIST_TAPNAMES = (
    "from twisted.plugin import getPlugins\n"
    "from twisted.application.service import IServiceMaker\n"
    "for p in getPlugins(IServiceMaker):\n"
    "    print(p.tapname)\n"
)


def tapnames(path_entry, cwd):
    """Run a fresh interpreter with C{path_entry} first on PYTHONPATH and list twistd plugins."""
    env = dict(os.environ, PYTHONPATH=path_entry)
    result = subprocess.run([sys.executable, "-c", LIST_TAPNAMES], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split(), result.stderr


def have_build_requirements():
    """True when setuptools>=61 and wheel are importable, so no isolated build env is needed."""
    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
        importlib.metadata.version("wheel")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return major >= 61


def python_files(top):
    found = set()
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        found.update(os.path.relpath(os.path.join(dirpath, f), top)
                     for f in filenames if f.endswith(".py"))
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """
    A regular, non-editable C{pip install --target} of a copy of the working
    tree.  The copy keeps setuptools' build/ and *.egg-info out of the shared
    tree.
    """
    base = tmp_path_factory.mktemp("install")
    source, target = base / "source", base / "target"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    for name in ("sipdisp", "twisted"):
        if os.path.isdir(os.path.join(ROOT, name)):
            shutil.copytree(os.path.join(ROOT, name), source / name, ignore=ignore)
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input",
               "--disable-pip-version-check", "--target", str(target), str(source)]
    if have_build_requirements():
        command.insert(4, "--no-build-isolation")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(command, cwd=base, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return str(target)


def test_working_tree_plugin_is_found_by_twistd():
    """With the repository root on PYTHONPATH, twistd's plugin scan finds the tapname sipdisp."""
    if not os.path.exists(os.path.join(ROOT, PLUGIN)):
        pytest.skip(NO_PLUGIN)
    names, stderr = tapnames(ROOT, cwd=os.path.dirname(ROOT))
    assert "sipdisp" in names, stderr


def test_install_ships_every_sipdisp_module(installed):
    """A regular install contains every Python file of the sipdisp package tree and no tests."""
    assert python_files(os.path.join(ROOT, "sipdisp")) <= python_files(os.path.join(installed, "sipdisp"))
    assert os.path.isfile(os.path.join(installed, "sipdisp", "schema.py"))
    assert not os.path.exists(os.path.join(installed, "tests"))


def test_install_does_not_claim_twisted_packages(installed):
    """The install adds no __init__.py to twisted/ or twisted/plugins/, which belong to Twisted."""
    assert not os.path.exists(os.path.join(installed, "twisted", "__init__.py"))
    assert not os.path.exists(os.path.join(installed, "twisted", "plugins", "__init__.py"))


def test_install_has_console_scripts(installed):
    """The sipdisp and sipdisp-ctl commands are installed."""
    assert os.path.isfile(os.path.join(installed, "bin", "sipdisp"))
    assert os.path.isfile(os.path.join(installed, "bin", "sipdisp-ctl"))


def test_install_ships_the_plugin(installed):
    """A regular install contains twisted/plugins/sipdisp_plugin.py, and twistd finds it there."""
    if not os.path.exists(os.path.join(ROOT, PLUGIN)):
        pytest.skip(NO_PLUGIN)
    with open(os.path.join(ROOT, PLUGIN), "rb") as f:
        expected = f.read()
    with open(os.path.join(installed, PLUGIN), "rb") as f:
        assert f.read() == expected
    names, stderr = tapnames(installed, cwd=os.path.dirname(installed))
    assert "sipdisp" in names, stderr
