"""Memory of N new users' REGISTERs in process: RSS growth, and optionally
what holds it (tracemalloc, by line).

The REGISTER is the one ``../shared/bench`` sends (scenarios/reg.xml), fed
to a real ProxyCore running the built-in route with the registrar
(contacts in memory, no authentication) at RATE per second of an explicit
clock, so the transactions of the last 32 s (Timer J) are still held at
the end, as in ``bench.py register --users N --rates RATE``::

    PYTHONHASHSEED=0 python bench/register_memory.py                 # 100,000 at 2,500/s
    python bench/register_memory.py --users 40000 --trace --expire   # by line, then after Timer J
"""

import argparse
import gc
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REGISTER = (
    "REGISTER sip:127.0.0.1:5160 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-4242-{n}-1-0\r\n"
    "From: <sip:user{n:06d}@127.0.0.1>;tag=4242SIPpTag00{n}\r\n"
    "To: <sip:user{n:06d}@127.0.0.1>\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:user{n:06d}@127.0.0.1:5070>\r\n"
    "Expires: 3600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def rss_mb():
    """This process's resident set, MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def top(limit=20):
    """The ``limit`` biggest holders by source line, and the traced total."""
    stats = tracemalloc.take_snapshot().statistics("lineno")
    print(f"  traced {sum(s.size for s in stats) / 1e6:.1f} MB")
    for s in stats[:limit]:
        frame = s.traceback[0]
        print(f"  {s.size / 1e6:7.2f} MB {s.count:8d}  {frame.filename.split('sipdisp/')[-1]}:{frame.lineno}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=2500.0)
    ap.add_argument("--trace", action="store_true", help="tracemalloc by line (inflates RSS)")
    ap.add_argument("--expire", action="store_true", help="again once Timer J has run out")
    a = ap.parse_args(argv)
    from sipdisp.proxy.target import Target
    from tests.support.registrar import Stack
    stack = Stack({"proxy": {"domains": ["127.0.0.1"]},
                   "registrar": {"max_unauthenticated_aors": 0},
                   "usrloc": {"db_mode": 0}}, now=0.0)
    core = stack.core
    uac = Target("udp", "127.0.0.1", 5070, None, stack.udp)
    gc.collect()
    start = rss_mb()
    if a.trace:
        tracemalloc.start(1)
    for n in range(1, a.users + 1):
        now = n / a.rate
        while (deadline := core.next_deadline()) is not None and deadline <= now:
            core.on_timers(deadline)
        out = core.receive(REGISTER.format(n=n).encode(), uac, now)
        if len(out) != 1 or not out[0][0].startswith(b"SIP/2.0 200"):
            raise SystemExit(f"REGISTER {n}: the proxy sent {[d[:40] for d, _ in out]}")
    gc.collect()
    print(f"{a.users} REGISTERs at {a.rate:g}/s: RSS {start:.1f} -> {rss_mb():.1f} MB "
          f"(+{rss_mb() - start:.1f}), {len(core.layer.servers)} transactions held")
    if a.trace:
        top()
    if a.expire:
        core.on_timers(a.users / a.rate + 64 * core.layer.t1)
        gc.collect()
        print(f"after Timer J: RSS {rss_mb():.1f} MB, {len(core.layer.servers)} transactions held")
        if a.trace:
            top()


if __name__ == "__main__":
    main()
