"""What the cluster sync costs (sipdisp/shared, docs/cluster.md): the Python
side of one round (building the script's arguments, applying the answer),
the round trip of the script against a real Redis, and the price of the
cluster view on the call path (Profiles.size).

usage: PYTHONPATH=. .venv/bin/python bench/cluster_sync.py [REDIS_PORT] [ROUNDS]
Uses keys under ``sdbench:<pid>:`` and deletes them."""

import os
import socket
import statistics
import sys
import time

from sipdisp.dialog.profiles import Profiles
from sipdisp.shared.sync import ClusterSync


class Resp:
    """The smallest blocking RESP2 client: enough for EVAL and DEL."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def call(self, *args):
        """Send one command; its decoded answer."""
        out = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.file.readline()[:-2]
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"bad reply {line!r}")


class Dialog:
    """What Profiles needs of a dialog."""

    def __init__(self):
        self.profiles = []


def node(name, prefix, values):
    """A node's profiles with ``values`` values counted once, and its ClusterSync."""
    profiles = Profiles()
    profiles.define("lb-pstn", True)
    for v in range(values):
        profiles.add(Dialog(), "lb-pstn", str(v))
    return profiles, ClusterSync(name, prefix, 10.0, profiles=profiles, secret="x")


def toggle(profiles, d, n):
    """One call more or less: the node writes its whole hash next round."""
    if n % 2:
        profiles.remove_all(d)
    else:
        profiles.add(d, "lb-pstn", "0")


def timed_rounds(client, sync, profiles, rounds, change, others):
    """``(round trip p50 ms, p99 ms, Python us per round)`` over ``rounds`` rounds."""
    rtt, py = [], []
    d = Dialog()
    peer_dialogs = [Dialog() for _ in others]
    for n in range(rounds):
        if change in ("this", "all"):
            toggle(profiles, d, n)
        if change == "all":  # the other nodes too (untimed): every hash is read again
            for (peer_profiles, peer), pd in zip(others, peer_dialogs):
                toggle(peer_profiles, pd, n)
                peer.answered(client.call(*peer.request(time.time())), time.time())
        t0 = time.perf_counter()
        request = sync.request(time.time())
        t1 = time.perf_counter()
        reply = client.call(*request)
        t2 = time.perf_counter()
        sync.answered(reply, time.time())
        t3 = time.perf_counter()
        rtt.append((t2 - t1) * 1000)
        py.append((t1 - t0 + t3 - t2) * 1e6)
    rtt.sort()
    return (statistics.median(rtt), rtt[int(len(rtt) * 0.99) - 1], statistics.median(py))


def main():
    """Print the table of docs/benchmarks.md's cluster sync section."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 6379
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    prefix = f"sdbench:{os.getpid()}:"
    client = Resp(port)
    print(f"{'values/node':>12} {'changed':>10} {'rtt p50 ms':>11} {'rtt p99 ms':>11} "
          f"{'python us':>10}")
    try:
        for values in (10, 100, 1000):
            others = [node(f"peer{i}", prefix, values) for i in range(2)]
            for profiles, sync in others:
                client.call(*sync.request(time.time()))
            profiles, sync = node("self", prefix, values)
            for change in ("none", "this", "all"):
                p50, p99, py = timed_rounds(client, sync, profiles, rounds, change, others)
                print(f"{values:>12} {change:>10} {p50:>11.3f} {p99:>11.3f} {py:>10.1f}")
        # the call path: Profiles.size with and without other nodes' counts
        profiles, sync = node("self", prefix + "x:", 100)
        n = 200000
        t0 = time.perf_counter()
        for _ in range(n):
            profiles.size("lb-pstn", "7")
        alone = (time.perf_counter() - t0) / n * 1e9
        profiles.remote = {"lb-pstn": {str(v): 3 for v in range(100)}}
        t0 = time.perf_counter()
        for _ in range(n):
            profiles.size("lb-pstn", "7")
        shared = (time.perf_counter() - t0) / n * 1e9
        print(f"Profiles.size: {alone:.0f} ns alone, {shared:.0f} ns with the cluster view")
    finally:
        keys = client.call("KEYS", prefix + "*")
        if keys:
            client.call("DEL", *keys)


if __name__ == "__main__":
    main()
