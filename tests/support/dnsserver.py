"""A DNS server for tests, on loopback: Twisted Names serving one zone file.

    python -m tests.support.dnsserver ZONE_FILE

``ZONE_FILE`` is Python source for ``twisted.names.authority.PySourceAuthority``
(``zone = [SOA(...), SRV(...), A(...)]``). The server binds UDP and TCP on
127.0.0.1 on one free port, prints ``port N`` once it listens and then one
line ``query TYPE NAME`` for every question it is asked, so a test can see
what sipdisp asked and when. ``DnsServer`` starts it as a subprocess.
"""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(zone_file):
    """Serve ``zone_file`` until killed."""
    from twisted.internet import reactor
    from twisted.names import authority, dns, server

    class LoggingFactory(server.DNSServerFactory):
        def handleQuery(self, message, protocol, address):
            for q in message.queries:
                print(f"query {dns.QUERY_TYPES.get(q.type, q.type)} {q.name.name.decode()}",
                      flush=True)
            return super().handleQuery(message, protocol, address)

    factory = LoggingFactory(authorities=[authority.PySourceAuthority(zone_file)])
    for _ in range(50):
        udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
        port = udp.getHost().port
        try:
            reactor.listenTCP(port, factory, interface="127.0.0.1")
        except Exception:
            udp.stopListening()
            continue
        break
    print(f"port {port}", flush=True)
    reactor.run()


class DnsServer:
    """The server above as a subprocess: ``port``, and ``queries()`` (every
    ``(type, name)`` asked so far)."""

    def __init__(self, tmp_path, zone_source):
        self.zone = Path(tmp_path) / "zone.py"
        self.zone.write_text(zone_source)
        self.log = Path(tmp_path) / "dns.log"
        self.proc = None
        self.port = None

    def __enter__(self):
        self._out = open(self.log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.dnsserver", str(self.zone)],
                                     cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for line in self.log.read_text().splitlines():
                if line.startswith("port "):
                    self.port = int(line.split()[1])
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"DNS server did not start:\n{self.log.read_text()}")

    def queries(self):
        """``[(type, name)]`` asked so far, in order."""
        return [tuple(line.split()[1:3]) for line in self.log.read_text().splitlines()
                if line.startswith("query ")]

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self._out.close()


if __name__ == "__main__":
    main(sys.argv[1])
