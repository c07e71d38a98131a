"""
The C{workers} section: several worker processes on one machine (issue 16),
each a cluster node sharing the public listeners (README "Worker processes").
"""

from ..config.model import Bool, ConfigError, Int, Key, Seconds, Section, Type


class Processes(Type):
    """A count of processes: an integer >= 1, or ``auto`` (one per CPU)."""

    expected = "an integer >= 1 or \"auto\""

    def parse(self, value, where):
        """The integer, or the string ``auto``."""
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.wrong(value, where)
        return value

    def describe(self):
        """The type's name in docs/configuration.md."""
        return "int (>= 1) or auto"


WORKERS = Section(
    "workers",
    "Worker processes on one machine: with processes > 1 the started process supervises that many workers, each binding the public listeners with SO_REUSEPORT and sharing state as a cluster node through Redis (README \"Worker processes\").",
    Key("processes", Processes(), 1,
        "Worker processes; 1: sipdisp runs in one process as before; auto: one per CPU (os.cpu_count()). More than 1 needs cluster.redis and usrloc.shared_url and a storage that is not memory://."),
    Key("port_offset", Int(min=1, max=60000), 100,
        "Worker k also listens on its own UDP and TCP port, public port + port_offset + k, on the same address, and writes it into Via and Record-Route so replies and in-dialog requests come back to it."),
    Key("handoff", Bool(), True,
        "With processes > 1, a worker that receives a UDP datagram on a shared listener passes it to the worker that owns its Call-ID (crc32 mod processes), over that worker's Unix socket beside its control socket, so one source's calls spread over the workers; the owner answers from the shared port. Counters: udp_handoff_sent, udp_handoff_received, udp_handoff_failed (owner unreachable: handled where it landed), udp_handoff_dropped. false: the kernel's SO_REUSEPORT hash alone decides (one source, one worker)."),
    Key("handoff_buffer", Int(min=65536, max=64 * 1024 * 1024), 4 * 1024 * 1024,
        "Bytes of socket buffer of a worker's hand-off link to another worker (capped by net.core.wmem_max); when it and 64 KiB in the process are full (the owner is stuck), handed-off datagrams are dropped like lost ones and counted in udp_handoff_dropped."),
    Key("restart_delay", Seconds(positive=True), 1.0,
        "Seconds before a worker that exited is restarted; doubled for each exit within restart_window of its start, up to restart_delay_max."),
    Key("restart_delay_max", Seconds(positive=True), 30.0,
        "Longest wait before restarting a worker that keeps exiting."),
    Key("restart_max", Int(min=1), 10,
        "Most restarts of one worker within a minute; beyond, the next restart waits until the oldest one is a minute old (logged and counted in restarts_deferred)."),
    Key("restart_window", Seconds(positive=True), 10.0,
        "A worker that exits within this many seconds of its start counts as failing, and its restart delay doubles."),
    Key("metrics_poll", Seconds(min=0), 5.0,
        "Seconds between the supervisor's reads of every worker's counters, so that a worker that dies and is restarted (its counters back at zero) leaves its counts in the node's /metrics, which keep counting (counted in worker_restarts_carried_total); what a worker counted after the last read is lost with it. 0: only when /metrics is read."),
    Key("stop_timeout", Seconds(positive=True), 10.0,
        "Seconds the supervisor waits for workers to stop after SIGTERM before it kills them."),
)


def workers_rules(cfg):
    """With `workers.processes` > 1: `cluster.redis` and `usrloc.shared_url` are set (workers share state through Redis), `storage.url` is not memory://, and every public listener has a fixed port."""
    n = cfg.workers.processes
    if n == 1:
        return
    if not cfg.cluster.redis:
        raise ConfigError("cluster.redis", "workers.processes > 1 needs it: worker processes "
                                           "share state through Redis")
    if not cfg.usrloc.shared_url:
        raise ConfigError("usrloc.shared_url", "workers.processes > 1 needs it: worker "
                                               "processes share registrations through Redis")
    if cfg.storage.url.startswith("memory:"):
        raise ConfigError("storage.url", "memory:// cannot be shared by worker processes "
                                         "(workers.processes > 1); use sqlite:// or a server")
    for proto in ("udp", "tcp", "tls", "ws", "wss"):
        for host, port in getattr(cfg.listen, proto):
            if port == 0:
                raise ConfigError(f"listen.{proto}", f"{host}:0: worker processes "
                                  "(workers.processes > 1) share a fixed port")
            if proto in ("udp", "tcp") and port + cfg.workers.port_offset + 64 > 65535:
                raise ConfigError("workers.port_offset", f"worker ports above {port} "
                                  "would pass 65535")
