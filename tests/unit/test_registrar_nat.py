"""NAT traversal (Kamailio's nathelper): detection, the received address of
NATed registrations, Contact fixing, and keepalives on the clock."""

import pytest

from sipdisp.proxy import ProxyCore
from sipdisp.proxy.context import RequestContext
from sipdisp.proxy.target import Target
from sipdisp.registrar.nat import fix_nated_contact, is_private, nat_uac_test
from sipdisp.sip import parse_message
from tests.support.registrar import Stack, invite, requests

NODE = ("127.0.0.1", 5080)
NODES = [(1, "sip:127.0.0.1:5080")]


def ctx_for(raw, source):
    """A RequestContext for a parsed request from ``source`` ``(proto, host, port)``."""
    return RequestContext(ProxyCore([], None), parse_message(raw), Target(*source), None, 0.0)


@pytest.mark.parametrize("host, private", [("10.1.2.3", True), ("172.20.0.1", True),
                                           ("192.168.1.1", True), ("100.64.0.1", True),
                                           ("127.0.0.1", False), ("8.8.8.8", False),
                                           ("fd00::1", True), ("example.com", False)])
def test_private_addresses(host, private):
    """RFC 1918, RFC 6598 and ULA addresses are private; loopback and names are not."""
    assert is_private(host) is private


def test_nat_uac_test_flags():
    """Each test bit looks at its own evidence: private Contact, Via vs source, port, WS."""
    raw = invite("sip:a@example.com", via=("192.168.1.10", 5060))
    behind = ctx_for(raw, ("udp", "203.0.113.5", 61000))
    assert nat_uac_test(behind, 1) and nat_uac_test(behind, 2) and nat_uac_test(behind, 4)
    assert nat_uac_test(behind, 16) and nat_uac_test(behind, 19)
    plain = ctx_for(invite("sip:a@example.com", via=("203.0.113.5", 5060)),
                    ("udp", "203.0.113.5", 5060))
    assert not nat_uac_test(plain, 1 | 2 | 4 | 8 | 16 | 32 | 128)
    assert nat_uac_test(ctx_for(raw, ("ws", "203.0.113.5", 1)), 64)


def test_fix_nated_contact_rewrites_host_and_port_only():
    """fix_nated_contact puts the source address in the Contact and keeps user and params."""
    raw = invite("sip:a@example.com", via=("192.168.1.10", 5060),
                 extra=[]).replace(b"Contact: <sip:bob@192.168.1.10:5060>",
                                   b"Contact: <sip:bob@192.168.1.10:5060;ob>;expires=60")
    ctx = ctx_for(raw, ("udp", "203.0.113.5", 61000))
    assert fix_nated_contact(ctx)
    assert ctx.request.get("contact") == "<sip:bob@203.0.113.5:61000;ob>;expires=60"


def test_nated_registration_stores_received_and_calls_go_there():
    """A REGISTER from behind NAT stores its source as received; calls go to that address."""
    s = Stack({}, rows=NODES)
    ua = s.ua("alice", host="192.168.1.10", port=5060)
    raw = ua.register_bytes()
    out = s.send(raw, source=("203.0.113.5", 61000))
    assert out[0][0].status == 200
    (b,) = s.location.bindings("alice", s.now)
    assert b.received == "sip:203.0.113.5:61000" and b.contact == "sip:alice@192.168.1.10:5060"
    out = s.send(invite("sip:alice@example.com"), source=NODE)
    (fwd, target), = requests(out, "INVITE")
    assert (target.host, target.port) == ("203.0.113.5", 61000)
    assert str(fwd.uri) == "sip:alice@192.168.1.10:5060"


def test_keepalives_are_sent_to_nated_contacts_every_interval():
    """With natping_interval 20 each NATed UDP contact gets an OPTIONS every 20 s; others none."""
    s = Stack({"nat": {"natping_interval": 20}}, rows=NODES)
    s.send(s.ua("alice", host="192.168.1.10", port=5060).register_bytes(),
           source=("203.0.113.5", 61000))
    s.ua("bob", host="203.0.113.9", port=5060).register()
    out = s.advance(20)
    pings = requests(out, "OPTIONS")
    assert [(t.host, t.port) for _, t in pings] == [("203.0.113.5", 61000)]
    assert pings[0][0].get("from").startswith("<sip:pinger@localhost>")
    assert len(requests(s.advance(20), "OPTIONS")) == 1


def test_crlf_keepalives_and_tcp_flows():
    """natping_method CRLF sends CRLF CRLF to UDP contacts, and TCP flows get it on their connection."""
    s = Stack({"nat": {"natping_interval": 15, "natping_method": "CRLF"}}, rows=NODES)
    s.send(s.ua("alice", host="192.168.1.10", port=5060).register_bytes(),
           source=("203.0.113.5", 61000))
    conn = s.open_conn("tcp", "203.0.113.7", 40000)
    s.ua("bob", host="203.0.113.7", port=40000, proto="tcp", conn=conn).register()
    out = s.advance(15)
    assert sorted((t.proto, t.host) for d, t in out if d == b"\r\n\r\n") == \
        [("tcp", "203.0.113.7"), ("udp", "203.0.113.5")]


def test_no_keepalives_when_the_interval_is_zero():
    """natping_interval 0 (the default) sends nothing."""
    s = Stack({}, rows=NODES)
    s.send(s.ua("alice", host="192.168.1.10", port=5060).register_bytes(),
           source=("203.0.113.5", 61000))
    assert requests(s.advance(120), "OPTIONS") == []
