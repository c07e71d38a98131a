"""Operating a running sipdisp: SIGHUP reload and JSON logs."""

import json
import signal
import time

import yaml

from tests.support.processes import Sipdisp


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sighup_applies_log_level_and_refuses_listen_change(tmp_path):
    """SIGHUP re-reads the file: one line says what was applied and what needs a restart."""
    with Sipdisp(tmp_path, {"log": {"level": "info"}}) as proxy:
        cfg = yaml.safe_load(proxy.config_path.read_text())
        cfg["log"]["level"] = "warn"
        cfg["listen"]["udp"] = ["127.0.0.1:0", "127.0.0.1:0"]
        proxy.config_path.write_text(yaml.safe_dump(cfg))
        proxy.proc.send_signal(signal.SIGHUP)
        assert _wait_for(lambda: "reload:" in proxy.log_text()), proxy.log_text()[-2000:]
        lines = [line for line in proxy.log_text().splitlines() if "reload:" in line]
        assert len(lines) == 1
        assert "applied log.level ('info' -> 'warn')" in lines[0]
        assert "needs a restart, not applied: listen.udp" in lines[0]
        assert proxy.proc.poll() is None  # still serving


def test_sighup_with_broken_file_keeps_running(tmp_path):
    """A broken file on SIGHUP is refused in one line naming the key; sipdisp keeps running."""
    with Sipdisp(tmp_path, {}) as proxy:
        proxy.config_path.write_text(proxy.config_path.read_text() + "\nbogus_section: 1\n")
        proxy.proc.send_signal(signal.SIGHUP)
        assert _wait_for(lambda: "reload refused" in proxy.log_text()), proxy.log_text()[-2000:]
        line = [ln for ln in proxy.log_text().splitlines() if "reload refused" in ln][0]
        assert "bogus_section" in line
        assert proxy.proc.poll() is None


def test_json_log_output(tmp_path):
    """With --logger=sipdisp.logs.json_observer every log line is one JSON object."""
    with Sipdisp(tmp_path, {}, twistd_args=["--logger=sipdisp.logs.json_observer"]) as proxy:
        pass
    lines = [line for line in proxy.log_text().splitlines() if line.strip()]
    events = []
    for line in lines:
        text = line.strip().lstrip("\x1e")  # jsonFileLogObserver separates records with RS
        if text:
            events.append(json.loads(text))
    formats = [e.get("log_format", "") for e in events]
    assert any(f.startswith("sipdisp proxy running") for f in formats)
    assert any(f.startswith("listening on") for f in formats)
