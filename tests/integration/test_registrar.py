"""The registrar in a real sipdisp (twistd) on 127.0.0.1: SIPp registers
10,000 subscribers with digest auth, registrations survive restarts in
db_mode 1-3, and calls to registered users fork to every contact."""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

from sipdisp.auth.subscribers import subscriber_row
from sipdisp.sip import parse_message
from tests.support.processes import ROOT, Sipdisp, Sipp, free_port, sipp_available
from tests.support.registrar import UA, rpc

DOMAIN = "example.com"


def init_db(tmp_path, users):
    """``sipdisp db init`` on the test's SQLite file, then ``users`` subscribers
    (``user00000``... with password ``pw-user00000``) written kamctl style;
    returns SIPp's injection file (user;domain;[authentication ...])."""
    path = tmp_path / "sipdisp.db"
    subprocess.run([sys.executable, "-m", "sipdisp.cli", "db", "init", f"sqlite:///{path}"],
                   cwd=ROOT, check=True, timeout=60, stdout=subprocess.DEVNULL)
    names = [f"user{i:05d}" for i in range(users)]
    with sqlite3.connect(path) as db:
        rows = [subscriber_row(n, DOMAIN, f"pw-{n}") for n in names]
        db.executemany("INSERT INTO subscriber (username, domain, password, ha1, ha1b) "
                       "VALUES (:username, :domain, :password, :ha1, :ha1b)", rows)
    csv = tmp_path / "users.csv"
    csv.write_text("SEQUENTIAL\n" + "".join(
        f"{n};{DOMAIN};[authentication username={n} password=pw-{n}]\n" for n in names))
    return csv


def config(mode, **extra):
    """auth on, usrloc.db_mode ``mode``, example.com local."""
    cfg = {"auth": {"enabled": True, "secret": "integration"},
           "usrloc": {"db_mode": mode, "timer_interval": 5},
           "proxy": {"domains": [DOMAIN]}}
    cfg.update(extra)
    return cfg


def wait_for(check, timeout, what):
    """Poll ``check()`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout}s (last: {last!r})")


def register_with_sipp(tmp_path, proxy, csv, count, rate, name="reg"):
    """SIPp registers ``count`` CSV users at ``rate``/s; returns its stats."""
    sipp = Sipp(tmp_path, name, "register_auth.xml", free_port(), "u1",
                target=f"127.0.0.1:{proxy.port('udp')}",
                extra=["-inf", csv, "-m", count, "-r", rate, "-l", 2000,
                       "-timeout", 120, "-timeout_error"]).start()
    rc = sipp.wait(180)
    stats = sipp.stats()
    assert stats["ok"] == count, (stats, sipp.errors()[-2000:], proxy.log_text()[-3000:])
    assert stats["failed"] == 0 and rc == 0
    return stats


def cpu_seconds(pid):
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    """Resident set size of a process in MB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def location_rows(tmp_path):
    """How many rows the location table holds."""
    with sqlite3.connect(tmp_path / "sipdisp.db") as db:
        return db.execute("SELECT count(*) FROM location").fetchone()[0]


pytestmark = pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed")


def test_ten_thousand_subscribers_register_and_survive_a_restart(tmp_path):
    """SIPp registers 10,000 distinct users with digest auth at 500/s, zero failures;
    after a restart in write-through mode (db_mode 1) all 10,000 are still registered."""
    csv = init_db(tmp_path, 10000)
    proxy = Sipdisp(tmp_path, config(1))
    with proxy:
        started, cpu0 = time.monotonic(), cpu_seconds(proxy.proc.pid)
        stats = register_with_sipp(tmp_path, proxy, csv, 10000, 500)
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(proxy.proc.pid) - cpu0
        # docs/benchmarks.md quotes this line (pytest -s shows it)
        print(f"\n10,000 digest registrations at 500/s (db_mode 1, SQLite): {elapsed:.1f} s, "
              f"sipdisp CPU {cpu:.2f} s = {cpu / 10:.3f} s per 1,000 registrations "
              f"(2 REGISTERs each), RSS {rss_mb(proxy.proc.pid):.0f} MB")
        ul = rpc(proxy, "ul.stats")
        assert ul["contacts"] == 10000 and ul["auth_authorized"] == 10000, ul
        assert ul["auth_replayed"] == 0
        wait_for(lambda: location_rows(tmp_path) == 10000, 30, "10,000 location rows")
        assert "Traceback" not in proxy.log_text()
    assert elapsed < 120
    again = Sipdisp(tmp_path, config(1))
    with again:
        ul = wait_for(lambda: (lambda u: u if u["contacts"] == 10000 else None)(
            rpc(again, "ul.stats")), 30, "10,000 bindings loaded")
        assert ul["aors"] == 10000
        got = rpc(again, "ul.lookup", "location", f"user04711@{DOMAIN}")
        assert got["Contacts"][0]["Contact"].startswith("sip:user04711@127.0.0.1:")


@pytest.mark.parametrize("mode", [2, 3])
def test_restart_keeps_registrations_in_write_back_and_db_only_modes(tmp_path, mode):
    """db_mode 2 (flushed on stop) and 3 (database only) keep 200 SIPp registrations across a restart."""
    csv = init_db(tmp_path, 200)
    with Sipdisp(tmp_path, config(mode)) as proxy:
        register_with_sipp(tmp_path, proxy, csv, 200, 100)
    assert location_rows(tmp_path) == 200
    with Sipdisp(tmp_path, config(mode)) as again:
        got = wait_for(lambda: _lookup(again, f"user00123@{DOMAIN}"), 20, "user00123 found")
        assert got["Contacts"][0]["Contact"].startswith("sip:user00123@127.0.0.1:")


def _lookup(proxy, aor):
    url = f"http://127.0.0.1:{proxy.port('http')}/rpc"
    body = json.dumps({"jsonrpc": "2.0", "method": "ul.lookup", "params": [aor], "id": 1})
    req = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as response:
        return json.loads(response.read()).get("result")


# -- calls to registered users ---------------------------------------------------------

class Phone:
    """A UDP (or TCP) socket on 127.0.0.1 registering as ``user`` with digest auth."""

    def __init__(self, proxy, user, password, proto="udp"):
        self.proxy = proxy
        self.proto = proto
        kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.settimeout(5)
        if proto == "udp":
            self.sock.bind(("127.0.0.1", 0))
        else:
            self.sock.connect(("127.0.0.1", proxy.port("tcp")))
        self.port = self.sock.getsockname()[1]
        self.ua = UA(None, user, "127.0.0.1", self.port, proto, None, password=password)
        self._buf = b""

    def send(self, data):
        """Send to the proxy."""
        if self.proto == "udp":
            self.sock.sendto(data, ("127.0.0.1", self.proxy.port("udp")))
        else:
            self.sock.sendall(data)

    def recv(self):
        """The next SIP message (bounded by the socket timeout)."""
        if self.proto == "udp":
            return parse_message(self.sock.recv(65535))
        while b"\r\n\r\n" not in self._buf:
            self._buf += self.sock.recv(65535)
        head, _, rest = self._buf.partition(b"\r\n\r\n")
        self._buf = rest
        return parse_message(head + b"\r\n\r\n", datagram=False)

    def register(self):
        """REGISTER, answer the 401, return the final response."""
        self.send(self.ua.register_bytes())
        challenge = self.recv()
        assert challenge.status == 401, challenge
        auth = self.ua.answer(challenge.get("www-authenticate"), "REGISTER", f"sip:{DOMAIN}")
        self.send(self.ua.register_bytes(auth=auth))
        return self.recv()

    def close(self):
        """Close the socket (a TCP phone's connection goes away)."""
        self.sock.close()


def call(caller, caller_port, proxy, user):
    """An INVITE from the FreeSWITCH stand-in socket to ``user``; returns its raw bytes."""
    raw = (f"INVITE sip:{user}@{DOMAIN} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{caller_port};branch=z9hG4bKfs{time.monotonic_ns()}\r\n"
           f"From: <sip:fs@{DOMAIN}>;tag=fs1\r\nTo: <sip:{user}@{DOMAIN}>\r\n"
           f"Call-ID: fs-{time.monotonic_ns()}@test\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
           f"Contact: <sip:fs@127.0.0.1:{caller_port}>\r\nContent-Length: 0\r\n\r\n").encode()
    caller.sendto(raw, ("127.0.0.1", proxy.port("udp")))
    return raw


def final_from(sock):
    """The first final response arriving on a UDP socket."""
    while True:
        msg = parse_message(sock.recv(65535))
        if not msg.is_request and msg.status >= 200:
            return msg


def test_call_forks_to_all_contacts_404_unknown_480_unreachable(tmp_path):
    """A call from a FreeSWITCH node reaches all three of alice's phones at once;
    an unknown user gets 404; a user whose TCP phone hung up gets 480."""
    init_db(tmp_path, 0)
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller.bind(("127.0.0.1", 0))
    caller.settimeout(5)
    caller_port = caller.getsockname()[1]
    (tmp_path / "dispatcher.list").write_text(f"1 sip:127.0.0.1:{caller_port}\n")
    with sqlite3.connect(tmp_path / "sipdisp.db") as db:
        for user in ("alice", "carol"):
            row = subscriber_row(user, DOMAIN, f"pw-{user}")
            db.execute("INSERT INTO subscriber (username, domain, password, ha1, ha1b) "
                       "VALUES (:username, :domain, :password, :ha1, :ha1b)", row)
    cfg = config(0, dispatcher={"list_file": str(tmp_path / "dispatcher.list")})
    phones = []
    with Sipdisp(tmp_path, cfg) as proxy:
        try:
            phones = [Phone(proxy, "alice", "pw-alice") for _ in range(3)]
            for phone in phones:
                assert phone.register().status == 200
            call(caller, caller_port, proxy, "alice")
            got = [phone.recv() for phone in phones]
            assert [m.method for m in got] == ["INVITE"] * 3
            assert len({m.via.branch for m in got}) == 3
            call(caller, caller_port, proxy, "nobody")
            assert final_from(caller).status == 404 or final_from(caller).status == 404
            tcp = Phone(proxy, "carol", "pw-carol", proto="tcp")
            assert tcp.register().status == 200
            tcp.close()
            time.sleep(0.5)
            call(caller, caller_port, proxy, "carol")
            resp = wait_for(lambda: _final_status(caller), 10, "a final reply for carol")
            assert resp == 480
        finally:
            for phone in phones:
                phone.close()
            caller.close()
        assert "Traceback" not in proxy.log_text()


def _final_status(sock):
    try:
        msg = final_from(sock)
    except socket.timeout:
        return None
    return msg.status if msg.status != 404 else None


def test_a_replayed_register_is_refused(tmp_path):
    """A REGISTER sent again with the credentials of an accepted one (a replay,
    new transaction) gets 401 from a running sipdisp, not 200."""
    init_db(tmp_path, 0)
    with sqlite3.connect(tmp_path / "sipdisp.db") as db:
        db.execute("INSERT INTO subscriber (username, domain, password, ha1, ha1b) "
                   "VALUES (:username, :domain, :password, :ha1, :ha1b)",
                   subscriber_row("dave", DOMAIN, "pw-dave"))
    with Sipdisp(tmp_path, config(0)) as proxy:
        phone = Phone(proxy, "dave", "pw-dave")
        try:
            phone.send(phone.ua.register_bytes())
            challenge = phone.recv().get("www-authenticate")
            auth = phone.ua.answer(challenge, "REGISTER", f"sip:{DOMAIN}")
            phone.send(phone.ua.register_bytes(auth=auth))
            assert phone.recv().status == 200
            phone.send(phone.ua.register_bytes(auth=auth))   # same nonce, same nc
            replayed = phone.recv()
            assert replayed.status == 401, replayed
            assert rpc(proxy, "ul.stats")["auth_replayed"] == 1
        finally:
            phone.close()
