"""SIGHUP reload: what can change is applied, the rest refused in one line."""

from pathlib import Path

from sipdisp.schema import load_config
from sipdisp.logs import get_level, set_level
from sipdisp.reload import Reloader, flatten


class FakeRoot:
    """Just what Reloader needs from SipdispService."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.reload_hooks = {}
        self.always_hooks = []


def _write(path, text):
    Path(path).write_text(text)
    return str(path)


def _reload(reloader):
    results = []
    reloader.reload().addCallback(results.append)
    assert results, "reload did not finish synchronously"
    return results[0]


def test_flatten_gives_dotted_keys():
    """Nested sections become dotted key paths."""
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_log_level_is_applied_and_listen_refused(tmp_path):
    """A changed log level is applied; a changed listen address is refused by name."""
    path = _write(tmp_path / "c.yaml", "log:\n  level: info\n")
    root = FakeRoot(load_config(path))
    reloader = Reloader(root, path)
    set_level("info")
    try:
        _write(path, "log:\n  level: debug\nlisten:\n  udp: ['127.0.0.1:5999']\n")
        line = _reload(reloader)
        assert get_level() == "debug"
        assert "applied log.level ('info' -> 'debug')" in line
        assert "needs a restart, not applied: listen.udp" in line
        assert root.cfg.log.level == "debug"
        assert root.cfg.listen.udp == [("127.0.0.1", 5060)]  # refused: unchanged
    finally:
        set_level("info")


def test_bad_file_keeps_running_configuration(tmp_path):
    """A reload of an invalid file is refused with one line naming the key."""
    path = _write(tmp_path / "c.yaml", "")
    root = FakeRoot(load_config(path))
    before = root.cfg
    _write(path, "sip:\n  t1: fast\n")
    line = _reload(Reloader(root, path))
    assert line.startswith("reload refused, configuration kept:")
    assert "sip.t1" in line and "\n" not in line
    assert root.cfg is before


def test_hooks_run_for_their_section_and_always_hooks_every_time(tmp_path):
    """A section hook gets the new config; always-hooks run even with no change."""
    path = _write(tmp_path / "c.yaml", "")
    root = FakeRoot(load_config(path))
    reloader = Reloader(root, path)
    seen, always = [], []
    root.reload_hooks["proxy"] = lambda cfg: seen.append(cfg.proxy.branch_timeout)
    root.always_hooks.append(lambda cfg: always.append(1) or "dispatcher sets re-read")
    line = _reload(reloader)
    assert seen == [] and always == [1]
    assert "no setting changed" in line and "dispatcher sets re-read" in line
    _write(path, "proxy:\n  branch_timeout: 3.5\n")
    line = _reload(reloader)
    assert seen == [3.5] and always == [1, 1]
    assert "applied proxy.branch_timeout (2.0 -> 3.5)" in line
