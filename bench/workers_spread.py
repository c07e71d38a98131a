"""Calls from many UDP sources through sipdisp's worker processes.

../shared/bench sends every call from one SIPp socket (127.0.0.1:5070), one
4-tuple that SO_REUSEPORT hashes to one worker. Here SIPp opens a socket per
call (``-t un``), like many phones or trunks, so the kernel spreads the calls
over the workers. Same scenarios as ../shared/bench (its uac.xml/uas.xml,
two UAS on 5081/5082, 500 ms hold), one step per rate, bounded in calls and
time; prints calls ok/failed, retransmissions and the proxy tree's CPU
seconds per 1,000 calls.

usage: python3 bench/workers_spread.py CONFIG RATES [DURATION]
  e.g. python3 bench/workers_spread.py bench/sipdisp-workers.yaml 800,1200,1600 10
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
BENCH = Path(os.environ.get("BENCH", HERE.parent / "shared" / "bench"))
HZ = os.sysconf("SC_CLK_TCK")


def tree(root):
    """``root`` and its descendants."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu(root):
    """CPU seconds of ``root``'s process tree."""
    total = 0
    for p in tree(root):
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError):
            pass
    return total / HZ


def sipp(args, log):
    return subprocess.Popen(["sipp", *map(str, args)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


def last_row(path):
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    return dict(zip(lines[0].split(";"), lines[-1].split(";")))


def step(config, rate, duration, work):
    """One rate: start the proxy, load it, stop everything; a result dict."""
    env = dict(os.environ, PYTHONPATH=str(HERE))
    log = open(work / f"proxy-{rate}.log", "w")
    proxy = subprocess.Popen(["twistd", "-n", "--pidfile=", "sipdisp", "-c", config],
                             cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT)
    uas = []
    try:
        time.sleep(4)  # the workers bind and connect to Redis
        for i, port in enumerate((5081, 5082)):
            uas.append(sipp(["-sf", BENCH / "scenarios" / "uas.xml", "-i", "127.0.0.1",
                             "-p", port, "-mp", 16000 + 10 * i, "-cp", 8890 + i, "-nostdin",
                             "-buff_size", 4194304], open(work / f"uas{i}-{rate}.log", "w")))
        time.sleep(1)
        n = int(rate * duration)
        stf = work / f"uac-{rate}.csv"
        c0, t0 = cpu(proxy.pid), time.time()
        uac = sipp(["127.0.0.1:5060", "-sf", BENCH / "scenarios" / "uac.xml", "-i", "127.0.0.1",
                    "-p", 5070, "-t", "un", "-max_socket", int(rate * 4) + 100, "-mp", 16100,
                    "-cp", 8899, "-nostdin", "-buff_size", 4194304, "-r", rate, "-rp", 1000,
                    "-m", n, "-l", int(rate * 3.5) + 100, "-d", 500, "-recv_timeout", 5500,
                    "-timeout", f"{int(duration + 40)}s", "-trace_stat", "-stf", stf, "-fd", 1],
                   open(work / f"uac-{rate}.log", "w"))
        try:
            uac.wait(duration + 60)
        except subprocess.TimeoutExpired:
            uac.kill()
            uac.wait(5)
        c1, t1 = cpu(proxy.pid), time.time()
        row = last_row(stf)
        ok = int(float(row.get("SuccessfulCall(C)") or 0))
        return {"rate": rate, "ok": ok, "failed": int(float(row.get("FailedCall(C)") or 0)),
                "retrans": int(float(row.get("Retransmissions(C)") or 0)),
                "achieved": round(ok / max(t1 - t0 - 0.5, 1e-9), 1),
                "proxy_cpu_pct": round(100 * (c1 - c0) / (t1 - t0), 1),
                "cpu_s_per_1k": round(1000 * (c1 - c0) / ok, 3) if ok else None}
    finally:
        for p in uas:
            p.send_signal(signal.SIGUSR1)
        for p in uas:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        proxy.send_signal(signal.SIGTERM)
        try:
            proxy.wait(20)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait(5)
        log.close()


def main():
    config, rates = sys.argv[1], [int(r) for r in sys.argv[2].split(",")]
    duration = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    work = Path(tempfile.mkdtemp(prefix="workers-spread-"))
    print(f"# {config}, -t un, {duration:g} s per rate, logs in {work}", flush=True)
    for rate in rates:
        print(step(config, rate, duration, work), flush=True)
        time.sleep(3)


if __name__ == "__main__":
    main()
