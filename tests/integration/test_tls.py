"""SIP over TLS and secure WebSocket with real peers and certificates made by
tests/support/certs.py: incoming TLS and WSS listeners, and outgoing TLS
verified against ``tls.ca_file`` (service-identity checks the IP address)."""

import re
import ssl
import time

import pytest

from tests.support.certs import TestCA
from tests.support.peers import (
    Dialog, StreamEndpoint, TlsServer, UdpEndpoint, WsPeer, client_tls_context,
    ensure_node_modules, node_available, options,
)
from tests.support.processes import Sipdisp, Sipp, free_port, sipp_available

needs_sipp = pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed "
                                "(apt-get install sip-tester); .ci/run installs it")
needs_node = pytest.mark.skipif(not node_available(),
                                reason="node/npm are not installed; .ci/run installs them")

FLOW_RR = re.compile(r"^<sip:sdf-(\d+)@127\.0\.0\.1:(\d+);transport=tls;lr;r2=on;sdsig=(\w+)>$")


@pytest.fixture
def ca(tmp_path):
    """A fresh test CA in tmp_path/certs."""
    return TestCA(tmp_path / "certs")


@pytest.fixture
def server_cert(ca):
    """A server certificate for 127.0.0.1 (IP SAN) signed by ``ca``."""
    return ca.issue("server", ips=["127.0.0.1"])


def tls_config(cert, **proxy):
    """sipdisp config with TLS and WSS listeners on ``cert``, trusting its CA."""
    return {"listen": {"tls": ["127.0.0.1:0"], "wss": ["127.0.0.1:0"]},
            "tls": {"certificate": cert.cert, "private_key": cert.key, "ca_file": cert.ca},
            "proxy": proxy}


def test_generated_certificate_is_valid_for_its_ip_only(server_cert):
    """The generated server certificate verifies for 127.0.0.1 and for no other name."""
    ctx = client_tls_context(server_cert.ca)
    with TlsServer(server_cert.cert, server_cert.key) as server:
        peer = StreamEndpoint.connect(server.port, ctx)
        assert peer.sock.version().startswith("TLS")
        peer.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            StreamEndpoint.connect(server.port, ctx, server_hostname="127.0.0.2")


@needs_sipp
def test_call_over_tls_listener_to_udp_uas(tmp_path, server_cert):
    """An INVITE over TLS is relayed to SIPp on UDP; 100/180/200 come back on the
    TLS connection, and ACK and BYE along the Record-Route get the BYE's 200."""
    uas_port = free_port()
    cfg = tls_config(server_cert, next_hop=f"sip:127.0.0.1:{uas_port}")
    with Sipdisp(tmp_path, cfg) as proxy:
        uas = Sipp(tmp_path, "uas", "uas.xml", uas_port, "u1", extra=["-m", 1]).start()
        client = StreamEndpoint.connect(proxy.port("tls"), client_tls_context(server_cert.ca))
        try:
            local = client.sock.getsockname()[1]
            dialog = Dialog("TLS", f"127.0.0.1:{local}",
                            f"sip:alice@127.0.0.1:{local};transport=tls",
                            f"sip:bob@127.0.0.1:{proxy.port('tls')};transport=tls")
            client.send(dialog.invite().encode())
            responses = [client.recv(timeout=10)]
            while responses[-1].status < 200:
                responses.append(client.recv(timeout=10))
            assert [r.status for r in responses] == [100, 180, 200]
            ok = responses[-1]
            rr = ok.values("record-route")
            sig = proxy.rr_signature(ok.call_id, ok.from_tag)
            assert len(rr) == 2 and rr[0] == f"<sip:127.0.0.1:{proxy.port('udp')};lr;r2=on;sdsig={sig}>", rr
            flow = FLOW_RR.match(rr[1])
            assert flow and int(flow.group(2)) == proxy.port("tls") and flow.group(3) == sig, rr

            dialog.learn(ok)
            client.send(dialog.ack().encode())
            client.send(dialog.bye().encode())
            bye_ok = client.recv(timeout=10)
            assert (bye_ok.status, bye_ok.cseq_method) == (200, "BYE")
            assert uas.wait(15) == 0
        finally:
            client.close()
            uas.stop()
        assert uas.stats()["ok"] == 1, uas.errors()[-2000:]
        assert "Traceback" not in proxy.log_text()


@needs_node
def test_wss_handshake_and_options(tmp_path, server_cert):
    """A Node ws client trusting the test CA opens wss with subprotocol sip and
    gets 200 to OPTIONS; without the CA it refuses the certificate."""
    ensure_node_modules()
    with Sipdisp(tmp_path, tls_config(server_cert)) as proxy:
        url = f"wss://127.0.0.1:{proxy.port('wss')}"
        with WsPeer(url, ca=server_cert.ca) as peer:
            upgrade, opened = peer.open(timeout=10)
            assert upgrade["headers"]["sec-websocket-protocol"] == "sip"
            assert opened["protocol"] == "sip"
            peer.send(options(f"sip:127.0.0.1:{proxy.port('wss')};transport=wss", "WSS",
                              "wss.invalid"))
            resp = peer.recv_sip(timeout=10)
            assert resp.status == 200
            assert resp.cseq_method == "OPTIONS"
        with WsPeer(url) as untrusting:
            error = untrusting.expect("error", timeout=10)
            assert "certificate" in error["message"], error
            assert not [e for e in untrusting.seen if e["event"] == "open"]
        assert "Traceback" not in proxy.log_text()


def test_outgoing_tls_verified_with_ca_file(tmp_path, server_cert):
    """An INVITE routed to a transport=tls next hop reaches a TLS server whose
    certificate verifies against tls.ca_file; its 200 and the ACK reuse the connection."""
    with TlsServer(server_cert.cert, server_cert.key) as server:
        cfg = tls_config(server_cert, next_hop=f"sip:127.0.0.1:{server.port};transport=tls")
        with Sipdisp(tmp_path, cfg) as proxy:
            caller = UdpEndpoint()
            try:
                udp = proxy.port("udp")
                dialog = Dialog("UDP", f"127.0.0.1:{caller.port}",
                                f"sip:alice@127.0.0.1:{caller.port}", f"sip:bob@127.0.0.1:{udp}")
                caller.send(dialog.invite().encode(), udp)
                invite = server.expect(timeout=10)
                assert invite.method == "INVITE"
                assert invite.values("via")[0].startswith(
                    f"SIP/2.0/TLS 127.0.0.1:{proxy.port('tls')};"), invite.values("via")
                ok = caller.recv(timeout=10, match=lambda m: m.status >= 200)
                assert ok.status == 200
                dialog.learn(ok)
                caller.send(dialog.ack().encode(), udp)
                ack = server.expect(timeout=10)
                assert ack.method == "ACK" and ack.call_id == dialog.call_id
                assert server.accepted == 1  # the ACK went over the same TLS connection
            finally:
                caller.close()
            assert "Traceback" not in proxy.log_text()


def test_outgoing_tls_to_wrong_identity_fails_with_408(tmp_path, ca, server_cert):
    """A TLS next hop whose certificate names another address is refused
    (service-identity), and the caller gets 408 once the branch timeout expires."""
    wrong = ca.issue("wrong", ips=["127.0.0.2"], dns=["other.sipdisp.test"])
    with TlsServer(wrong.cert, wrong.key) as server:
        cfg = tls_config(server_cert, next_hop=f"sip:127.0.0.1:{server.port};transport=tls",
                         branch_timeout=1.5)
        with Sipdisp(tmp_path, cfg) as proxy:
            caller = UdpEndpoint()
            try:
                udp = proxy.port("udp")
                dialog = Dialog("UDP", f"127.0.0.1:{caller.port}",
                                f"sip:alice@127.0.0.1:{caller.port}", f"sip:bob@127.0.0.1:{udp}")
                started = time.monotonic()
                caller.send(dialog.invite().encode(), udp)
                final = caller.recv(timeout=10, match=lambda m: m.status >= 200)
                elapsed = time.monotonic() - started
                assert final.status == 408
                assert 1.3 <= elapsed < 6, elapsed
            finally:
                caller.close()
            assert server.received.empty(), "the INVITE must not reach an unverified server"
            assert server.accepted >= 1  # sipdisp did connect, then refused the identity
            assert re.search(rf"TLS with 127\.0\.0\.1:{server.port} failed: .*Mismatch",
                             proxy.log_text()), proxy.log_text()[-2000:]
            assert "Traceback" not in proxy.log_text()


def tls_options_answered(port, ca_file, client_cert=None, timeout=5.0):
    """True if an OPTIONS over a TLS connection to ``port`` gets a response;
    False if the server refuses the connection (handshake or first read fails)."""
    ctx = client_tls_context(ca_file)
    if client_cert is not None:
        ctx.load_cert_chain(client_cert.cert, client_cert.key)
    try:
        peer = StreamEndpoint.connect(port, ctx, timeout=timeout)
    except (ssl.SSLError, OSError):
        return False
    try:
        local = peer.sock.getsockname()[1]
        peer.send(options(f"sip:127.0.0.1:{port};transport=tls", "TLS",
                          f"127.0.0.1:{local}").encode())
        return peer.recv(timeout=timeout).status == 200
    except (ssl.SSLError, OSError):
        return False
    except AssertionError as exc:
        if "closed" in str(exc):
            return False
        raise
    finally:
        peer.close()


def test_client_certificate_required_against_ca_file(tmp_path, ca, server_cert):
    """With tls.require_client_certificate a TLS client without a certificate is
    refused and one with a certificate from tls.ca_file's CA is served."""
    client_cert = ca.issue("client", dns=["client.sipdisp.test"])
    cfg = tls_config(server_cert)
    cfg["tls"]["require_client_certificate"] = True
    with Sipdisp(tmp_path, cfg) as proxy:
        port = proxy.port("tls")
        assert not tls_options_answered(port, server_cert.ca)
        assert tls_options_answered(port, server_cert.ca, client_cert)


def test_client_certificate_required_without_ca_file(tmp_path, ca, server_cert):
    """With tls.require_client_certificate and no tls.ca_file, clients are checked
    against the system trust store: a test-CA client certificate is refused too."""
    client_cert = ca.issue("client", dns=["client.sipdisp.test"])
    cfg = tls_config(server_cert)
    cfg["tls"]["require_client_certificate"] = True
    cfg["tls"]["ca_file"] = None
    with Sipdisp(tmp_path, cfg) as proxy:
        port = proxy.port("tls")
        assert not tls_options_answered(port, server_cert.ca)
        assert not tls_options_answered(port, server_cert.ca, client_cert)
