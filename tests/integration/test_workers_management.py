"""The management surfaces of a node run as worker processes (issue 16):
two real sipdisp workers (``SIPDISP_WORKER=1/2`` and their control sockets)
and a supervisor-side NodeManagement in a small parent process; JSON-RPC and
/metrics at the parent show the whole node."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from sipdisp.schema import config_from_dict
from sipdisp.workers.control import worker_control_path
from tests.support.processes import ROOT, Sipdisp, free_port

PARENT = r'''
import sys
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver
from sipdisp.schema import load_config
from sipdisp.workers.control import NodeHttpService, add_node_management

globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
root = MultiService()
root.cfg = load_config(sys.argv[1])
node = add_node_management(root, reactor, worker_count=int(sys.argv[2]))
root.startService()
http = next(s for s in node if isinstance(s, NodeHttpService))
print("HTTP", http.port.getHost().port, flush=True)
reactor.run()
'''


def options(port, n):
    """An OPTIONS with Max-Forwards: 0, answered 483 by the proxy itself."""
    return (f"OPTIONS sip:probe@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKmgmt{port}x{n}\r\n"
            "Max-Forwards: 0\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:probe@127.0.0.1>\r\n"
            f"Call-ID: mgmt-{port}-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def control(path, method, *params, timeout=10):
    """One JSON-RPC line to a worker's control socket; the response object."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params),
                              "id": 7}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            assert chunk, "control socket closed without answering"
            data += chunk
    return json.loads(data)


class Parent:
    """The supervisor-side management (NodeManagement) in its own process."""

    def __init__(self, tmp_path, config, workers):
        self.path = tmp_path / "parent.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.err = open(tmp_path / "parent.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-c", PARENT, str(self.path),
                                      str(workers)], cwd=tmp_path, stdout=subprocess.PIPE,
                                     stderr=self.err, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        line = self.proc.stdout.readline().decode()
        assert line.startswith("HTTP "), (tmp_path / "parent.log").read_text()
        self.port = int(line.split()[1])

    def rpc(self, method, *params, timeout=30):
        """The whole JSON-RPC response object of one call at the parent."""
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params),
                           "id": 1}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/rpc", body,
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return json.loads(response.read())

    def result(self, method, *params):
        """The result of a call that must succeed."""
        answer = self.rpc(method, *params)
        assert "error" not in answer, answer
        return answer["result"]

    def metrics(self, timeout=30):
        """``{sample line name+labels: value}`` of the parent's /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                    timeout=timeout) as response:
            text = response.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        self.err.close()


def port_pair(k, offset=100):
    """A UDP port free with its worker-own companion (port + workers.port_offset + k)."""
    for _ in range(50):
        port = free_port()
        if port + offset + k > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port + offset + k))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports")


def w_port(w):
    """The configured UDP port of worker ``w``."""
    return yaml.safe_load(w.config_path.read_text())["listen"]["udp"][0].rsplit(":", 1)[1]


def wait_for(check, timeout=20, what="condition"):
    """Poll ``check()`` until it returns a true value (returned), within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: last {value!r}")
        time.sleep(0.2)


@pytest.fixture
def node(tmp_path, monkeypatch):
    """Two workers and the parent's management, all stopped at the end."""
    secret_file = str(tmp_path / "var" / "node_secret")
    common = {"proxy": {"secret_file": secret_file}, "console": {"worker_timeout": 1.5}}
    cfg = config_from_dict(common)
    workers, parent = [], None
    try:
        for k in (1, 2):
            home = tmp_path / f"w{k}"
            home.mkdir()
            monkeypatch.setenv("SIPDISP_WORKER", str(k))
            monkeypatch.setenv("SIPDISP_WORKER_CONTROL", worker_control_path(cfg, k))
            # a fixed port each: a worker may log more listeners (its own port too)
            w = Sipdisp(home, dict(common, listen={"udp": [f"127.0.0.1:{port_pair(k)}"],
                                                   "tcp": [], "ws": []}))
            w.udp = int(w_port(w))
            workers.append(w)
            w.start()
            w.control = worker_control_path(cfg, k)
        monkeypatch.delenv("SIPDISP_WORKER")
        monkeypatch.delenv("SIPDISP_WORKER_CONTROL")
        parent = Parent(tmp_path, dict(common, console={"enabled": False, "worker_timeout": 1.5},
                                       http={"listen": "127.0.0.1:0"}), 2)
        yield workers, parent
    finally:
        if parent is not None:
            parent.stop()
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                os.kill(w.proc.pid, signal.SIGCONT)
            w.stop()


def test_a_worker_serves_its_commands_on_a_private_socket_and_no_public_listener(node):
    workers, _ = node
    for k, w in enumerate(workers, 1):
        assert stat.S_IMODE(os.stat(w.control).st_mode) == 0o600
        assert control(w.control, "worker.info")["result"]["worker"] == k
        assert "http" not in w.ports and "ssh" not in w.ports, w.ports
        assert "listening on http" not in w.log_text()


def test_the_parent_sums_stats_merges_lists_applies_commands_and_sums_metrics(node):
    workers, parent = node
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for k, w in enumerate(workers, 1):
            for n in range(k + 1):  # 2 requests to worker 1, 3 to worker 2
                s.sendto(options(w.udp, n), ("127.0.0.1", w.udp))

    def per_worker():
        values = [control(w.control, "stats.get")["result"] for w in workers]
        return values if [v.get("rcv_request:OPTIONS") for v in values] == [2, 3] else None
    one, two = wait_for(per_worker, what="each worker counting its OPTIONS")

    wait_for(lambda: "stats.get" in parent.result("system.listMethods"),
             what="the parent learning the commands")
    stats = parent.result("stats.get")
    assert stats["rcv_request:OPTIONS"] == 5
    for key in set(one) & set(two):
        if isinstance(one[key], int) and not isinstance(one[key], bool) \
                and key not in ("transactions_server", "transactions_client"):
            assert stats[key] == one[key] + two[key], key
    assert "workers_down" not in stats

    # a command that acts reaches every worker and is reported per worker
    banned = parent.result("ipban.add", "192.0.2.7", 600)
    assert banned == {"workers": [
        {"worker": 1, "result": {"address": "192.0.2.7", "banned": True}},
        {"worker": 2, "result": {"address": "192.0.2.7", "banned": True}}]}
    # lists are concatenated, each item naming its worker
    listed = parent.result("ipban.list")
    assert sorted((row["worker"], row["address"]) for row in listed) == \
        [(1, "192.0.2.7"), (2, "192.0.2.7")]
    # the workers' own argument error is the node's
    wrong = parent.rpc("ipban.add", "not-an-address")
    assert wrong["error"]["code"] == -32602 and "not an IP address" in wrong["error"]["data"]
    # the parent's registry converts arguments as the workers' would
    assert parent.rpc("ipban.add", "192.0.2.8", "many")["error"]["code"] == -32602
    help_ = parent.result("system.methodHelp", "ipban.add")
    assert [p["name"] for p in help_["params"]] == ["address", "seconds"]

    metrics = parent.metrics()
    assert metrics['sipdisp_sip_requests_received_total{method="OPTIONS"}'] == 5
    assert metrics['sipdisp_sip_replies_sent_total{status="483"}'] == 5
    assert metrics["sipdisp_workers_up"] == 2
    assert metrics['sipdisp_worker_up{worker="1"}'] == 1
    assert metrics['sipdisp_build_info{version="%s"}' % __import__("sipdisp").__version__] == 1


def test_a_worker_that_does_not_answer_or_is_dead_is_reported_down(node):
    workers, parent = node
    wait_for(lambda: "stats.get" in parent.result("system.listMethods"),
             what="the parent learning the commands")
    status = parent.result("workers.list")
    assert [(row["worker"], row["up"]) for row in status] == [(1, True), (2, True)]
    assert status[1]["pid"] == workers[1].proc.pid

    os.kill(workers[1].proc.pid, signal.SIGSTOP)  # alive, listening, never answering
    started = time.monotonic()
    stats = parent.result("stats.get")
    assert time.monotonic() - started < 15
    assert stats["workers_down"] == [{"worker": 2, "down": True,
                                      "error": "no answer within 1.5 s"}]
    assert "rcv_request:OPTIONS" not in stats or isinstance(stats["rcv_request:OPTIONS"], int)
    metrics = parent.metrics()
    assert metrics["sipdisp_workers_up"] == 1 and metrics['sipdisp_worker_up{worker="2"}'] == 0
    assert metrics['sipdisp_worker_unanswered_total{worker="2"}'] >= 2
    assert metrics['sipdisp_worker_unanswered_total{worker="1"}'] == 0
    log = (parent.path.parent / "parent.log").read_text()
    assert log.count("worker 2 did not answer") == 1, log  # once a minute, not per call
    os.kill(workers[1].proc.pid, signal.SIGCONT)

    workers[1].proc.kill()
    workers[1].proc.wait(10)
    acted = parent.result("ipban.add", "192.0.2.9", 60)
    assert acted["workers"][0] == {"worker": 1,
                                   "result": {"address": "192.0.2.9", "banned": True}}
    assert acted["workers"][1]["worker"] == 2 and acted["workers"][1]["down"] is True
    assert [(row["worker"], row["up"]) for row in parent.result("workers.list")] == \
        [(1, True), (2, False)]
    assert parent.metrics()["sipdisp_workers_up"] == 1


# -- end to end: the supervisor of workers.processes: 2 ---------------------------


def test_through_the_supervisor_json_rpc_ctl_and_metrics_show_the_whole_node(tmp_path):
    """``twistd -n sipdisp`` with ``workers.processes: 2``: the supervisor's
    JSON-RPC, sipdisp-ctl and /metrics sum both workers' counters, a command
    reaches both, and a worker killed with -9 is down, then back (restarted)."""
    from tests.support.cluster import ClusterRedis, redis_up
    from tests.support.workers import Workers
    if not redis_up():
        pytest.fail("the workers need Redis on 127.0.0.1:6379 (scripts/ci-databases.sh)")
    http_port = free_port(socket.SOCK_STREAM)
    with ClusterRedis() as redis, Workers(tmp_path, {
            "cluster": {"redis": redis.url, "key_prefix": redis.prefix},
            "usrloc": {"shared_url": redis.url, "shared_prefix": redis.prefix},
            "console": {"enabled": False, "worker_timeout": 2.0},
            "http": {"enabled": True, "listen": f"127.0.0.1:{http_port}"}}) as node:
        parent = Parent.__new__(Parent)
        parent.port = http_port
        wait_for(lambda: "stats.get" in parent.result("system.listMethods"),
                 what="the supervisor learning the commands")
        assert node.log_text().count("listening on http:") == 1  # the supervisor's only
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for k in (1, 2):
                for n in range(k + 1):  # 2 to worker 1's own port, 3 to worker 2's
                    s.sendto(options(node.worker_port(k), n),
                             ("127.0.0.1", node.worker_port(k)))
        wait_for(lambda: parent.result("stats.get", "rcv_request:OPTIONS")
                 .get("rcv_request:OPTIONS") == 5, what="5 OPTIONS counted across workers")
        metrics = parent.metrics()
        assert metrics['sipdisp_sip_requests_received_total{method="OPTIONS"}'] == 5
        assert metrics["sipdisp_workers_up"] == 2 and metrics["sipdisp_workers"] == 2

        done = subprocess.run([sys.executable, "-m", "sipdisp.ctl", "--url",
                               f"http://127.0.0.1:{http_port}/rpc", "stats.get",
                               "rcv_request:OPTIONS"], capture_output=True, timeout=30,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["rcv_request:OPTIONS"] == 5

        acted = parent.result("ipban.add", "192.0.2.7", 600)
        assert [row["worker"] for row in acted["workers"]] == [1, 2]
        assert all(row["result"]["banned"] for row in acted["workers"])
        assert sorted(row["worker"] for row in parent.result("ipban.list")) == [1, 2]

        pids = {row["worker"]: row["pid"] for row in parent.result("workers.list")}
        assert pids == node.pids()
        node.kill9(2)
        wait_for(lambda: [row["up"] for row in parent.result("workers.list")] == [True, False]
                 or node.starts(2) > 1, what="worker 2 down (or already restarted)")
        node.wait_running(3)

        def back():
            rows = parent.result("workers.list")
            return all(row["up"] for row in rows) and rows[1]["pid"] != pids[2]
        wait_for(back, timeout=40, what="worker 2 restarted and answering")
        # worker 1's counts are still there; the restarted worker 2 starts from zero
        assert parent.result("stats.get", "rcv_request:OPTIONS")["rcv_request:OPTIONS"] == 2
        # /metrics keeps counting: worker 2's earlier run is carried
        wait_for(lambda: parent.metrics().get("sipdisp_worker_restarts_carried_total") == 1,
                 what="the supervisor noticing worker 2's restart")
        metrics = parent.metrics()
        assert metrics['sipdisp_sip_requests_received_total{method="OPTIONS"}'] == 5
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(options(node.worker_port(2), 9), ("127.0.0.1", node.worker_port(2)))
        wait_for(lambda: parent.metrics().get(
            'sipdisp_sip_requests_received_total{method="OPTIONS"}') == 6,
            what="the restarted worker's OPTIONS added to the carried counts")


def test_the_supervisors_ssh_console_calls_every_worker(tmp_path):
    """The Manhole of the supervisor: a command typed there is answered for the
    whole node when the workers' answers come back over their control sockets."""
    import shutil
    import types
    from tests.integration.test_console import ANSI, known_hosts

    def ssh(proxy, key, lines, tmp_path, stdin_delay):
        """tests/integration/test_console.py's ssh(), with ^D typed ``stdin_delay`` s later."""
        argv = ["ssh", "-tt", "-F", "/dev/null", "-p", str(proxy.port("ssh")),
                "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                "-o", f"UserKnownHostsFile={known_hosts(proxy, tmp_path / 'known_hosts')}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=10", "-i", str(key), "admin@127.0.0.1"]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        proc.stdin.write("".join(line + "\r" for line in lines).encode())
        proc.stdin.flush()
        time.sleep(stdin_delay)
        try:
            out, err = proc.communicate(b"\x04", timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        output = ANSI.sub("", out.decode("utf-8", "replace")).replace("\r", "")
        return proc.returncode, output, err.decode("utf-8", "replace")
    from tests.support.cluster import ClusterRedis, redis_up
    from tests.support.console import write_private_key
    from tests.support.workers import Workers
    if shutil.which("ssh") is None or not redis_up():
        pytest.fail("needs the OpenSSH client and Redis on 127.0.0.1:6379 (.ci/run)")
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "authorized_keys").write_text(f"{write_private_key(keys / 'id_admin')} admin@t\n")
    ssh_port = free_port(socket.SOCK_STREAM)
    with ClusterRedis() as redis, Workers(tmp_path, {
            "cluster": {"redis": redis.url, "key_prefix": redis.prefix},
            "usrloc": {"shared_url": redis.url, "shared_prefix": redis.prefix},
            "console": {"enabled": True, "listen": f"127.0.0.1:{ssh_port}",
                        "authorized_keys": str(keys / "authorized_keys"),
                        "host_key": str(tmp_path / "var" / "manhole_host_key")}}) as node:
        wait_for(lambda: "node management: " in node.log_text(),
                 what="the supervisor learning the commands")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for k in (1, 2):
                s.sendto(options(node.worker_port(k), 0), ("127.0.0.1", node.worker_port(k)))
        console = types.SimpleNamespace(port=lambda proto: ssh_port, tmp_path=tmp_path)

        def counted():
            # ^D only after the answers had time to come: the console prints a
            # Deferred's result when it fires, in the open session
            code, output, err = ssh(console, keys / "id_admin",
                                    ["stats.get('rcv_request:OPTIONS')", "workers.list()"],
                                    tmp_path, stdin_delay=3)
            assert code == 0, err
            return "'rcv_request:OPTIONS': 2" in output and output.count("'up': True") == 2 \
                and output
        output = wait_for(counted, timeout=30, what="the console's answers")
        assert "Traceback" not in output
