"""The dispatcher with SIPp standing in for FreeSWITCH nodes, through a real
twistd-started sipdisp running the default (Kamailio seed) route, with the
sets read from a list file, PostgreSQL and MariaDB.

Every load is bounded: SIPp runs a fixed number of calls (-m) and each wait
has a deadline."""

import os
import subprocess
import sys
import time

import pytest

from tests.support.calls import rpc
from tests.support.processes import ROOT, Sipdisp, Sipp, free_port, sipp_available

pytestmark = pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed")

SOURCES = ["file", "postgres", "mysql"]
QUIET = {"console": {"enabled": False}, "http": {"enabled": False}}
#: JSON-RPC on a free port, to read destination states from dispatcher.list
WITH_RPC = {"http": {"listen": "127.0.0.1:0"}}


def _db_url(source):
    from sipdisp.storage.testing import MYSQL_URL, PG_URL
    return {"postgres": PG_URL, "mysql": MYSQL_URL}[source]


@pytest.fixture(params=SOURCES)
def source(request):
    """Where the sets come from; database sources are skipped when unreachable."""
    if request.param != "file":
        from sipdisp.storage.testing import Unreachable, server_for
        try:
            server_for(_db_url(request.param)).check_reachable()
        except Unreachable as exc:
            pytest.skip(str(exc))
    return request.param


def sets_config(tmp_path, source, uris, **dispatcher):
    """Config putting ``uris`` in set 0, read from ``source``."""
    cfg = {"dispatcher": dict(dispatcher)}
    if source == "file":
        path = tmp_path / "dispatcher.list"
        path.write_text("".join(f"0 {uri}\n" for uri in uris))
        cfg["dispatcher"].update(source="file", list_file=str(path))
        return cfg
    url = _db_url(source)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    from sipdisp.storage.testing import server_for
    server = server_for(url)
    for attempt in range(3):  # the storage tests may drop the shared test tables meanwhile
        subprocess.run([sys.executable, "-m", "sipdisp.cli", "db", "init", url], env=env,
                       check=True, timeout=60, stdout=subprocess.DEVNULL)
        try:
            server.execute("DELETE FROM dispatcher")
            for n, uri in enumerate(uris):
                server.execute("INSERT INTO dispatcher (setid, destination, flags, priority, "
                               "attrs, description) VALUES (%s, %s, %s, %s, %s, %s)",
                               (0, uri, 0, 0, "", f"fs{n + 1}"))
            break
        except Exception:
            if attempt == 2:
                raise
            time.sleep(1.0)
    cfg["dispatcher"]["source"] = "db"
    cfg["storage"] = {"url": url}
    return cfg


def start_proxy(tmp_path, cfg, destinations=2):
    """sipdisp with ``cfg``, once it has loaded its ``destinations``."""
    merged = dict(QUIET)
    merged.update(cfg)
    proxy = Sipdisp(tmp_path, merged).start()
    try:
        wait_for(proxy, f"dispatcher: loaded 1 set(s), {destinations} destination(s)", 20)
    except AssertionError:
        proxy.stop()
        raise
    return proxy


def node(tmp_path, name, port, scenario="uas.xml"):
    """A FreeSWITCH stand-in answering calls, and OPTIONS pings (-aa)."""
    return Sipp(tmp_path, name, scenario, port, "u1", extra=["-aa"]).start()


def caller(tmp_path, proxy, calls, rate, scenario="uac.xml", name="uac"):
    return Sipp(tmp_path, name, scenario, free_port(), "u1",
                target=f"127.0.0.1:{proxy.port('udp')}",
                extra=["-m", calls, "-r", rate, "-l", 400, "-d", 100,
                       "-timeout", 120, "-timeout_error"]).start()


def wait_for(proxy, text, timeout):
    """Poll the proxy's log until a line with ``text`` appears; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        for line in proxy.log_text().splitlines():
            if text in line:
                return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged within {timeout} s:\n{proxy.log_text()[-3000:]}")


def states(proxy):
    """``{uri: two-letter state}`` of every destination, from ``dispatcher.list``."""
    return {target["DEST"]["URI"]: target["DEST"]["FLAGS"]
            for record in rpc(proxy, "dispatcher.list")["RECORDS"]
            for target in record["SET"]["TARGETS"]}


def wait_state(proxy, uri, state, timeout, seen=None):
    """Poll ``dispatcher.list`` until ``uri`` is in ``state`` (two letters); the seconds it
    took. Each poll's states go to ``seen`` (a list of dicts) when given."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        now = states(proxy)
        if seen is not None:
            seen.append(now)
        if now.get(uri) == state:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{uri} not {state} within {timeout} s: {states(proxy)}")


def stop_all(*procs):
    for proc in procs:
        if proc is not None:
            proc.stop()


def test_round_robin_2000_calls_split_1000_1000(tmp_path, source):
    """2,000 calls over two nodes with ds_select_dst(0, 4): exactly 1,000 each, none failed."""
    ports = [free_port(), free_port()]
    cfg = sets_config(tmp_path, source, [f"sip:127.0.0.1:{p}" for p in ports])
    with start_proxy(tmp_path, cfg) as proxy:
        nodes = [node(tmp_path, f"fs{i}", p) for i, p in enumerate(ports)]
        uac = None
        try:
            uac = caller(tmp_path, proxy, 2000, 200)
            rc = uac.wait(120)
            time.sleep(0.5)
        finally:
            stop_all(uac, *nodes)
        stats = uac.stats()
        assert stats["ok"] == 2000 and stats["failed"] == 0, (stats, uac.errors()[-2000:])
        assert [n.stats()["ok"] for n in nodes] == [1000, 1000]
        assert rc == 0
        assert "Traceback" not in proxy.log_text()


def test_killed_node_loses_no_call_is_marked_inactive_and_comes_back(tmp_path, source):
    """At 50 calls/s, killing one node loses no call set-up (its calls move to the other after
    2 s), it is inactive within interval x threshold + ping timeout, and back once restarted."""
    interval, threshold, ping_timeout = 1.0, 2, 1.0
    ports = [free_port(), free_port()]
    uris = [f"sip:127.0.0.1:{p}" for p in ports]
    cfg = sets_config(tmp_path, source, uris, probing_mode=1, ping_interval=interval,
                      ping_timeout=ping_timeout, probing_threshold=threshold)
    cfg["sip"] = {"fr_timer": 3.0}  # a BYE to the dead node fails in 3 s
    cfg.update(WITH_RPC)
    with start_proxy(tmp_path, cfg) as proxy:
        live = node(tmp_path, "fs1", ports[0])
        doomed = node(tmp_path, "fs2", ports[1])
        reborn = uac = None
        try:
            uac = caller(tmp_path, proxy, 400, 50, scenario="ds_uac.xml")
            time.sleep(3.0)
            doomed.proc.kill()  # SIGKILL: no goodbye
            doomed.proc.wait(5)
            took = wait_state(proxy, uris[1], "IP", 10)
            assert took <= interval * threshold + ping_timeout + 1.0, took
            rc = uac.wait(120)
            reborn = node(tmp_path, "fs2b", ports[1])
            back = wait_state(proxy, uris[1], "AP", 10)
            assert back <= interval + ping_timeout + 1.5, back
            again = caller(tmp_path, proxy, 20, 20, name="uac2")
            assert again.wait(60) == 0
        finally:
            stop_all(uac, live, reborn)
        stats = uac.stats()
        assert stats["ok"] == 400 and stats["failed"] == 0, (stats, uac.errors()[-2000:])
        assert rc == 0
        assert reborn.stats()["ok"] >= 5  # traffic goes to the restarted node again
        assert "Traceback" not in proxy.log_text()


def test_probing_alone_detects_a_dead_node_in_time(tmp_path):
    """Without traffic, pings with their own 1 s timeout take a killed node AP -> TP -> IP
    within interval x threshold + ping timeout, where it stays; the live node stays AP."""
    interval, threshold, ping_timeout = 1.0, 3, 1.0
    ports = [free_port(), free_port()]
    uris = [f"sip:127.0.0.1:{p}" for p in ports]
    cfg = sets_config(tmp_path, "file", uris, probing_mode=1, ping_interval=interval,
                      ping_timeout=ping_timeout, probing_threshold=threshold)
    cfg.update(WITH_RPC)
    with start_proxy(tmp_path, cfg) as proxy:
        nodes = [node(tmp_path, "fs1", ports[0]), node(tmp_path, "fs2", ports[1])]
        seen = []
        try:
            time.sleep(2.5)  # a few healthy rounds
            seen.append(states(proxy))
            nodes[1].proc.kill()
            nodes[1].proc.wait(5)
            took = wait_state(proxy, uris[1], "IP", 10, seen)
            assert took <= interval * threshold + ping_timeout + 1.0, took
            time.sleep(1.5)
            seen.append(states(proxy))  # before the live node is stopped too
        finally:
            stop_all(*nodes)
        walk = [s[uris[1]] for s in seen]
        walk = [state for n, state in enumerate(walk) if n == 0 or walk[n - 1] != state]
        # through trying to inactive, and there it stays
        assert walk == ["AP", "TP", "IP"], walk
        assert {s[uris[0]] for s in seen} == {"AP"}


def test_node_answering_500_fails_over_to_the_other(tmp_path, source):
    """A node answering 500 makes RTF_DISPATCH try the other node: every call succeeds there."""
    ports = [free_port(), free_port()]
    uris = [f"sip:127.0.0.1:{p}" for p in ports]
    cfg = sets_config(tmp_path, source, uris, probing_mode=1, ping_interval=1.0)
    with start_proxy(tmp_path, cfg) as proxy:
        broken = node(tmp_path, "fs500", ports[0], "ds_uas_500.xml")
        good = node(tmp_path, "fs2", ports[1])
        uac = None
        try:
            uac = caller(tmp_path, proxy, 30, 10)
            rc = uac.wait(60)
            time.sleep(0.3)
        finally:
            stop_all(uac, broken, good)
        stats = uac.stats()
        assert stats["ok"] == 30 and stats["failed"] == 0, (stats, uac.errors()[-2000:])
        assert good.stats()["ok"] == 30
        assert broken.stats()["created"] >= 1
        assert f"{uris[0]} (set 0) AP -> IP: ds_mark_dst(ip) after 500" in proxy.log_text()
        assert rc == 0
