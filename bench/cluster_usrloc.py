"""What a shared lookup costs (usrloc.shared_url, docs/cluster.md): node B's
CPU per 1,000 SIPp calls to a UDP user registered at node A (every lookup
reads Redis, the route suspended meanwhile) against the same calls to a user
registered at B itself without sharing (lookup from memory). Two real nodes
on 127.0.0.2 and 127.0.0.3, the machine's Redis under a key prefix of its
own, alternating runs (the machine is shared: compare within one sitting).

usage: PYTHONPATH=. .venv/bin/python bench/cluster_usrloc.py [RATE] [CALLS] [ROUNDS]"""

import pathlib
import sys
import tempfile
import time
import uuid

from tests.integration.test_cluster_usrloc import ROUTE, register_udp
from tests.support.cluster import Cluster, ClusterRedis
from tests.support.processes import Sipp, free_port
from tests.support.registrar import rpc


def cpu_seconds(pid):
    """User + system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def run(tmp, shared, rate, calls):
    """One sitting: start A and B, register the user, SIPp calls through B."""
    tmp.mkdir(parents=True)
    with ClusterRedis() as redis:
        cfg = {"registrar": {"accept_any_domain": True}, "routing": {"request_route": ROUTE}}
        if shared:
            cfg["usrloc"] = {"shared_url": redis.url, "shared_prefix": redis.prefix}
        with Cluster(tmp, cfg) as (a, b):
            time.sleep(1.5)  # the Redis connections, the first timers
            user = "u" + uuid.uuid4().hex[:6]
            uas_port = free_port()
            uas = Sipp(tmp, "uas", "uas.xml", uas_port, "u1", extra=["-m", calls]).start()
            try:
                assert register_udp(a if shared else b, user, uas_port).status == 200
                before = cpu_seconds(b.proc.pid)
                uac = Sipp(tmp, "uac", "uac.xml", free_port(), "u1",
                           target=f"{b.host}:{b.port('udp')}",
                           extra=["-s", user, "-m", calls, "-r", rate, "-d", 0,
                                  "-timeout", 120]).start()
                uac.wait(180)
                used = cpu_seconds(b.proc.pid) - before
                stats = uac.stats()
                reads = rpc(b, "ul.stats").get("shared_reads", 0)
            finally:
                uas.stop()
    print(f"shared={'yes' if shared else 'no '} rate={rate}/s calls={calls} ok={stats['ok']} "
          f"failed={stats['failed']} retrans={stats['retrans']} redis_reads={reads} "
          f"B_cpu={used:.2f}s per_1000_calls={1000 * used / calls:.2f}s", flush=True)


def main():
    rate = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    base = pathlib.Path(tempfile.mkdtemp(prefix="sipdisp-bench-usrloc-"))
    for i in range(rounds):
        for shared in (False, True):
            run(base / f"{i}-{int(shared)}", shared, rate, calls)


if __name__ == "__main__":
    main()
