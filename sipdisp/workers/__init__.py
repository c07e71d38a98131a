"""Worker processes on one machine (issue 16): ``workers.processes`` > 1 turns
``twistd -n sipdisp`` into a supervisor of N worker processes, each a cluster
node sharing the public listeners through SO_REUSEPORT (README "Worker processes").

Public API: :func:`worker_count`, :func:`worker_number`, :func:`worker_config`,
:class:`~sipdisp.workers.supervisor.SupervisorService`.
"""

import os
import socket

from ..config.model import Config

#: the environment variable naming the worker (1..N) a process is
WORKER_ENV = "SIPDISP_WORKER"
#: the environment variable with the worker's control socket path
CONTROL_ENV = "SIPDISP_WORKER_CONTROL"


def worker_count(cfg):
    """How many worker processes ``workers.processes`` asks for (``auto``: the CPUs)."""
    n = cfg.workers.processes
    if n == "auto":
        return max(1, os.cpu_count() or 1)
    return n


def worker_number(environ=None):
    """The worker number this process runs as (``SIPDISP_WORKER``), or None in
    the supervisor or a single-process sipdisp."""
    value = (os.environ if environ is None else environ).get(WORKER_ENV)
    if not value:
        return None
    try:
        k = int(value)
    except ValueError:
        return None
    return k if k >= 1 else None


def worker_config(cfg, k):
    """``cfg`` as worker ``k`` runs it: ``cluster.node_id`` with a ``-w<k>``
    suffix (the host name when unset, so a restarted worker is the same node)."""
    base = cfg.cluster.node_id or socket.gethostname()
    cluster = Config(dict(cfg.cluster._values, node_id=f"{base}-w{k}"), "cluster")
    return Config(dict(cfg._values, cluster=cluster), cfg._where)


def private_port(cfg, public_port, k):
    """Worker ``k``'s own port beside the shared ``public_port``: stable across
    its restarts (``workers.port_offset`` + k above the public one)."""
    return public_port + cfg.workers.port_offset + k
