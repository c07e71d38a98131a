"""The management of a node run as worker processes (``processes: N``).

Each worker (environment ``SIPDISP_WORKER=k``) serves the JSON-RPC of its own
command registry on a private Unix socket, :func:`worker_control_path`
(mode 0600: only the node's user reaches it), instead of the public SSH and
HTTP listeners.  The supervisor parent runs no SIP core: its console, JSON-RPC
over HTTP, ``/metrics`` and ``sipdisp-ctl`` are answered by
:class:`NodeManagement`, which calls each command on every worker's socket and
merges the answers (:func:`merge_results`): numbers in dicts summed, lists
concatenated with a ``worker`` field on each item, commands that act reported
per worker; a worker that does not answer within ``console.worker_timeout`` is
reported down instead of holding the answer.

The control protocol is one JSON-RPC 2.0 request per line, answered by one
line, over a Unix stream socket (no HTTP: nothing but the parent talks to it).
"""

import hashlib
import json
import os
import tempfile

from twisted.internet import defer, error, protocol
from twisted.protocols.basic import LineOnlyReceiver

from ..logs import Logger

log = Logger()

#: the environment variables set by the supervisor for each worker
WORKER_ENV = "SIPDISP_WORKER"
CONTROL_ENV = "SIPDISP_WORKER_CONTROL"

_SUN_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, the final NUL excluded
MAX_REQUEST = 1 << 20  # bytes of one request line a worker accepts
MAX_RESPONSE = 64 << 20  # bytes of one answer the parent accepts (a long tm.list)


def worker_control_path(cfg, k):
    """The Unix socket path of worker ``k``'s control endpoint: beside the node
    secret (``proxy.secret_file``'s directory, ``var`` by default), or, when
    that absolute path would pass the 107 bytes of a Unix socket path, a short
    name in the temporary directory derived from that directory (so two nodes
    started from different directories never share one)."""
    directory = os.path.dirname(cfg.proxy.secret_file) or "."
    path = os.path.join(directory, f"worker-{k}.ctl")
    if len(os.fsencode(os.path.abspath(path))) <= _SUN_PATH_MAX:
        return path
    tag = hashlib.sha256(os.fsencode(os.path.abspath(directory))).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"sipdisp-{tag}-worker-{k}.ctl")


def worker_index(environ=None):
    """This process's worker number (``SIPDISP_WORKER``), or None outside a worker."""
    value = (os.environ if environ is None else environ).get(WORKER_ENV)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{WORKER_ENV} must be a worker number, got {value!r}") from None
