"""Next hops given as names through a running sipdisp, resolved against a DNS
server the test starts on loopback (Twisted Names serving a zone): NAPTR ->
SRV -> A, the TTL of the cache, and failover from the first SRV target to the
second (RFC 3263 4.3) on a 503 and on silence."""

import time

import pytest

from tests.support import sipmsg
from tests.support.dnsserver import DnsServer
from tests.support.peers import UdpEndpoint
from tests.support.processes import Sipdisp, free_port

TTL = 2


def zone(first_port, second_port):
    """pbx.test: NAPTR to _sip._udp.pbx.test, SRV first.pbx.test (priority 10)
    and second.pbx.test (20), both 127.0.0.1; every record with a TTL of 2 s."""
    return f"""
zone = [
    SOA('test', mname='ns.test', rname='root.test', serial=1, refresh=60, retry=60,
        expire=60, minimum=1, ttl={TTL}),
    NAPTR('pbx.test', order=10, preference=10, flags=b'S', service=b'SIP+D2U', regexp=b'',
          replacement='_sip._udp.pbx.test', ttl={TTL}),
    SRV('_sip._udp.pbx.test', priority=10, weight=0, port={first_port},
        target='first.pbx.test', ttl={TTL}),
    SRV('_sip._udp.pbx.test', priority=20, weight=0, port={second_port},
        target='second.pbx.test', ttl={TTL}),
    A('first.pbx.test', '127.0.0.1', ttl={TTL}),
    A('second.pbx.test', '127.0.0.1', ttl={TTL}),
]
"""


def proxy_config(dns_port):
    """sipdisp dispatching to sip:pbx.test (UDP only), asking the test's DNS server."""
    return {"listen": {"udp": ["127.0.0.1:0"], "tcp": [], "ws": []},
            "proxy": {"next_hop": "sip:pbx.test", "branch_timeout": 1.0},
            "dispatcher": {"ping_interval": 0},
            "dns": {"servers": [f"127.0.0.1:{dns_port}"], "timeout": 1.0}}


def call(uac, proxy_port, uas, answer=200, failing=None):
    """An INVITE from ``uac`` through sipdisp: ``failing`` (if given) answers
    503 first, then ``uas`` answers ``answer``; returns the UAC's final status."""
    raw = sipmsg.request("INVITE", "sip:bob@pbx.test", via_host="127.0.0.1", via_port=uac.port)
    uac.send(raw, proxy_port)
    if failing is not None:
        first = failing.recv(match=lambda m: m.is_request and m.method == "INVITE")
        failing.send(sipmsg.response_to(first.to_bytes(), 503, "Service Unavailable"),
                     failing.last_source[1])
        failing.recv(match=lambda m: m.is_request and m.method == "ACK")
    fwd = uas.recv(timeout=5, match=lambda m: m.is_request and m.method == "INVITE")
    uas.send(sipmsg.response_to(fwd.to_bytes(), answer, "OK",
                                extra=[("contact", f"<sip:bob@127.0.0.1:{uas.port}>")]),
             uas.last_source[1])
    final = uac.recv(timeout=5, match=lambda m: not m.is_request and m.status >= 200)
    return final.status


@pytest.fixture
def peers():
    """A UAC and two UAS sockets on loopback, closed after the test."""
    made = [UdpEndpoint() for _ in range(3)]
    yield made
    for peer in made:
        peer.close()


def test_naptr_srv_a_and_failover_on_503_then_the_cache_ttl(tmp_path, peers):
    """NAPTR, SRV and A are asked once; the first target's 503 fails over to the
    second within the same call; a second call within the TTL asks nothing, one
    after the TTL asks again."""
    uac, first, second = peers
    with DnsServer(tmp_path, zone(first.port, second.port)) as dns:
        with Sipdisp(tmp_path, proxy_config(dns.port)) as proxy:
            port = proxy.port("udp")
            assert call(uac, port, second, failing=first) == 200
            asked = dns.queries()
            assert ("NAPTR", "pbx.test") in asked and ("SRV", "_sip._udp.pbx.test") in asked
            assert ("A", "first.pbx.test") in asked or ("A", "second.pbx.test") in asked
            # within the TTL: from the cache
            assert call(uac, port, second, failing=first) == 200
            assert dns.queries() == asked
            time.sleep(TTL + 0.5)
            assert call(uac, port, second, failing=first) == 200
            assert dns.queries().count(("SRV", "_sip._udp.pbx.test")) == 2
            assert "Traceback" not in proxy.log_text()


def test_a_silent_first_target_fails_over_to_the_second_after_the_branch_timeout(tmp_path, peers):
    """Nothing listens on the first SRV target: after proxy.branch_timeout the
    INVITE goes to the second target, whose 200 reaches the caller."""
    uac, _, second = peers
    dead = free_port()
    with DnsServer(tmp_path, zone(dead, second.port)) as dns:
        with Sipdisp(tmp_path, proxy_config(dns.port)) as proxy:
            started = time.monotonic()
            assert call(uac, proxy.port("udp"), second) == 200
            assert time.monotonic() - started >= 0.9  # after the 1 s branch timeout
            assert "Traceback" not in proxy.log_text()
