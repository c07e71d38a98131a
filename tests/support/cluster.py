"""Several sipdisp nodes on one machine for integration tests (issue 16):
each node listens on its own loopback address (127.0.0.2, 127.0.0.3 ...),
all share the node secret, the machine's Redis (under a key prefix unique
to the test, removed afterwards) and, when given, one database.

    with ClusterRedis() as redis, Cluster(tmp_path, config) as (a, b):
        ...  # a and b are started tests.support.processes.Sipdisp objects

A private redis-server (for outage tests: never stop the machine's Redis)
is :class:`PrivateRedis`; the machine's PostgreSQL location table is
:func:`location_db`; SIPp callers through a node are :func:`sipp_caller`.
Every wait is bounded.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from .calls import lb_loads
from .peers import UdpEndpoint
from .processes import ROOT, Sipdisp, Sipp, _merge, free_port
from .registrar import rpc

REDIS = ("127.0.0.1", 6379)
NODE_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
#: the secret every node of a test cluster shares (proxy.secret)
CLUSTER_SECRET = "cluster-test-secret-0123456789abcdef"


def redis_up(host="127.0.0.1", port=6379):
    """True if something accepts connections at host:port."""
    try:
        socket.create_connection((host, port), 1).close()
        return True
    except OSError:
        return False


def redis_cli(port, *args, db=0):
    """One redis-cli command against 127.0.0.1:``port``; its output (stripped)."""
    return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "-n", str(db),
                           *map(str, args)], check=True, capture_output=True, text=True,
                          timeout=10).stdout.strip()


class ClusterRedis:
    """A key prefix unique to one test on a Redis server (the machine's by
    default): ``url`` and ``prefix`` for the nodes' configuration, ``keys()``
    lists what the test wrote, and leaving the ``with`` block deletes it."""

    def __init__(self, port=REDIS[1], db=0):
        self.port = port
        self.db = db
        self.prefix = f"sdtest:{uuid.uuid4().hex[:12]}:"

    @property
    def url(self):
        """The redis:// URL of the server and database."""
        return f"redis://127.0.0.1:{self.port}/{self.db}"

    def cli(self, *args):
        """One redis-cli command on this server and database."""
        return redis_cli(self.port, *args, db=self.db)

    def keys(self):
        """The keys under this test's prefix."""
        out = self.cli("--scan", "--pattern", self.prefix + "*")
        return sorted(k for k in out.splitlines() if k)

    def clean(self):
        """Delete every key under this test's prefix."""
        for key in self.keys():
            self.cli("DEL", key)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.clean()
        except (OSError, subprocess.SubprocessError):
            pass  # a private server already stopped: nothing left to clean


class PrivateRedis:
    """A private redis-server on a free port, without persistence, that a
    test may stop and start again (``port`` stays the same)."""

    def __init__(self, tmp_path):
        self.port = free_port(socket.SOCK_STREAM)
        self.dir = tmp_path
        self.proc = None

    def start(self, timeout=10):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not redis_up("127.0.0.1", self.port):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def postgres_with_schema():
    """The machine's PostgreSQL test database (PG_URL) with sipdisp's tables
    (``sipdisp db init``, which also adds a newer schema's columns); the test
    is skipped when it is unreachable. Returns the server helper."""
    from sipdisp.storage.testing import PG_URL, Unreachable, server_for
    srv = server_for(PG_URL)
    try:
        srv.check_reachable()
    except Unreachable as exc:
        pytest.skip(str(exc))
    subprocess.run([sys.executable, "-m", "sipdisp.cli", "db", "init", PG_URL],
                   env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True, timeout=60,
                   stdout=subprocess.DEVNULL)
    return srv


def node_config(host, extra=None):
    """A node's configuration: every listener on ``host`` (port 0), the
    cluster's shared secret, then ``extra`` merged in."""
    cfg = {"listen": {"udp": [f"{host}:0"], "tcp": [f"{host}:0"], "ws": [f"{host}:0"]},
           "proxy": {"secret": CLUSTER_SECRET}}
    if extra:
        _merge(cfg, extra)
    return cfg


class Cluster:
    """``n`` sipdisp nodes on NODE_HOSTS, each in its own directory under
    ``tmp_path``, started in order. ``config`` is shared; ``per_node`` a list
    of extra settings for each node. The ``with`` block yields the nodes and
    stops the ones still running at its end."""

    def __init__(self, tmp_path, config, n=2, per_node=None):
        self.nodes = []
        for i in range(n):
            host = NODE_HOSTS[i]
            directory = tmp_path / f"node{i}"
            directory.mkdir(exist_ok=True)
            cfg = node_config(host, config)
            if per_node and per_node[i]:
                _merge(cfg, per_node[i])
            node = Sipdisp(directory, cfg)
            node.host = host
            self.nodes.append(node)

    def start(self):
        for node in self.nodes:
            node.start()
        return self.nodes

    def stop(self):
        for node in self.nodes:
            node.stop()

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


def kill9(node):
    """Kill a node at once (SIGKILL), as a crash would; waits for it to be gone."""
    if node.proc is not None and node.proc.poll() is None:
        node.proc.kill()
        node.proc.wait(10)


class HostUdpEndpoint(UdpEndpoint):
    """A SIP endpoint on a UDP socket bound to ``host`` (any loopback address),
    sending anywhere: ``send(data, host, port)``."""

    def __init__(self, host="127.0.0.1", port=0):
        self.host = host
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.last_source = None

    def send(self, data, host, port):
        """Send one datagram (text or bytes) to ``host``:``port``."""
        self.sock.sendto(data.encode() if isinstance(data, str) else data, (host, port))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def location_db():
    """The machine's PostgreSQL with sipdisp's tables: yields ``(server,
    users)``; the location rows of every name the test appends to ``users``
    are deleted afterwards. Skips the test when PostgreSQL is unreachable."""
    srv = postgres_with_schema()
    users = []
    try:
        yield srv, users
    finally:
        for user in users:
            srv.execute("DELETE FROM location WHERE username = %s", (user,))


def user_name(users, stem):
    """A user name unique to this run, added to ``users`` (cleaned afterwards)."""
    name = f"{stem}{uuid.uuid4().hex[:8]}"
    users.append(name)
    return name


def wait_shared(*nodes, connected=True, timeout=15):
    """Wait until every node's shared location is (or is no longer) connected to Redis."""
    deadline = time.monotonic() + timeout
    for node in nodes:
        while rpc(node, "ul.stats")["shared_connected"] != connected:
            assert time.monotonic() < deadline, node.log_text()[-3000:]
            time.sleep(0.1)


def register_udp(node, user, contact_port, expires=600, call_id=None, cseq=1):
    """REGISTER ``user`` at ``node`` over UDP binding sip:user@127.0.0.1:contact_port;
    the final answer. A refresh gives the first one's ``call_id`` and a higher ``cseq``."""
    with HostUdpEndpoint("127.0.0.1") as ua:
        n = uuid.uuid4().hex[:10]
        ua.send(f"REGISTER sip:example.com SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bKr{n}\r\n"
                f"From: <sip:{user}@example.com>;tag=r{n}\r\nTo: <sip:{user}@example.com>\r\n"
                f"Call-ID: {call_id or 'reg-' + n}\r\nCSeq: {cseq} REGISTER\r\n"
                f"Max-Forwards: 70\r\n"
                f"Contact: <sip:{user}@127.0.0.1:{contact_port}>\r\nExpires: {expires}\r\n"
                "Content-Length: 0\r\n\r\n", node.host, node.port("udp"))
        return ua.recv(10, match=lambda m: not m.is_request and m.status >= 200)


def sipp_caller(tmp_path, proxy, name, scenario, calls, rate, hold_ms, extra=(),
                service="answer"):
    """A started SIPp caller placing ``calls`` calls to ``service`` through
    ``proxy`` (a node with ``host``) at ``rate`` calls/s, each held ``hold_ms``."""
    return Sipp(tmp_path, name, scenario, free_port(), "u1",
                target=f"{proxy.host}:{proxy.port('udp')}",
                extra=["-s", service, "-m", calls, "-r", rate, "-d", hold_ms, "-l", 1000,
                       "-timeout", 90, "-timeout_error", *extra]).start()


def total_load(proxy):
    """The cluster's calls on every load-balancer destination, as this node counts them."""
    return sum(lb_loads(proxy).values())


def stop_all(*procs, grace=5.0):
    """Stop every process given (None skipped). SIPp processes are all told
    to quit first and share one ``grace`` period to end their calls (a caller
    or FreeSWITCH stand-in with calls through a killed node never does); those
    still running after it are killed."""
    live = [proc for proc in procs if proc is not None]
    sipps = [proc.proc for proc in live if isinstance(proc, Sipp) and proc.proc is not None]
    for proc in sipps:
        if proc.poll() is None:
            proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + grace
    for proc in sipps:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for proc in live:
        proc.stop()
