"""Listeners of a twistd-started sipdisp: the shipped etc/sipdisp.yaml as it
is (only ports and storage paths moved), several sockets per transport, the
advertised address, and a bad configuration refused in one line."""

import re
import subprocess
import sys

import pytest

from tests.support.peers import (
    Dialog, StreamEndpoint, UdpEndpoint, WsPeer, answer, ensure_node_modules,
    node_available, options,
)
from tests.support.processes import ROOT, Sipdisp, free_port

DEFAULT_CONFIG = ROOT / "etc" / "sipdisp.yaml"


def default_config_text(tmp_path):
    """etc/sipdisp.yaml verbatim but for free ports in every quoted listen
    address ("127.0.0.1:N"; SIP URIs such as proxy.next_hop are left alone)
    and storage under tmp_path. Ports shared in the file (udp and tcp on
    5060) stay shared."""
    text = DEFAULT_CONFIG.read_text()
    moved = {}

    def new_port(m):
        port = moved.setdefault(m.group(2), free_port())
        return f'"{m.group(1)}:{port}"'

    text = re.sub(r'"(127\.0\.0\.1):(\d+)"', new_port, text)
    assert moved, "no listen address rewritten"
    db = tmp_path / "sipdisp.db"
    text, n_url = re.subn(r'(?m)^(\s+url:\s*)"sqlite:///[^"]*"', rf'\1"sqlite:///{db}"', text)
    text, n_spool = re.subn(r'(?m)^(\s+spool_dir:\s*)"[^"]*"',
                            rf'\1"{tmp_path / "spool"}"', text)
    assert n_url == 1 and n_spool == 1, "storage keys not found in etc/sipdisp.yaml"
    return text


def options_over_udp(port, timeout=5.0):
    """Send OPTIONS to sipdisp's UDP ``port``; return the response."""
    ep = UdpEndpoint()
    try:
        ep.send(options(f"sip:127.0.0.1:{port}", "UDP", f"127.0.0.1:{ep.port}").encode(), port)
        return ep.recv(timeout)
    finally:
        ep.close()


def options_over_tcp(port, timeout=5.0):
    """Send OPTIONS over a TCP connection to ``port``; return the response."""
    ep = StreamEndpoint.connect(port)
    try:
        local = ep.sock.getsockname()[1]
        ep.send(options(f"sip:127.0.0.1:{port};transport=tcp", "TCP",
                        f"127.0.0.1:{local}").encode())
        return ep.recv(timeout)
    finally:
        ep.close()


def test_every_listener_of_the_default_config_answers_options(tmp_path):
    """With etc/sipdisp.yaml (ports and paths moved) UDP, TCP and WS OPTIONS each get 200."""
    proxy = Sipdisp(tmp_path, {})
    proxy.config_path.write_text(default_config_text(tmp_path))
    with proxy:
        assert {"udp", "tcp", "ws"} <= set(proxy.ports), proxy.ports
        assert proxy.port("udp") == proxy.port("tcp")  # 5060 for both in the file
        assert options_over_udp(proxy.port("udp")).status == 200
        assert options_over_tcp(proxy.port("tcp")).status == 200
        if node_available():
            ensure_node_modules()
            with WsPeer(f"ws://127.0.0.1:{proxy.port('ws')}") as peer:
                peer.open(timeout=10)
                peer.send(options(f"sip:127.0.0.1:{proxy.port('ws')};transport=ws", "WS",
                                  "ws.invalid"))
                assert peer.recv_sip(timeout=10).status == 200
        assert "Traceback" not in proxy.log_text()
    if not node_available():
        pytest.skip("node/npm are not installed: the WS listener was not exercised")


def test_bad_key_stops_twistd_with_one_line(tmp_path):
    """A misspelt key makes `twistd -n sipdisp -c bad.yaml` exit non-zero with one
    line naming the key and no traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen:\n  udp: [\"127.0.0.1:0\"]\nproxy:\n  next_hopp: \"sip:x\"\n")
    result = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "sipdisp", "-c", str(bad)],
        cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0
    assert len(output.splitlines()) == 1, output
    assert "proxy.next_hopp" in output
    assert "Traceback" not in output


def test_two_udp_listen_addresses_both_answer(tmp_path):
    """Two UDP listen addresses are both bound and both answer OPTIONS."""
    cfg = {"listen": {"udp": ["127.0.0.1:0", "127.0.0.1:0"], "tcp": [], "ws": []}}
    with Sipdisp(tmp_path, cfg) as proxy:
        ports = proxy.ports["udp"]
        assert len(ports) == 2 and ports[0] != ports[1], proxy.ports
        for port in ports:
            assert options_over_udp(port).status == 200


def test_advertised_host_is_written_in_via_and_record_route(tmp_path):
    """advertise.host replaces the listen address in the Via and Record-Route of relayed requests."""
    uas = UdpEndpoint()
    cfg = {"advertise": {"host": "proxy.sipdisp.test"},
           "proxy": {"next_hop": f"sip:127.0.0.1:{uas.port}"}}
    caller = UdpEndpoint()
    try:
        with Sipdisp(tmp_path, cfg) as proxy:
            udp = proxy.port("udp")
            dialog = Dialog("UDP", f"127.0.0.1:{caller.port}",
                            f"sip:alice@127.0.0.1:{caller.port}", f"sip:bob@127.0.0.1:{udp}")
            caller.send(dialog.invite().encode(), udp)
            invite = uas.recv(timeout=10, match=lambda m: m.is_request)
            assert invite.values("via")[0].startswith(f"SIP/2.0/UDP proxy.sipdisp.test:{udp};")
            sig = proxy.rr_signature(invite.call_id, invite.from_tag)
            assert invite.values("record-route") == [
                f"<sip:proxy.sipdisp.test:{udp};lr;sdsig={sig}>"]
            uas.sock.sendto(answer(invite, 486, "Busy Here", to_tag="busy").encode(),
                            uas.last_source)
            final = caller.recv(timeout=10, match=lambda m: m.status >= 200)
            assert final.status == 486
            # an OPTIONS naming the advertised host is for sipdisp itself
            caller.send(options(f"sip:proxy.sipdisp.test:{udp}", "UDP",
                                f"127.0.0.1:{caller.port}").encode(), udp)
            assert caller.recv(timeout=10, match=lambda m: m.cseq_method == "OPTIONS").status == 200
    finally:
        caller.close()
        uas.close()
