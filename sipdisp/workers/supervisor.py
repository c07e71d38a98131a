"""The supervisor of ``workers.processes`` > 1: spawns the worker processes,
restarts one that exits (with a backoff and a cap per minute), forwards
SIGHUP to them and stops them on stop. It does no SIP itself."""

import os
import sys
from collections import deque

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol

from ..logs import Logger
from . import CONTROL_ENV, WORKER_ENV, worker_count

log = Logger(namespace="sipdisp.workers")

#: the window of ``workers.restart_max``
RESTART_PERIOD = 60.0


def control_path(cfg, k):
    """Worker ``k``'s control socket (sipdisp/workers/control.py when present,
    else ``<var dir>/worker-<k>.ctl`` beside proxy.secret_file)."""
    try:
        from .control import worker_control_path
    except ImportError:
        var = os.path.dirname(cfg.proxy.secret_file) or "."
        return os.path.join(var, f"worker-{k}.ctl")
    return worker_control_path(cfg, k)


class RestartPolicy:
    """When a worker that exited starts again (sans-IO: fed times).

    The delay starts at ``delay``, doubles for each exit within ``window``
    seconds of the worker's start, up to ``delay_max``, and goes back to
    ``delay`` after a run longer than ``window``. At most ``max_per_minute``
    restarts of one worker fall within a minute: the next one waits until the
    oldest is a minute old."""

    def __init__(self, delay=1.0, delay_max=30.0, window=10.0, max_per_minute=10):
        self.delay = delay
        self.delay_max = delay_max
        self.window = window
        self.max_per_minute = max_per_minute
        self._started = {}
        self._quick_exits = {}
        self._restarts = {}

    def started(self, k, now):
        """Worker ``k`` started at ``now``."""
        self._started[k] = now

    def exited(self, k, now):
        """Worker ``k`` exited at ``now``: ``(delay, capped)``, the seconds to
        wait before its restart and whether the per-minute cap lengthened it."""
        ran = now - self._started.get(k, now)
        quick = self._quick_exits.get(k, 0) + 1 if ran < self.window else 0
        self._quick_exits[k] = quick
        delay = min(self.delay * (2 ** quick), self.delay_max)
        times = self._restarts.setdefault(k, deque())
        while times and times[0] <= now - RESTART_PERIOD:
            times.popleft()
        capped = False
        if len(times) >= self.max_per_minute:
            wait = times[-self.max_per_minute] + RESTART_PERIOD - now
            if wait > delay:
                delay, capped = wait, True
        times.append(now + delay)
        return delay, capped


class WorkerProtocol(ProcessProtocol):
    """One worker process; its output goes straight to the supervisor's
    stdout and stderr (the same log), so this only watches for the exit."""

    def __init__(self, supervisor, k):
        self.supervisor = supervisor
        self.k = k
        self.pid = None

    def connectionMade(self):
        self.pid = self.transport.pid
        self.transport.closeStdin()

    def processEnded(self, reason):
        self.supervisor.worker_ended(self, reason.value)

    def signal(self, name):
        """Send signal ``name`` (``TERM``, ``HUP``, ``KILL``); False if it is gone."""
        try:
            self.transport.signalProcess(name)
        except (ProcessExitedAlready, OSError):
            return False
        return True


class SupervisorService(Service):
    """Runs ``worker_count(cfg)`` worker processes of the configuration file
    ``config_path`` (``python -m sipdisp.workers -c FILE``) and keeps them running.

    ``spawn`` is ``reactor.spawnProcess`` (tests pass a fake); ``stats``
    counts ``started``, ``exits``, ``restarts`` and ``restarts_deferred``."""

    name = "workers"

    def __init__(self, cfg, config_path, reactor, spawn=None):
        self.cfg = cfg
        self.config_path = config_path
        self._reactor = reactor
        self._spawn = spawn or reactor.spawnProcess
        w = cfg.workers
        self.count = worker_count(cfg)
        self.policy = RestartPolicy(w.restart_delay, w.restart_delay_max, w.restart_window,
                                    w.restart_max)
        self.workers = {}  # k -> WorkerProtocol of the running process
        self._pending = {}  # k -> the delayed call restarting it
        self._stopped = None
        self._kill_call = None
        self.stats = {"started": 0, "exits": 0, "restarts": 0, "restarts_deferred": 0}

    def startService(self):
        super().startService()
        log.info("supervising {n} worker processes (workers.processes); this process does no SIP",
                 n=self.count)
        for k in range(1, self.count + 1):
            self.start_worker(k)

    def command(self, k):
        """The argument list of worker ``k``'s process."""
        return [sys.executable, "-m", "sipdisp.workers", "-c", self.config_path]

    def start_worker(self, k):
        """Spawn worker ``k`` (1..N)."""
        self._pending.pop(k, None)
        if not self.running:
            return
        env = dict(os.environ)
        env[WORKER_ENV] = str(k)
        env[CONTROL_ENV] = control_path(self.cfg, k)
        protocol = WorkerProtocol(self, k)
        args = self.command(k)
        self._spawn(protocol, args[0], args, env=env, childFDs={0: "w", 1: 1, 2: 2})
        self.workers[k] = protocol
        self.policy.started(k, self._reactor.seconds())
        self.stats["started"] += 1
        log.info("worker {k} started (pid {pid})", k=k, pid=protocol.pid)

    def worker_ended(self, protocol, status):
        """A worker process exited: restart it unless the supervisor stops."""
        k = protocol.k
        if self.workers.get(k) is protocol:
            del self.workers[k]
        self.stats["exits"] += 1
        code = getattr(status, "exitCode", None)
        sig = getattr(status, "signal", None)
        how = f"signal {sig}" if sig else f"exit code {code}"
        if not self.running:
            log.info("worker {k} (pid {pid}) stopped ({how})", k=k, pid=protocol.pid, how=how)
            if not self.workers and self._stopped is not None:
                d, self._stopped = self._stopped, None
                if self._kill_call is not None and self._kill_call.active():
                    self._kill_call.cancel()
                d.callback(None)
            return
        delay, capped = self.policy.exited(k, self._reactor.seconds())
        self.stats["restarts"] += 1
        if capped:
            self.stats["restarts_deferred"] += 1
            log.warn("worker {k} restarted {max} times within a minute (workers.restart_max); "
                     "next restart in {delay:.1f} s", k=k, max=self.cfg.workers.restart_max,
                     delay=delay)
        log.warn("worker {k} (pid {pid}) exited ({how}); restarting it in {delay:.1f} s",
                 k=k, pid=protocol.pid, how=how, delay=delay)
        self._pending[k] = self._reactor.callLater(delay, self.start_worker, k)

    def signal_workers(self, name):
        """Send signal ``name`` to every running worker (SIGHUP: each reloads)."""
        for protocol in list(self.workers.values()):
            protocol.signal(name)

    def reload(self):
        """Forward a SIGHUP to the workers."""
        log.info("SIGHUP: forwarded to {n} workers", n=len(self.workers))
        self.signal_workers("HUP")

    def stopService(self):
        super().stopService()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        if not self.workers:
            return None
        self._stopped = defer.Deferred()
        self.signal_workers("TERM")
        self._kill_call = self._reactor.callLater(self.cfg.workers.stop_timeout, self._kill)
        return self._stopped

    def _kill(self):
        log.warn("{n} workers still running {t} s after SIGTERM (workers.stop_timeout); "
                 "killing them", n=len(self.workers), t=self.cfg.workers.stop_timeout)
        self.signal_workers("KILL")


def register_supervisor_commands(registry, supervisor):
    """``workers.supervisor``: the supervisor's own counters and the pids it runs."""

    @registry.command("workers.supervisor")
    def status() -> dict:
        """Worker processes configured and running (by number: pid), and the
        supervisor's counters: started, exits, restarts, restarts_deferred."""
        return {"processes": supervisor.count,
                "running": {str(k): p.pid for k, p in sorted(supervisor.workers.items())},
                "restarts_pending": sorted(supervisor._pending), **supervisor.stats}
