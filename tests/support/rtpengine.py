"""A real rtpengine daemon for tests: Debian's ``rtpengine`` in user space
(no kernel module: ``--table=-1``), ng on a free loopback port, its own
media port range, deletes at once (``--delete-delay=0``) so a test can see
a session gone; and a tiny ng client to ask it ``list`` and ``query``."""

import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from sipdisp.rtpengine.bencode import decode, encode
from tests.support.processes import free_port

_cookies = itertools.count(1)


def rtpengine_available():
    """True when the rtpengine daemon is installed (.ci/run installs rtpengine-daemon)."""
    return shutil.which("rtpengine") is not None


needs_rtpengine = pytest.mark.skipif(
    not rtpengine_available(),
    reason="rtpengine is not installed (apt-get install rtpengine-daemon); .ci/run installs it")


class RtpengineDaemon:
    """One rtpengine process; ``ng(command_dict)`` talks to it directly."""

    def __init__(self, tmp_path, name="rtpengine"):
        self.tmp_path = Path(tmp_path)
        self.name = name
        self.ng_port = free_port()
        # a media range of its own, away from the ephemeral ports other tests use
        self.port_min = random.randrange(20000, 30000, 200)
        self.port_max = self.port_min + 199
        self.log_path = self.tmp_path / f"{name}.log"
        self.proc = None

    @property
    def url(self):
        """The ``rtpengine.sockets`` entry of this instance."""
        return f"udp:127.0.0.1:{self.ng_port}"

    def start(self, timeout=15):
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            # --config-file=none: not the system's /etc/rtpengine/rtpengine.conf
            # (its fixed CLI and HTTP ports would collide between instances)
            ["rtpengine", "--config-file=none", "--foreground", "--log-stderr", "--table=-1",
             "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{self.ng_port}",
             f"--port-min={self.port_min}", f"--port-max={self.port_max}",
             "--delete-delay=0", "--log-level=6", "--num-threads=2"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.tmp_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rtpengine exited {self.proc.returncode}:\n"
                                   f"{self.log_path.read_text()[-2000:]}")
            try:
                if self.ng({"command": "ping"}, timeout=0.5).get("result") == "pong":
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"rtpengine did not answer a ping:\n{self.log_path.read_text()[-2000:]}")

    def ng(self, command, timeout=3.0):
        """Send one ng command, return the reply dict (OSError on timeout)."""
        cookie = f"t{os.getpid()}_{next(_cookies)}".encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(cookie + b" " + encode(command), ("127.0.0.1", self.ng_port))
            while True:
                data = s.recv(65535)
                got, _, payload = data.partition(b" ")
                if got == cookie:
                    return decode(payload)

    def calls(self):
        """The Call-IDs rtpengine has sessions for now."""
        return list(self.ng({"command": "list", "limit": 100000}).get("calls", []))

    def kill(self):
        """Stop it hard, as a crash would (no goodbye to anyone)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

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
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.stop()
