#!/usr/bin/env python3
"""Presence fan-out benchmark: one presentity, N watchers, one PUBLISH.

Starts the presence server under test (sipdisp under twistd, or Kamailio's
presence + presence_xml with bench/presence/kamailio-presence.cfg), makes N
subscriptions to ``bob`` from one UDP socket (at most --window waiting for
their 200 and first NOTIFY at a time), then per repetition sends one PUBLISH
and measures:

* wall: from sending the PUBLISH to receiving the N-th NOTIFY that carries
  the new state (each NOTIFY is answered 200 as it arrives);
* cpu_s: the server's user+system CPU seconds (/proc/<pid>/stat, all its
  processes and threads) from just before the PUBLISH (sent once the server
  has been quiet, at most one clock tick of CPU per 0.25 s) until the N-th
  NOTIFY has arrived;
* cpu_settled_s: the same until the server is quiet again (the 200s to the
  NOTIFYs absorbed, and whatever it writes to its database at once):
  settled_after_s says when that was;
* extra_notifies / retransmitted_notifies: NOTIFYs beyond one per watcher
  with a new CSeq, and NOTIFYs received again with a CSeq already answered
  (the server retransmitted: our 200 was late, or a datagram was dropped
  when the socket's buffer, net.core.rmem_max, was full);
* watchers_cpu_s: this script's own CPU from the PUBLISH to the N-th NOTIFY
  (receiving, parsing and answering them): when it is close to wall, the
  watchers, not the server, set the pace.

  PYTHONPATH=. .venv/bin/python bench/presence/fanout.py --server kamailio --watchers 1000
  PYTHONPATH=. .venv/bin/python bench/presence/fanout.py --server sipdisp --watchers 1000

Bounded: subscribing gives up after --timeout seconds, each fan-out after
--timeout seconds, and the server is stopped at the end.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.presence import UdpWatchers, init_db, pidf  # noqa: E402
from tests.support.processes import Sipdisp, free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
DOMAIN = "example.com"
KAM_DBTEXT = Path("/usr/share/kamailio/dbtext/kamailio")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """User+system CPU seconds of ``pids`` (each with all its threads)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def children_of(pid):
    """``pid`` and every process whose parent is ``pid`` (Kamailio's workers)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
            if ppid == pid:
                pids.append(int(entry))
    return pids


class Kamailio:
    """Kamailio with bench/presence/kamailio-presence.cfg on a fresh db_text directory."""

    def __init__(self, workdir, children=1):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.children = children
        self.proc = None

    def start(self):
        db = self.workdir / "kamdb"
        db.mkdir()
        for table in ("version", "presentity", "active_watchers", "watchers", "xcap"):
            shutil.copy(KAM_DBTEXT / table, db / table)
        self.log = open(self.workdir / "kamailio.log", "w")
        self.argv = ["kamailio", "-f", str(HERE / "kamailio-presence.cfg"), "-DD", "-E",
                     "-m", "256", "-M", "16",
                     "-A", f"LISTEN=udp:127.0.0.1:{self.port}",
                     "-A", f'DBURL="text://{db}"',
                     "-A", f'SRVADDR="sip:127.0.0.1:{self.port}"',
                     "-A", f"CHILDREN={self.children}"]
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # up when its workers are forked
            if self.proc.poll() is not None:
                raise RuntimeError((self.workdir / "kamailio.log").read_text()[-3000:])
            if len(children_of(self.proc.pid)) > self.children + 1:
                time.sleep(0.5)
                return self
            time.sleep(0.1)
        raise RuntimeError("kamailio did not start")

    def pids(self):
        """The main process and its workers."""
        return children_of(self.proc.pid)

    def stop(self):
        """SIGTERM, bounded wait, then SIGKILL."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


class SipdispServer:
    """sipdisp under twistd with presence enabled (bench/presence/sipdisp-presence.yaml)."""

    def __init__(self, workdir):
        import yaml
        self.cfg = yaml.safe_load((HERE / "sipdisp-presence.yaml").read_text())
        self.workdir = Path(workdir)
        self.inner = Sipdisp(self.workdir, self.cfg)

    @property
    def argv(self):
        """How it was started."""
        return ["twistd", "-n", "sipdisp", "-c", str(self.inner.config_path)]

    def start(self):
        init_db(f"sqlite:///{self.workdir / 'sipdisp.db'}")
        self.inner.start(timeout=60)
        self.port = self.inner.port("udp")
        return self

    def pids(self):
        """The one twistd process (its threads are counted with it)."""
        return [self.inner.proc.pid]

    def stop(self):
        """As an operator stops it (SIGTERM)."""
        self.inner.stop()


def fanout_once(watchers, subs, presentity, rep, etag, timeout):
    """One PUBLISH and its fan-out; returns (result dict, new ETag)."""
    note = f"fanout-{rep}-{time.time_ns()}"
    body = pidf(f"sip:{presentity}@{DOMAIN}", basic="open", note=note,
                activity="away" if rep % 2 == 0 else "busy")
    base = {id(s): len(s.notifies) for s in subs}
    retrans0 = watchers.notify_retransmissions
    pids = server.pids()
    quiet(pids)
    cpu0 = cpu_seconds(pids)
    own0 = time.process_time()
    t0 = time.monotonic()
    pending = watchers.send_publish_nowait(presentity, body, etag=etag)
    if not pending.done.wait(timeout):
        raise RuntimeError("no answer to PUBLISH")
    if pending.final is None or pending.final.status >= 300:
        raise RuntimeError(f"PUBLISH refused: {pending.final and pending.final.start}")
    t_publish = pending.final.received - t0
    new_etag = pending.final.header("sip-etag")

    def fresh(s):
        return any(note in n.body for n in s.notifies[base[id(s)]:])

    watchers.wait_for(lambda: all(fresh(s) for s in subs), timeout,
                      f"{len(subs)} NOTIFYs with {note}")
    cpu_fanout = cpu_seconds(pids) - cpu0
    own = time.process_time() - own0
    with watchers.lock:
        arrivals = sorted(next(n.received for n in s.notifies[base[id(s)]:] if note in n.body)
                          for s in subs)
        extra = sum(len(s.notifies) - base[id(s)] for s in subs) - len(subs)
    settled_at = quiet(pids)
    cpu_settled = cpu_seconds(pids) - cpu0
    return {"rep": rep, "watchers": len(subs), "publish_200_s": round(t_publish, 4),
            "first_notify_s": round(arrivals[0] - t0, 4),
            "wall_s": round(arrivals[-1] - t0, 4), "cpu_s": round(cpu_fanout, 3),
            "cpu_settled_s": round(cpu_settled, 3), "settled_after_s": round(settled_at - t0, 2),
            "watchers_cpu_s": round(own, 3), "extra_notifies": extra,
            "retransmitted_notifies": watchers.notify_retransmissions - retrans0}, new_etag


def quiet(pids, step=0.25, limit=15.0):
    """Wait until ``pids`` use at most one clock tick of CPU in ``step`` seconds
    (bounded by ``limit``); returns the monotonic time it was reached."""
    deadline = time.monotonic() + limit
    prev = cpu_seconds(pids)
    while time.monotonic() < deadline:
        time.sleep(step)
        cur = cpu_seconds(pids)
        if cur - prev <= 1.0 / CLK_TCK:
            return time.monotonic() - step
        prev = cur
    return time.monotonic()


def main():
    global server
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", choices=("sipdisp", "kamailio"), required=True)
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--kamailio-children", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix=f"fanout-{args.server}-"))
    server = (Kamailio(workdir, args.kamailio_children) if args.server == "kamailio"
              else SipdispServer(workdir))
    server.start()
    try:
        with UdpWatchers(server.port, DOMAIN) as watchers:
            etag = None
            first = watchers.publish("bob", pidf(f"sip:bob@{DOMAIN}", note="initial"))
            if first.status >= 300:
                raise RuntimeError(f"initial PUBLISH refused: {first.start}")
            etag = first.header("sip-etag")
            t0 = time.monotonic()
            subs = watchers.subscribe_many("bob", args.watchers, window=args.window,
                                           timeout=args.timeout)
            setup = time.monotonic() - t0
            print(json.dumps({"server": args.server, "argv": " ".join(server.argv),
                              "subscribed": len(subs), "subscribe_s": round(setup, 2)}),
                  flush=True)
            for rep in range(args.reps):
                result, etag = fanout_once(watchers, subs, "bob", rep, etag, args.timeout)
                result["server"] = args.server
                print(json.dumps(result), flush=True)
            unmatched = len(watchers.unmatched)
            if unmatched:
                print(json.dumps({"unmatched_notifies": unmatched}), flush=True)
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


server = None

if __name__ == "__main__":
    main()
