"""Management of a running sipdisp (twistd): a real OpenSSH client in the
Manhole, JSON-RPC over real HTTP, sipdisp-ctl, curl and a /metrics scrape."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from sipdisp.console.web import token_digest
from tests.support.console import write_private_key
from tests.support.processes import ROOT, Sipdisp, Sipp, free_port, sipp_available
from tests.support.sipmsg import request

ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[()][A-Z0-9]|[A-Za-z=>])")
needs_ssh = pytest.mark.skipif(shutil.which("ssh") is None,
                               reason="OpenSSH client not installed (apt-get install "
                                      "openssh-client); .ci/run installs it")
TOKEN = "integration-test-token"


def management_config(directory):
    return {"console": {"listen": "127.0.0.1:0",
                        "authorized_keys": str(directory / "authorized_keys"),
                        "host_key": "var/manhole_host_key"},  # the default: relative to cwd
            "http": {"listen": "127.0.0.1:0"}}


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    public = write_private_key(directory / "id_admin")
    write_private_key(directory / "id_stranger")
    (directory / "authorized_keys").write_text(f"# operators\n{public} admin@test\n")
    return directory


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, keys_dir):
    directory = tmp_path_factory.mktemp("sipdisp")
    with Sipdisp(directory, management_config(keys_dir)) as running:
        yield running


def rpc_url(proxy):
    return f"http://127.0.0.1:{proxy.port('http')}/rpc"


def post(url, payload, token=None, timeout=10):
    """POST a JSON payload; returns (status, parsed body or None)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, json.dumps(payload).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            body = response.read()
            return response.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def rpc(proxy, method, *params):
    status, body = post(rpc_url(proxy), {"jsonrpc": "2.0", "method": method,
                                         "params": list(params), "id": 1})
    assert status == 200, body
    return body["result"]


def known_hosts(proxy, path):
    """A known_hosts file pinning the console's generated host key."""
    pub = (proxy.tmp_path / "var" / "manhole_host_key.pub").read_text().split()
    path.write_text(f"[127.0.0.1]:{proxy.port('ssh')} {pub[0]} {pub[1]}\n")
    return path


def ssh(proxy, key, lines, tmp_path, options=()):
    """Run ``ssh -tt`` into the console, typing ``lines`` then ^D; returns
    (exit code, output without terminal escapes, stderr)."""
    argv = ["ssh", "-tt", "-F", "/dev/null", "-p", str(proxy.port("ssh")),
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", f"UserKnownHostsFile={known_hosts(proxy, tmp_path / 'known_hosts')}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10"]
    if key is not None:
        argv += ["-i", str(key)]
    argv += list(options) + ["admin@127.0.0.1"]
    typed = "".join(line + "\r" for line in lines) + "\x04"
    done = subprocess.run(argv, input=typed.encode(), capture_output=True, timeout=30)
    output = ANSI.sub("", done.stdout.decode("utf-8", "replace")).replace("\r", "")
    return done.returncode, output, done.stderr.decode("utf-8", "replace")


def manhole_json(proxy, keys_dir, tmp_path, expressions):
    """Evaluate each expression in the Manhole; their values as parsed JSON."""
    lines = ["import json"] + [f"print('@@%d ' % {i} + json.dumps({expr}, sort_keys=True))"
                               for i, expr in enumerate(expressions)]
    code, output, err = ssh(proxy, keys_dir / "id_admin", lines, tmp_path)
    assert code == 0, (output, err)
    found = dict(re.findall(r"^@@(\d+) (.*)$", output, re.M))
    return [json.loads(found[str(i)]) for i in range(len(expressions))]


# -- the Manhole over a real OpenSSH client -------------------------------------------


@needs_ssh
def test_ssh_login_evaluates_commands(proxy, keys_dir, tmp_path):
    """An authorized key logs in over OpenSSH, core.version() and tm.list() print their values."""
    code, output, err = ssh(proxy, keys_dir / "id_admin",
                            ["core.version()", "tm.list()", "dispatcher"], tmp_path)
    assert code == 0, err
    version = rpc(proxy, "core.version")
    assert f"\n{version!r}\n" in output
    assert "\n[]\n" in output
    assert "help() lists objects and commands" in output
    assert "Traceback" not in output
    assert "console: admin logged in with key" in proxy.log_text()


@needs_ssh
def test_host_key_is_ed25519_private_and_pinned(proxy, keys_dir, tmp_path):
    """The generated host key is Ed25519, mode 0600, and is the key the server presents."""
    path = proxy.tmp_path / "var" / "manhole_host_key"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert (proxy.tmp_path / "var" / "manhole_host_key.pub").read_text().startswith("ssh-ed25519 ")
    code, _, err = ssh(proxy, keys_dir / "id_admin", [], tmp_path)  # StrictHostKeyChecking=yes
    assert code == 0, err


@needs_ssh
def test_wrong_key_is_refused(proxy, keys_dir, tmp_path):
    """A key not in authorized_keys gets "Permission denied" and no console."""
    code, output, err = ssh(proxy, keys_dir / "id_stranger", ["core.version()"], tmp_path)
    assert code == 255
    assert "Permission denied (publickey)" in err
    assert "sipdisp" not in output


@needs_ssh
def test_password_attempt_is_refused(proxy, tmp_path):
    """A client trying passwords is refused: the server offers public keys only."""
    code, _, err = ssh(proxy, None, [], tmp_path, [
        "-o", "PubkeyAuthentication=no",
        "-o", "PreferredAuthentications=password,keyboard-interactive"])
    assert code == 255
    assert "Permission denied (publickey)" in err


# -- one answer from every front-end ---------------------------------------------------


def ctl(*argv, env=None):
    """Run sipdisp-ctl as a process; returns (exit code, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "sipdisp.ctl", *argv], capture_output=True,
                          timeout=30, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@needs_ssh
def test_ctl_curl_and_manhole_give_the_same_answer(proxy, keys_dir, tmp_path):
    """sipdisp-ctl, curl on /rpc and the Manhole agree for the same commands."""
    methods = rpc(proxy, "system.listMethods")
    names = ["core.version", "system.listMethods"] + [
        name for name in ("dispatcher.list", "ul.dump", "dlg.list") if name in methods]
    in_manhole = manhole_json(proxy, keys_dir, tmp_path, [f"{name}()" for name in names])
    for name, from_manhole in zip(names, in_manhole):
        code, out, err = ctl("--url", rpc_url(proxy), name)
        assert code == 0, err
        from_ctl = json.loads(out)
        from_rpc = rpc(proxy, name)
        assert from_ctl == from_rpc == from_manhole, name
        if shutil.which("curl"):
            body = json.dumps({"jsonrpc": "2.0", "method": name, "id": 1})
            curl = subprocess.run(["curl", "-sS", "--max-time", "10", "-H",
                                   "Content-Type: application/json", "-d", body,
                                   rpc_url(proxy)], capture_output=True, timeout=30)
            assert json.loads(curl.stdout)["result"] == from_rpc, name


def test_ctl_prints_version_and_maps_failures_to_exit_codes(proxy):
    """sipdisp-ctl core.version prints the version; errors exit 1 and 3."""
    code, out, _ = ctl("--url", rpc_url(proxy), "core.version")
    assert code == 0 and json.loads(out) == rpc(proxy, "core.version")
    code, _, err = ctl("--url", rpc_url(proxy), "nope.nothing")
    assert code == 1 and "-32601" in err
    code, _, err = ctl("--url", rpc_url(proxy), "stats.get", "a", "b")
    assert code == 1 and "-32602" in err
    code, _, err = ctl("--url", f"http://127.0.0.1:{free_port()}/rpc", "--timeout", "5",
                       "core.version")
    assert code == 3 and "cannot reach" in err


def test_jsonrpc_batch_over_real_http(proxy):
    """A batch over real HTTP is answered in order, with errors in place."""
    status, body = post(rpc_url(proxy), [
        {"jsonrpc": "2.0", "method": "core.uptime", "id": "a"},
        {"jsonrpc": "2.0", "method": "nope.nothing", "id": "b"},
        {"jsonrpc": "2.0", "method": "core.version"},
    ])
    assert status == 200
    assert [r["id"] for r in body] == ["a", "b"]
    assert body[0]["result"]["uptime"] > 0
    assert body[1]["error"]["code"] == -32601


# -- metrics -----------------------------------------------------------------------------


def scrape(proxy, token=None):
    parser = pytest.importorskip("prometheus_client.parser")
    req = urllib.request.Request(f"http://127.0.0.1:{proxy.port('http')}/metrics")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    out = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def sample(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def test_metrics_parse_and_count_sip_traffic(proxy):
    """/metrics parses, and an answered OPTIONS and a garbage datagram move their counters."""
    before = scrape(proxy)
    port = proxy.port("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.bind(("127.0.0.1", 0))
        s.sendto(request("OPTIONS", f"sip:127.0.0.1:{port}",
                         via_port=s.getsockname()[1]), ("127.0.0.1", port))
        reply = s.recv(65535)
        assert reply.startswith(b"SIP/2.0 ")
        status = reply.split()[1].decode()  # whatever the route answers, it is counted
        s.sendto(b"garbage\r\n\r\n", ("127.0.0.1", port))
    deadline = time.monotonic() + 5
    while True:
        after = scrape(proxy)
        if sample(after, "sipdisp_errors_total", kind="parse") > \
                sample(before, "sipdisp_errors_total", kind="parse") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for name, labels in [("sipdisp_sip_requests_received_total", {"method": "OPTIONS"}),
                         ("sipdisp_sip_replies_sent_total", {"status": status}),
                         ("sipdisp_errors_total", {"kind": "parse"})]:
        assert sample(after, name, **labels) == sample(before, name, **labels) + 1, name
    assert sample(after, "sipdisp_build_info", version=rpc(proxy, "core.version").split()[1]) == 1


@pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed (apt-get install "
                                                 "sip-tester); .ci/run installs it")
def test_metrics_count_sipp_calls(tmp_path, keys_dir):
    """Twenty SIPp calls through sipdisp show up as INVITEs, BYEs and 200s in /metrics."""
    uas_port = free_port()
    config = management_config(keys_dir)
    config["proxy"] = {"next_hop": f"sip:127.0.0.1:{uas_port}"}
    with Sipdisp(tmp_path, config) as running:
        before = scrape(running)
        uas = Sipp(tmp_path, "uas", "uas.xml", uas_port).start()
        try:
            uac = Sipp(tmp_path, "uac", "uac.xml", free_port(),
                       target=f"127.0.0.1:{running.port('udp')}",
                       extra=["-m", 20, "-r", 20, "-d", 100, "-timeout", 30,
                              "-timeout_error"]).start()
            assert uac.wait(60) == 0, uac.errors()[-2000:]
        finally:
            uas.stop()
        after = scrape(running)
    got = {key: sample(after, name, **labels) - sample(before, name, **labels)
           for key, name, labels in [
               ("invite_in", "sipdisp_sip_requests_received_total", {"method": "INVITE"}),
               ("invite_out", "sipdisp_sip_requests_sent_total", {"method": "INVITE"}),
               ("bye_in", "sipdisp_sip_requests_received_total", {"method": "BYE"}),
               ("ok_in", "sipdisp_sip_replies_received_total", {"status": "200"}),
               ("ok_out", "sipdisp_sip_replies_sent_total", {"status": "200"})]}
    assert got == {"invite_in": 20, "invite_out": 20, "bye_in": 20, "ok_in": 40,
                   "ok_out": 40}, got


# -- the bearer token, and the host key across restarts ------------------------------------


def test_token_guards_rpc_and_metrics(tmp_path, keys_dir):
    """With http.token_sha256 set, calls without the token get 401 / exit 4, with it they work."""
    config = management_config(keys_dir)
    config["http"]["token_sha256"] = token_digest(TOKEN)
    with Sipdisp(tmp_path, config) as running:
        call = {"jsonrpc": "2.0", "method": "core.version", "id": 1}
        assert post(rpc_url(running), call)[0] == 401
        assert post(rpc_url(running), call, token="wrong")[0] == 401
        status, body = post(rpc_url(running), call, token=TOKEN)
        assert status == 200 and body["result"].startswith("sipdisp ")
        code, _, err = ctl("--url", rpc_url(running), "core.version")
        assert code == 4 and "unauthorized" in err
        code, out, _ = ctl("--url", rpc_url(running), "core.version",
                           env={"SIPDISP_TOKEN": TOKEN})
        assert code == 0 and json.loads(out) == body["result"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(running)
        assert refused.value.code == 401
        assert "sipdisp_transactions" in {name for name, _ in scrape(running, TOKEN)}


def test_host_key_survives_a_restart(tmp_path, keys_dir):
    """A restarted sipdisp presents the host key it generated the first time."""
    with Sipdisp(tmp_path, management_config(keys_dir)):
        first = (tmp_path / "var" / "manhole_host_key.pub").read_text()
    with Sipdisp(tmp_path, management_config(keys_dir)) as again:
        assert (tmp_path / "var" / "manhole_host_key.pub").read_text() == first
        assert "generated Ed25519 host key" not in again.log_text()
