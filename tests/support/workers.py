"""sipdisp with ``workers.processes`` > 1 for integration tests: the
supervisor started as an operator starts it (``twistd -n sipdisp``), its
workers' pids and own ports read from the shared log. Every wait is bounded."""

import os
import re
import signal
import socket
import time

from .processes import Sipdisp

_STARTED_RE = re.compile(r"worker (\d+) started \(pid (\d+)\)")
_RUNNING = "sipdisp proxy running"


def free_udp_tcp_port(offset, workers, tries=200):
    """A port free for UDP and TCP on 127.0.0.1, whose worker ports
    (port + ``offset`` + 1..``workers``) are free too."""
    for _ in range(tries):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        wanted = [port] + [port + offset + k for k in range(1, workers + 1)]
        if wanted[-1] < 65536 and all(_free(p) for p in wanted):
            return port
    raise RuntimeError("no free port with free worker ports")


def _free(port):
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            s.close()
    return True


class Workers(Sipdisp):
    """A supervisor of ``processes`` workers on one public UDP/TCP port;
    ``worker_port(k)`` is worker k's own port, ``pids()`` the live pids."""

    def __init__(self, tmp_path, config, processes=2, offset=100):
        self.processes = processes
        self.offset = offset
        self.public = free_udp_tcp_port(offset, processes)
        base = {"listen": {"udp": [f"127.0.0.1:{self.public}"],
                           "tcp": [f"127.0.0.1:{self.public}"], "ws": []},
                "workers": {"processes": processes, "port_offset": offset,
                            "restart_delay": 0.5},
                # the workers share the management listeners' addresses otherwise
                "console": {"enabled": False}, "http": {"enabled": False}}
        for key, value in config.items():
            base[key] = dict(base.get(key, {}), **value) if isinstance(value, dict) else value
        super().__init__(tmp_path, base)

    def start(self, timeout=40):
        """Start the supervisor and wait until every worker runs."""
        super().start(timeout)
        self.wait_running(self.processes, timeout)
        return self

    def wait_running(self, count, timeout=40):
        """Wait until the log says ``count`` workers are running in all (restarts included)."""
        deadline = time.monotonic() + timeout
        while self.log_text().count(_RUNNING) < count:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{count} workers not running:\n{self.log_text()[-4000:]}")
            time.sleep(0.1)

    def port(self, proto):
        """The public (shared) port."""
        return self.public

    def worker_port(self, k):
        """Worker ``k``'s own UDP/TCP port."""
        return self.public + self.offset + k

    def pids(self):
        """{worker number: pid} of the latest start of each worker."""
        out = {}
        for m in _STARTED_RE.finditer(self.log_text()):
            out[int(m.group(1))] = int(m.group(2))
        return out

    def starts(self, k):
        """How many times worker ``k`` was started."""
        return sum(1 for m in _STARTED_RE.finditer(self.log_text()) if int(m.group(1)) == k)

    def kill9(self, k):
        """SIGKILL worker ``k``, as a crash would."""
        os.kill(self.pids()[k], signal.SIGKILL)

    def alive(self, pid):
        """True if ``pid`` still runs (and is not a zombie)."""
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False
