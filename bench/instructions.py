"""Instructions per call and per REGISTER, counted by callgrind in-process.

Time on a shared machine is noise; the number of instructions the
interpreter executes is not. This script replays calls (or REGISTERs)
through a real :class:`ProxyCore` running the shipped etc/sipdisp.yaml route,
fed datagrams as bytes with an explicit clock (no socket, no reactor), under
``valgrind --tool=callgrind``: N replays to warm up, then N more between two
marks (callgrind dumps its counters on entering ``sched_yield``). The
instructions between the marks divided by N are the marginal cost of one,
with interpreter start-up, imports and first-time costs outside the window.
``PYTHONHASHSEED=0`` and a collection before the window make the count
repeat (three runs agree to within 0.01 %).

    python bench/instructions.py                    # measure, print JSON
    python bench/instructions.py --check            # exit 1 if > 10 % over the baseline
    python bench/instructions.py --write-baseline   # bench/instructions-baseline.json
    python bench/instructions.py replay call 300    # the replay alone, no counting

One call is what ``../shared/bench`` sends: INVITE (with SDP), 100, 180,
200 (with SDP) from the callee, ACK, BYE, 200: 7 datagrams in and 7 out of
the proxy. Calls start 0.25 s apart on the clock, so in the measured window
(calls 151-300, 37.5-75 s) the Timer J/K/L/M deadlines of earlier calls
fire as they do under steady load. One REGISTER is a new user's REGISTER
answered 200 by ``save("location")`` (contacts in memory, no
authentication, as bench/sipdisp-register.yaml).

The replay checks what the proxy sends at every step and stops with an
error if it is not the expected message: a count of a broken call is no count.
"""

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "bench" / "instructions-baseline.json"
#: replays per run: the smaller run and the larger one are N and 2N
DEFAULT_COUNTS = {"call": 150, "register": 300}
TOLERANCE = 0.10

UAC = ("10.0.0.1", 5070)
UAS = ("127.0.0.1", 5080)

SDP = (b"v=0\r\no=user1 53655765 2353687637 IN IP4 10.0.0.1\r\ns=-\r\n"
       b"c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")

INVITE = (
    "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-{n}-1-0\r\n"
    "From: sipp <sip:sipp@10.0.0.1:5070>;tag={n}SIPpTag001\r\n"
    "To: service <sip:service@127.0.0.1:5060>\r\n"
    "Call-ID: {n}-bench@10.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: sip:sipp@10.0.0.1:5070\r\n"
    "Max-Forwards: 70\r\n"
    "Subject: Performance Test\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n\r\n")

IN_DIALOG = (
    "{method} sip:service@127.0.0.1:5080 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-{n}-{cseq}-{step}\r\n"
    "{route}\r\n"
    "From: sipp <sip:sipp@10.0.0.1:5070>;tag={n}SIPpTag001\r\n"
    "To: service <sip:service@127.0.0.1:5060>;tag={n}SIPpTag011\r\n"
    "Call-ID: {n}-bench@10.0.0.1\r\n"
    "CSeq: {cseq} {method}\r\n"
    "Contact: sip:sipp@10.0.0.1:5070\r\n"
    "Max-Forwards: 70\r\n"
    "Subject: Performance Test\r\n"
    "Content-Length: 0\r\n\r\n")

REGISTER = (
    "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-r{n}\r\n"
    "From: <sip:user{n}@127.0.0.1>;tag=r{n}\r\n"
    "To: <sip:user{n}@127.0.0.1>\r\n"
    "Call-ID: reg-{n}@10.0.0.1\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:user{n}@10.0.0.1:5070>\r\n"
    "Max-Forwards: 70\r\n"
    "Expires: 3600\r\n"
    "Content-Length: 0\r\n\r\n")

# the headers a UAS copies from a request into its response (RFC 3261 8.2.6.2),
# as sipdisp writes them
_COPIED = (b"Via:", b"From:", b"Call-ID:", b"CSeq:", b"Record-Route:")


class BenchError(AssertionError):
    """The proxy did not send what a working call needs."""


def _first_line(data):
    return data.split(b"\r\n", 1)[0]


def _answer(request, status, reason, to_tag, body=b""):
    """The response a UAS builds to ``request`` (bytes), with plain byte ops
    so the replay's own cost stays small beside the proxy's."""
    head = request[:request.index(b"\r\n\r\n")].split(b"\r\n")
    lines = [b"SIP/2.0 %d %s" % (status, reason)]
    to = b""
    for line in head[1:]:
        if line.startswith(_COPIED):
            lines.append(line)
        elif line.startswith(b"To:"):
            to = line
    if to_tag and b";tag=" not in to:
        to += b";tag=" + to_tag
    lines.append(to)
    if body:
        lines.append(b"Contact: <sip:service@127.0.0.1:5080>")
        lines.append(b"Content-Type: application/sdp")
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _expect(out, want):
    """The one datagram in ``out`` whose first line starts with ``want``
    (``[(port, first line prefix)]`` in order); fails loudly otherwise."""
    got = [(t.port, _first_line(d)) for d, t in out]
    if len(out) != len(want) or any(
            port != p or not line.startswith(prefix)
            for (port, line), (p, prefix) in zip(got, want)):
        raise BenchError(f"expected {want}, the proxy sent {got}")
    return [d for d, _ in out]


class CallReplay:
    """The shipped route on a core with one UAS (dispatcher set 0)."""

    def __init__(self):
        from sipdisp.proxy import Listener, ProxyCore, Target
        from tests.support.shipped import shipped_route
        listener = Listener("udp0", "udp", "127.0.0.1", 5060)
        self.core = ProxyCore([listener], None)
        shipped_route(self.core, [f"sip:{UAS[0]}:{UAS[1]}"])
        self.uac = Target("udp", *UAC, None, listener)
        self.uas = Target("udp", *UAS, None, listener)
        self.now = 0.0

    def _tick(self, now):
        core = self.core
        while True:
            deadline = core.next_deadline()
            if deadline is None or deadline > now:
                break
            core.on_timers(max(self.now, deadline))
            self.now = max(self.now, deadline)
        self.now = now

    def one(self, n):
        """Call number ``n``: its 14 datagrams, every reply checked."""
        core, uac, uas = self.core, self.uac, self.uas
        self._tick(n * 0.25)
        now = self.now
        invite = INVITE.format(n=n, length=len(SDP)).encode() + SDP
        out = core.receive(invite, uac, now)
        trying, fwd = _expect(out, [(5070, b"SIP/2.0 100"), (5080, b"INVITE")])
        tag = b"%dSIPpTag011" % n
        _expect(core.receive(_answer(fwd, 100, b"Trying", None), uas, now), [])
        out = core.receive(_answer(fwd, 180, b"Ringing", tag), uas, now)
        _expect(out, [(5070, b"SIP/2.0 180")])
        ok = _answer(fwd, 200, b"OK", tag, SDP)
        _expect(core.receive(ok, uas, now), [(5070, b"SIP/2.0 200")])
        rr = re.search(rb"\r\nRecord-Route: ([^\r]*)", fwd).group(1).decode()
        route = f"Route: {rr}"
        ack = IN_DIALOG.format(method="ACK", n=n, cseq=1, step=5, route=route).encode()
        _expect(core.receive(ack, uac, now + 0.01), [(5080, b"ACK")])
        bye = IN_DIALOG.format(method="BYE", n=n, cseq=2, step=6, route=route).encode()
        fwd_bye, = _expect(core.receive(bye, uac, now + 0.5), [(5080, b"BYE")])
        out = core.receive(_answer(fwd_bye, 200, b"OK", None), uas, now + 0.5)
        _expect(out, [(5070, b"SIP/2.0 200")])


class RegisterReplay:
    """The shipped route with the registrar, contacts in memory."""

    def __init__(self):
        from sipdisp.proxy.target import Target
        from tests.support.registrar import Stack
        self.stack = Stack({"proxy": {"domains": ["127.0.0.1"]},
                            "registrar": {"max_unauthenticated_aors": 0},
                            "usrloc": {"db_mode": 0}}, now=0.0)
        self.core = self.stack.core
        self.uac = Target("udp", *UAC, None, self.stack.udp)
        self.now = 0.0

    def one(self, n):
        """REGISTER number ``n`` (a new user), answered 200."""
        core = self.core
        now = self.now = n * 0.01
        while (deadline := core.next_deadline()) is not None and deadline <= now:
            core.on_timers(deadline)
        out = core.receive(REGISTER.format(n=n).encode(), self.uac, now)
        _expect(out, [(5070, b"SIP/2.0 200")])


SCENARIOS = {"call": CallReplay, "register": RegisterReplay}


def replay(scenario, count, mark=None):
    """Run ``count`` replays of ``scenario`` in this process; with ``mark``,
    call it before and after replays ``count + 1 .. 2 * count`` (and run
    those too): the window callgrind counts."""
    runner = SCENARIOS[scenario]()
    for n in range(1, count + 1):
        runner.one(n)
    if mark is None:
        return
    gc.collect()  # the same collector state at the start of every window
    mark()
    for n in range(count + 1, 2 * count + 1):
        runner.one(n)
    mark()


def _mark():
    # callgrind dumps (and zeroes) its counters when this libc function is
    # entered (--dump-before=sched_yield); nothing else on the path calls it
    os.sched_yield()


# -- counting ------------------------------------------------------------------------

def _valgrind():
    return shutil.which("valgrind")


def measure(scenarios, counts=None, python=sys.executable):
    """Marginal instructions per replay of each scenario, ``{name: count}``.

    One process under callgrind replays ``N`` of a scenario to warm it up,
    then ``N`` more between two marks; the instructions between the marks
    divided by ``N`` are the figure (start-up, imports and the first-time
    costs stay outside the window).
    """
    counts = counts or DEFAULT_COUNTS
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(ROOT),
               PYTHONDONTWRITEBYTECODE="1")
    plan = ",".join(f"{name}:{counts[name]}" for name in scenarios)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = [_valgrind(), "--tool=callgrind", f"--callgrind-out-file={out}",
               "--dump-before=sched_yield", "--dump-line=no",
               python, str(Path(__file__).resolve()), "window", plan]
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"replay failed under callgrind:\n{proc.stderr[-4000:]}")
        totals = {}
        for path in Path(tmp).iterdir():
            suffix = path.name.rsplit(".", 1)[-1]
            if suffix.isdigit():
                totals[int(suffix)] = _total(path)
    # dumps: 1 ends the warm-up of the first scenario, 2 its window, 3 the
    # next warm-up, 4 its window...
    if len(totals) != 2 * len(scenarios):
        raise RuntimeError(f"expected {2 * len(scenarios)} callgrind dumps, got {sorted(totals)}")
    return {name: round(totals[2 * i + 2] / counts[name]) for i, name in enumerate(scenarios)}


def _total(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def main(argv=None):
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    rep = sub.add_parser("replay", help="replay in this process, no counting")
    rep.add_argument("scenario", choices=sorted(SCENARIOS))
    rep.add_argument("count", type=int)
    win = sub.add_parser("window", help="what callgrind runs: warm-up and marked windows")
    win.add_argument("plan", help="scenario:N,scenario:N")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--runs", type=int, default=1, help="measure this many times each")
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 when a count exceeds the baseline by > {TOLERANCE:.0%}")
    parser.add_argument("--write-baseline", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "replay":
        replay(args.scenario, args.count)
        return 0
    if args.command == "window":
        for item in args.plan.split(","):
            name, count = item.split(":")
            replay(name, int(count), _mark)
        return 0
    if _valgrind() is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    scenarios = args.scenario or sorted(SCENARIOS)
    runs = [measure(scenarios) for _ in range(args.runs)]
    result = {name: runs[0][name] if args.runs == 1 else [r[name] for r in runs]
              for name in scenarios}
    print(json.dumps(result, indent=2))
    if args.write_baseline:
        BASELINE.write_text(json.dumps(
            {name: (v if isinstance(v, int) else min(v)) for name, v in result.items()},
            indent=2) + "\n")
    if args.check:
        return 1 if over_budget(result) else 0
    return 0


def over_budget(result, baseline=None):
    """The ``(scenario, count, allowed)`` of every count over the budget."""
    base = baseline or json.loads(BASELINE.read_text())
    over = []
    for name, value in result.items():
        value = value if isinstance(value, int) else min(value)
        allowed = base[name] * (1 + TOLERANCE)
        if value > allowed:
            over.append((name, value, round(allowed)))
    return over


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
