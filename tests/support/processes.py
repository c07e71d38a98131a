"""Real peers for integration tests: sipdisp under twistd, and SIPp."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "tests" / "integration" / "scenarios"
_LISTEN_RE = re.compile(r"listening on (\w+):(\S+):(\d+)$")


def free_port(kind=socket.SOCK_DGRAM):
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        try:
            with socket.socket(socket.AF_INET, other) as s:
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


def free_udp_block(count=4):
    """The first of ``count`` consecutive UDP ports free on 127.0.0.1 right
    now: SIPp binds its media port and the ports after it (RTCP, video)."""
    for _ in range(50):
        base = free_port()
        socks = []
        try:
            for offset in range(count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free block of UDP ports")


class Sipdisp:
    """sipdisp started the way an operator starts it: ``twistd -n sipdisp -c FILE``.

    Listen ports default to 0; the bound ones are read from the log into
    ``ports[(proto)] = [port, ...]``."""

    def __init__(self, tmp_path, config, twistd_args=()):
        self.tmp_path = Path(tmp_path)
        self.twistd_args = list(twistd_args)
        cfg = {"listen": {"udp": ["127.0.0.1:0"], "tcp": ["127.0.0.1:0"],
                          "ws": ["127.0.0.1:0"]},
               "storage": {"url": f"sqlite:///{self.tmp_path / 'sipdisp.db'}",
                           "spool_dir": str(self.tmp_path / "spool")},
               # management listeners on free ports, so parallel runs never collide
               "console": {"listen": "127.0.0.1:0",
                           "host_key": str(self.tmp_path / "manhole_host_key")},
               "http": {"listen": "127.0.0.1:0"}}
        _merge(cfg, config)
        self.config_path = self.tmp_path / "sipdisp.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.log_path = self.tmp_path / "sipdisp.log"
        self.ports = {}
        self.proc = None

    def start(self, timeout=20):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.ports = {}  # a restart binds new ports (port 0)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", *self.twistd_args, "sipdisp", "-c", str(self.config_path)],
            cwd=self.tmp_path, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text()
            if "sipdisp proxy running" in text:
                for line in text.splitlines():
                    m = _LISTEN_RE.search(line)
                    if m:
                        self.ports.setdefault(m.group(1), []).append(int(m.group(3)))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"sipdisp exited {self.proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sipdisp did not start:\n{self.log_path.read_text()[-3000:]}")

    def port(self, proto):
        """The first bound port of ``proto``."""
        return self.ports[proto][0]

    def log_text(self):
        """Everything sipdisp logged so far."""
        return self.log_path.read_text()

    def rr_signature(self, call_id, tag):
        """The ``sdsig`` this sipdisp writes into Record-Route for a dialog, from
        the node secret it created on first start (proxy.secret_file)."""
        from sipdisp.proxy import ProxyCore
        secret = (self.tmp_path / "var" / "node_secret").read_bytes().strip()
        return ProxyCore([], None, secret=secret).rr_signature(call_id, tag)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self):
        # already started (e.g. by a helper that waited for it): do not start twice
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc):
        self.stop()


def _merge(base, extra):
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def rss_kib(pid):
    """Resident set size of process ``pid`` in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def sipp_available():
    """True if the sipp binary is installed."""
    return shutil.which("sipp") is not None


class Sipp:
    """One SIPp process with its statistics file."""

    def __init__(self, tmp_path, name, scenario, port, transport="u1", target=None,
                 extra=()):
        self.stat_file = Path(tmp_path) / f"{name}_stats.csv"
        self.err_file = Path(tmp_path) / f"{name}_err.log"
        self.out_file = Path(tmp_path) / f"{name}.out"
        scen = SCENARIOS / scenario if not str(scenario).startswith("/") else scenario
        self.argv = (["sipp"] + ([target] if target else []) +
                     ["-sf", str(scen), "-i", "127.0.0.1", "-p", str(port), "-t", transport,
                      "-mi", "127.0.0.1", "-mp", str(free_udp_block()), "-cp", str(free_port()),
                      "-nostdin", "-trace_stat", "-stf", str(self.stat_file), "-fd", "1",
                      "-trace_err", "-error_file", str(self.err_file)]
                     + [str(x) for x in extra])
        self.proc = None

    def start(self):
        self._out = open(self.out_file, "w")
        self.proc = subprocess.Popen(self.argv, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        return self

    def wait(self, timeout):
        """Wait for SIPp to exit by itself (bounded); kill it past ``timeout``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        finally:
            self._out.close()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # SIPp: quit gracefully
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def stats(self):
        """The last row of SIPp's -trace_stat file as a dict of counters."""
        lines = [line for line in self.stat_file.read_text().splitlines() if line.strip()]
        row = dict(zip(lines[0].split(";"), lines[-1].split(";")))

        def num(key):
            return int(float(row.get(key) or 0))

        return {"created": num("TotalCallCreated"), "ok": num("SuccessfulCall(C)"),
                "failed": num("FailedCall(C)"), "retrans": num("Retransmissions(C)"),
                "incoming": num("IncomingCall(C)"), "out_of_call": num("OutOfCallMsgs(C)"),
                "dead_call": num("DeadCallMsgs(C)")}

    def errors(self):
        """SIPp's error log, if any, and the end of what it printed (why it
        stopped when it could not start)."""
        text = self.err_file.read_text() if self.err_file.exists() else ""
        if self.out_file.exists():
            text += "\n--- sipp output ---\n" + self.out_file.read_text(errors="replace")[-1500:]
        return text
