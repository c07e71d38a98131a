"""The optional compiled parser (``make accel``): which build runs, and the
guards that keep a stale or unwanted build from running."""

import json
import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import sipdisp.sip as sip
from sipdisp.sip import _build

ROOT = Path(__file__).resolve().parents[2]
SIP = ROOT / "sipdisp" / "sip"


def _files():
    import importlib
    return {name: importlib.import_module(f"sipdisp.sip.{name}").__file__ for name in _build.MODULES}


def test_every_parser_module_comes_from_the_same_build():
    """Compiled or not, the parser modules are never mixed."""
    files = _files()
    if sip.BUILD == "compiled":
        assert all(f.endswith(".so") for f in files.values()), files
    else:
        assert sip.BUILD.startswith("pure")
        assert all(f.endswith(".py") for f in files.values()), files


def _run(code, cwd, **env):
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(cwd), **env), timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


REPORT = ("import sipdisp.sip as s, sipdisp.sip.parser as p, sipdisp.sip.uri as u;"
          "print(s.BUILD, p.__file__.rsplit('.', 1)[1], u.__file__.rsplit('.', 1)[1])")


def test_sipdisp_pure_loads_the_sources():
    """SIPDISP_PURE=1 runs the pure-Python modules whether or not a build is there."""
    assert _run(REPORT, ROOT, SIPDISP_PURE="1").split()[-2:] == ["py", "py"]


@pytest.fixture
def tree(tmp_path):
    """A copy of sipdisp.sip's sources with a (fake) compiled parser beside them."""
    pkg = tmp_path / "sipdisp" / "sip"
    pkg.mkdir(parents=True)
    (tmp_path / "sipdisp" / "__init__.py").write_text("")
    for path in SIP.glob("*.py"):
        shutil.copy(path, pkg / path.name)
    # not a loadable module: importing it would fail, so a test passing
    # proves the guard kept it out
    for name in _build.MODULES:
        (pkg / f"{name}{EXTENSION_SUFFIXES[0]}").write_bytes(b"not an ELF file")
    return tmp_path


def test_a_stale_build_is_not_run(tree):
    """A source that no longer matches the stamp brings back the pure modules."""
    stamp = {name: "0" * 64 for name in _build.MODULES}
    (tree / "sipdisp" / "sip" / "accel.sources").write_text(json.dumps(stamp))
    out = _run(REPORT, tree, SIPDISP_PURE="")
    assert "stale" in out and out.endswith("py py")


def test_no_stamp_is_a_stale_build(tree):
    """A build without its stamp is not trusted either."""
    out = _run(REPORT, tree, SIPDISP_PURE="")
    assert "stale" in out and out.endswith("py py")


def test_a_matching_stamp_chooses_the_compiled_build(tree):
    """With every source matching, the chooser keeps the build (checked without
    importing the fake extension)."""
    code = ("import importlib.util as u;"
            "s = u.spec_from_file_location('b', 'sipdisp/sip/_build.py');"
            "m = u.module_from_spec(s); s.loader.exec_module(m);"
            "import json; m.STAMP.write_text(json.dumps(m.source_hashes()));"
            "print(m.choose())")
    assert _run(code, tree, SIPDISP_PURE="") == "compiled"
    assert _run(code, tree, SIPDISP_PURE="1") == "pure (SIPDISP_PURE is set)"


def test_an_incomplete_build_is_not_run(tree):
    """One compiled module missing: the sources run, not a mix of both."""
    pkg = tree / "sipdisp" / "sip"
    (pkg / f"via{EXTENSION_SUFFIXES[0]}").unlink()
    code = ("import importlib.util as u;"
            "s = u.spec_from_file_location('b', 'sipdisp/sip/_build.py');"
            "m = u.module_from_spec(s); s.loader.exec_module(m);"
            "import json; m.STAMP.write_text(json.dumps(m.source_hashes()));"
            "print(m.choose())")
    assert "incomplete" in _run(code, tree, SIPDISP_PURE="")
    out = _run(REPORT, tree, SIPDISP_PURE="")
    assert "incomplete" in out and out.endswith("py py")


def test_a_build_for_another_python_is_not_counted(tmp_path):
    """Extensions for another interpreter's ABI are not what this one imports."""
    pkg = tmp_path / "sipdisp" / "sip"
    pkg.mkdir(parents=True)
    (tmp_path / "sipdisp" / "__init__.py").write_text("")
    for path in SIP.glob("*.py"):
        shutil.copy(path, pkg / path.name)
    for name in _build.MODULES:
        (pkg / f"{name}.cpython-20-x86_64-linux-gnu.so").write_bytes(b"other ABI")
    assert _run(REPORT, tmp_path, SIPDISP_PURE="") == "pure py py"


VERDICTS = r'''
import hashlib, sys
from pathlib import Path
import sipdisp.sip as sip
from sipdisp.sip import SipParseError, StreamFramer, parse_address, parse_message

def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except SipParseError as exc:
        salvage = exc.message.to_bytes() if exc.message is not None else None
        return ("error", exc.status, exc.reason, exc.limit, salvage)

def summary(msg):
    via = msg.via
    head = (msg.method, str(msg.uri)) if msg.is_request else (msg.status, msg.reason)
    return (head, msg.to_bytes(), msg.call_id, msg.cseq, msg.cseq_method, msg.from_tag,
            msg.to_tag, str(via), via.branch, via.host, via.port, via.response_address(),
            [outcome(lambda v: str(parse_address(v)), v)
             for k in ("from", "to", "contact", "route", "record-route") for v in msg.values(k)])

def framed(data):
    framer, out = StreamFramer(), []
    for chunk in (data[:len(data) // 2], data[len(data) // 2:], b""):
        out.append(outcome(framer.feed, chunk))
    return out

lines = [sip.BUILD.split()[0]]
for path in sorted(Path(sys.argv[1]).rglob("*.dat")):
    data = path.read_bytes()
    for datagram in (True, False):
        kind, *rest = outcome(parse_message, data, 65535, datagram)
        verdict = (kind, summary(rest[0])) if kind == "ok" else (kind, *rest)
        lines.append(f"{path.name} {datagram} {verdict!r}")
    lines.append(f"{path.name} framed {framed(data)!r}")
print(hashlib.sha256("\n".join(lines[1:]).encode()).hexdigest(), lines[0], len(lines) - 1)
'''


def test_both_builds_give_the_same_verdicts():
    """Every torture-corpus message, as a datagram, as a stream frame and cut
    in two for the framer, gets the same result from the build in use as
    from the pure-Python modules: the parsed fields, the bytes it
    serialises to, the addresses, or the error, its status and salvage."""
    corpus = str(ROOT / "tests" / "data" / "sip-torture")
    pure = _run(VERDICTS.replace("sys.argv[1]", repr(corpus)), ROOT, SIPDISP_PURE="1").split()
    # the build this process runs (SIPDISP_PURE as it was given to it)
    here = _run(VERDICTS.replace("sys.argv[1]", repr(corpus)), ROOT,
                SIPDISP_PURE=os.environ.get("SIPDISP_PURE", "")).split()
    assert pure[1] == "pure" and here[1] == sip.BUILD.split()[0]
    assert int(pure[2]) > 100
    assert here[0] == pure[0] and here[2] == pure[2]
