"""Start-up as an operator sees it, through ``twistd -n sipdisp -c FILE``: a port
in use, a database that refuses, a URL that does not parse each stop it with
one line naming the key and a non-zero exit; the start-up lines tell the
truth about authentication and routing; and the Kamailio seed example runs
with accounting to syslog (a unix socket of the test's own), SIPp calling."""

import socket
import subprocess
import sys
import time

import pytest
import yaml

from tests.support.processes import ROOT, Sipdisp, Sipp, free_port, sipp_available

BASE = {"listen": {"udp": ["127.0.0.1:0"], "tcp": [], "ws": []},
        "console": {"enabled": False}, "http": {"enabled": False}}


def start_fails(tmp_path, cfg):
    """Run twistd on ``cfg`` (merged over BASE and a SQLite storage); returns (rc, output)."""
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    raw["storage"] = {"url": f"sqlite:///{tmp_path / 'x.db'}", "spool_dir": str(tmp_path / "sp")}
    for key, value in cfg.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key].update(value)
        else:
            raw[key] = value
    path = tmp_path / "start.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "sipdisp", "-c", str(path)],
        cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60)
    return result.returncode, (result.stdout + result.stderr).strip()


def assert_one_line(rc, output, *words):
    """A non-zero exit with one line holding ``words`` and no traceback."""
    assert rc != 0
    assert len(output.splitlines()) == 1, output
    assert "Traceback" not in output
    for word in words:
        assert word in output, output


@pytest.mark.parametrize("proto, kind", [("udp", socket.SOCK_DGRAM),
                                         ("tcp", socket.SOCK_STREAM)])
def test_a_port_in_use_is_one_line_naming_the_listen_key(tmp_path, proto, kind):
    """Another socket holds the port: one line names listen.<proto>, the address and the cause."""
    holder = socket.socket(socket.AF_INET, kind)
    holder.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        holder.listen(1)
    port = holder.getsockname()[1]
    try:
        listen = {"udp": [], "tcp": [], "ws": []}
        listen[proto] = [f"127.0.0.1:{port}"]
        rc, out = start_fails(tmp_path, {"listen": listen})
    finally:
        holder.close()
    assert_one_line(rc, out, f"listen.{proto}", f"127.0.0.1:{port}", "address already in use")


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_a_database_that_refuses_is_one_line_naming_storage_url(tmp_path, backend):
    """A role the server does not know: one line names storage.url and the server's reason."""
    from sipdisp.storage.testing import MYSQL_URL, PG_URL, Unreachable, server_for
    from sipdisp.storage.url import DatabaseURL
    good = DatabaseURL({"postgres": PG_URL, "mysql": MYSQL_URL}[backend])
    try:
        server_for(good.text).check_reachable()
    except Unreachable as exc:
        pytest.skip(str(exc))
    scheme = "postgres" if backend == "postgres" else "mysql"
    url = f"{scheme}://sipdisp_nosuch:wrong@{good.host}:{good.port}/{good.database}"
    rc, out = start_fails(tmp_path, {"storage": {"url": url}})
    assert_one_line(rc, out, "storage.url", "refuses", "sipdisp_nosuch")
    assert "wrong" not in out  # the password is never shown


def test_a_storage_url_that_does_not_parse_is_one_line(tmp_path):
    """storage.url with a port that is not a number: one line naming storage.url."""
    rc, out = start_fails(tmp_path, {"storage": {"url": "postgres://u:p@127.0.0.1:port/db"}})
    assert_one_line(rc, out, "storage.url")


def test_a_redis_url_that_does_not_parse_is_one_line(tmp_path):
    """A cachedb URL with a bad port: one line naming cache.engines.redis."""
    rc, out = start_fails(tmp_path, {"cache": {"engines": {"redis": "redis://127.0.0.1:x/0"}}})
    assert_one_line(rc, out, "cache.engines.redis")


def test_startup_lines_name_the_routing_and_spare_the_auth_warning(tmp_path):
    """A YAML route that challenges REGISTERs: no 'registrar without authentication' line,
    and the running line says the YAML route is in use; the built-in route says so too."""
    route = {"request_route": [
        {"if": {"is_method": "REGISTER"}, "then": [
            {"if": {"not": {"www_authorize": ["", "subscriber"]}},
             "then": [{"www_challenge": ["", 0]}, "exit"]},
            {"save": "location"}, "exit"]},
        {"sl_send_reply": [404, "Not here"]}]}
    cfg = dict(BASE, registrar={"enabled": True}, routing=route)
    for name in ("yaml", "builtin"):
        (tmp_path / name).mkdir()
    with Sipdisp(tmp_path / "yaml", cfg) as p:
        text = p.log_text()
    assert "registrar without authentication" not in text
    assert "routing: the YAML route of the configuration" in text
    with Sipdisp(tmp_path / "builtin", dict(BASE, registrar={"enabled": True})) as p:
        text = p.log_text()
    assert "routing: the built-in route, dispatcher set 0 from" in text
    assert "registrar without authentication" in text  # still said when it is true


@pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed")
def test_kamailio_seed_example_accounts_to_syslog(tmp_path):
    """etc/examples/kamailio-seed.yaml on loopback: three SIPp calls through its route give
    six 'ACC: transaction answered' syslog lines (INVITE and BYE) with the seed's log_extra,
    and its xlog lines carry the seed's log_prefix."""
    log_sock = tmp_path / "log.sock"
    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslog.bind(str(log_sock))
    syslog.settimeout(0.2)
    uas_port = free_port()
    (tmp_path / "dispatcher.list").write_text(f"0 sip:127.0.0.1:{uas_port}\n")
    cfg = yaml.safe_load((ROOT / "etc" / "examples" / "kamailio-seed.yaml").read_text())
    cfg["listen"] = {"udp": ["127.0.0.1:0"], "tcp": [], "ws": []}
    cfg["storage"] = {"url": f"sqlite:///{tmp_path / 'seed.db'}",
                      "spool_dir": str(tmp_path / "spool")}
    cfg["dispatcher"].update(source="file", list_file=str(tmp_path / "dispatcher.list"),
                             probing_mode=0)  # SIPp's UAS does not answer OPTIONS
    cfg["accounting"]["syslog_address"] = str(log_sock)
    cfg["console"] = {"enabled": False}
    cfg["http"] = {"enabled": False}
    try:
        with Sipdisp(tmp_path, cfg) as proxy:
            uas = Sipp(tmp_path, "uas", "uas.xml", uas_port).start()
            try:
                uac = Sipp(tmp_path, "uac", "uac.xml", free_port(),
                           target=f"127.0.0.1:{proxy.port('udp')}",
                           extra=["-m", 3, "-r", 10, "-d", 100, "-timeout", 30,
                                  "-timeout_error"]).start()
                rc = uac.wait(60)
            finally:
                uas.stop()
            lines = []
            deadline = time.monotonic() + 5
            while len(lines) < 6 and time.monotonic() < deadline:
                try:
                    lines.append(syslog.recv(8192).decode())
                except socket.timeout:
                    pass
            log_text = proxy.log_text()
    finally:
        syslog.close()
    assert rc == 0, (uac.errors()[-2000:], log_text[-3000:])
    answered = [line for line in lines if "ACC: transaction answered: " in line]
    assert len(answered) == 6, (lines, log_text[-3000:])
    assert all(line.startswith("<29>sipdisp[") for line in answered)  # LOG_DAEMON, notice
    records = [dict(p.split("=", 1) for p in line.split(": ", 3)[3].split(";"))
               for line in answered]
    assert sorted(r["method"] for r in records) == ["BYE"] * 3 + ["INVITE"] * 3
    for r in records:
        assert (r["code"], r["src_ip"], r["src_user"]) == ("200", "127.0.0.1", "sipp"), r
        assert r["timestamp"].isdigit() and r["call_id"] and r["from_tag"] and r["to_tag"], r
    assert {r["dst_user"] for r in records if r["method"] == "INVITE"} == {"service"}
    assert "} --- SCRIPT: going to <sip:service@" in log_text
    assert "{1 1 INVITE " in log_text
