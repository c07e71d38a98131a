"""The cache against real Redis servers: the machine's Redis on
127.0.0.1:6379 for store/fetch/remove/add and the seed's REGISTER line, and a
private redis-server the test stops and starts again under 50 calls/s."""

import itertools
import shutil
import time
import uuid

import pytest

from tests.support.peers import UdpEndpoint
from tests.support.cluster import REDIS, redis_cli, redis_up
from tests.support.cluster import PrivateRedis as RedisServer
from tests.support.processes import Sipdisp, Sipp, free_port, sipp_available
from tests.support.registrar import rpc

_ids = itertools.count(1)


pytestmark = pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("redis-cli")
                                     and redis_up(*REDIS)),
                                reason="needs redis-server, redis-cli and Redis on 127.0.0.1:6379")


def options(ua, port, user):
    """Send an OPTIONS from ``user`` to sipdisp and return the response."""
    n = next(_ids)
    ua.send((f"OPTIONS sip:probe@127.0.0.1:{port} SIP/2.0\r\n"
             f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bKopt{n}{uuid.uuid4().hex[:8]}\r\n"
             f"From: <sip:{user}@example.com>;tag=o{n}\r\nTo: <sip:probe@127.0.0.1>\r\n"
             f"Call-ID: opt-{n}-{uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
             "Content-Length: 0\r\n\r\n").encode(), port)
    return ua.recv(5, match=lambda m: not m.is_request)


def register(ua, port, user, contact):
    """Send a REGISTER for ``user``@example.com binding ``contact``, with credentials
    naming ``user`` (auth is off: they only give $au); the response."""
    n = next(_ids)
    ua.send((f"REGISTER sip:example.com SIP/2.0\r\n"
             f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bKreg{n}{uuid.uuid4().hex[:8]}\r\n"
             f"From: <sip:{user}@example.com>;tag=r{n}\r\nTo: <sip:{user}@example.com>\r\n"
             f"Call-ID: reg-{n}-{uuid.uuid4().hex}\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
             f"Contact: <{contact}>\r\nExpires: 600\r\n"
             f'Authorization: Digest username="{user}", realm="example.com", nonce="n", '
             f'uri="sip:example.com", response="00000000000000000000000000000000"\r\n'
             "Content-Length: 0\r\n\r\n").encode(), port)
    return ua.recv(5, match=lambda m: not m.is_request)


def wait_connected(proxy, timeout=10):
    """Wait until sipdisp's redis engine has its connection."""
    deadline = time.monotonic() + timeout
    while not rpc(proxy, "cache.stats")["engines"]["redis"]["connected"]:
        assert time.monotonic() < deadline, proxy.log_text()[-2000:]
        time.sleep(0.1)


#: OPTIONS: cache_fetch of the From user's key answered in the reason phrase;
#: REGISTER: save, then the seed's line cache_store("redis","$fd:$au","$ct.fields(uri)")
PROBE_ROUTE = [
    {"if": {"eq": ["$rm", "OPTIONS"]},
     "then": [{"if": {"cache_fetch": ["redis", "$fU", "$var(v)"]},
               "then": [{"sl_send_reply": [200, "hit $var(v)"]}, "exit"]},
              {"sl_send_reply": [404, "miss"]}, "exit"]},
    {"if": {"eq": ["$rm", "REGISTER"]},
     "then": [{"if": {"not": {"save": "location"}}, "then": ["exit"]},
              {"cache_store": ["redis", "$fd:$au", "$ct.fields(uri)"]}, "exit"]},
]


def test_store_fetch_remove_add_against_redis_and_the_seeds_register(tmp_path):
    """cache.* commands and the route's cache_fetch read and write the machine's Redis;
    a REGISTER leaves its Contact URI under $fd:$au (the seed's line), as redis-cli sees."""
    user = f"u{uuid.uuid4().hex[:10]}"
    cfg = {"cache": {"engines": {"redis": f"redis://{REDIS[0]}:{REDIS[1]}/0"}},
           "proxy": {"domains": ["example.com"]},
           "routing": {"request_route": PROBE_ROUTE + [
               {"if": {"eq": ["$rm", "INFO"]},
                "then": [{"cache_add": ["redis", "n:$fU", 5, 60, "$var(n)"]},
                         {"cache_sub": ["redis", "n:$fU", 2, 60]},
                         {"if": {"cache_counter_fetch": ["redis", "n:$fU", "$var(m)"]},
                          "then": [{"sl_send_reply": [200, "n=$var(n) m=$var(m)"]}, "exit"]},
                         {"sl_send_reply": [500, "no counter"]}, "exit"]}]}}
    ua = UdpEndpoint()
    try:
        with Sipdisp(tmp_path, cfg) as proxy:
            port = proxy.port("udp")
            wait_connected(proxy)
            assert options(ua, port, user).status == 404
            assert rpc(proxy, "cache.store", "redis", user, "hello", 60)["stored"] is True
            assert redis_cli(REDIS[1], "GET", user) == "hello"
            assert 0 < int(redis_cli(REDIS[1], "TTL", user)) <= 60
            reply = options(ua, port, user)
            assert (reply.status, reply.reason) == (200, "hit hello")
            assert rpc(proxy, "cache.fetch", "redis", user)["value"] == "hello"
            assert rpc(proxy, "cache.remove", "redis", user)["removed"] == 1
            assert redis_cli(REDIS[1], "EXISTS", user) == "0"
            assert options(ua, port, user).status == 404

            reply = register(ua, port, user, f"sip:{user}@127.0.0.1:{ua.port}")
            assert reply.status == 200, reply
            key = f"example.com:{user}"
            deadline = time.monotonic() + 5
            while redis_cli(REDIS[1], "GET", key) == "" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert redis_cli(REDIS[1], "GET", key) == f"sip:{user}@127.0.0.1:{ua.port}"

            n = next(_ids)
            ua.send((f"INFO sip:probe@127.0.0.1:{port} SIP/2.0\r\n"
                     f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bKinfo{n}\r\n"
                     f"From: <sip:{user}@example.com>;tag=i{n}\r\nTo: <sip:probe@127.0.0.1>\r\n"
                     f"Call-ID: info-{n}-{user}\r\nCSeq: 1 INFO\r\nMax-Forwards: 70\r\n"
                     "Content-Length: 0\r\n\r\n").encode(), port)
            reply = ua.recv(5, match=lambda m: not m.is_request)
            assert (reply.status, reply.reason) == (200, "n=5 m=3")
            assert redis_cli(REDIS[1], "GET", f"n:{user}") == "3"
            stats = rpc(proxy, "cache.stats")["engines"]["redis"]
            assert stats["fetch"] >= 3 and stats["hit"] >= 1 and stats["errors"] == {}
            assert "Traceback" not in proxy.log_text()
    finally:
        ua.close()
        redis_cli(REDIS[1], "DEL", f"example.com:{user}", f"n:{user}", user)


def test_a_redis_restart_under_50_calls_per_second_loses_no_call(tmp_path):
    """Redis stopped and started during 400 calls at 50/s: every call completes, cache_fetch
    returns false while it is down, and works again within seconds after it is back."""
    if not sipp_available():
        pytest.skip("SIPp is not installed")
    redis = RedisServer(tmp_path).start()
    uas_port = free_port()
    cfg = {"cache": {"engines": {"redis": f"redis://127.0.0.1:{redis.port}/0"},
                     "redis_timeout": 1.0},
           "proxy": {"next_hop": f"sip:127.0.0.1:{uas_port}"},
           "routing": {"request_route": PROBE_ROUTE + [
               {"if": {"eq": ["$rm", "INVITE"]},
                "then": [{"cache_add": ["redis", "calls", 1]},
                         {"cache_fetch": ["redis", "route:$rU", "$var(hop)"]},
                         {"cache_store": ["redis", "last:$rU", "$ci", 60]},
                         {"set": {"$du": f"sip:127.0.0.1:{uas_port}"}}]},
               "t_relay"]}}
    ua = UdpEndpoint()
    try:
        with Sipdisp(tmp_path, cfg) as proxy:
            port = proxy.port("udp")
            wait_connected(proxy)
            redis_cli(redis.port, "SET", "probe", "before")
            assert options(ua, port, "probe").reason == "hit before"
            uas = Sipp(tmp_path, "uas", "uas.xml", uas_port, "u1").start()
            try:
                uac = Sipp(tmp_path, "uac", "uac.xml", free_port(), "u1",
                           target=f"127.0.0.1:{port}",
                           extra=["-m", 400, "-r", 50, "-l", 200, "-d", 100,
                                  "-timeout", 60, "-timeout_error"]).start()
                time.sleep(2.0)
                redis.stop()
                time.sleep(0.5)
                down = options(ua, port, "probe")
                assert down.status == 404, down  # false at once, the route goes on
                time.sleep(1.5)
                redis.start()
                back = time.monotonic()
                redis_cli(redis.port, "SET", "probe", "after")
                while options(ua, port, "probe").reason != "hit after":
                    assert time.monotonic() - back < 10, proxy.log_text()[-3000:]
                    time.sleep(0.2)
                recovered = time.monotonic() - back
                rc = uac.wait(90)
            finally:
                uas.stop()
            stats = uac.stats()
            assert stats["ok"] == 400, (stats, uac.errors()[-2000:], proxy.log_text()[-3000:])
            assert stats["failed"] == 0 and rc == 0
            assert recovered < 10
            cache = rpc(proxy, "cache.stats")["engines"]["redis"]
            assert cache["errors"].get("not_connected", 0) > 0, cache
            assert cache["connects"] >= 2 and cache["disconnects"] >= 1, cache
            assert int(redis_cli(redis.port, "GET", "calls") or 0) > 0
            log = proxy.log_text()
            assert "lost the connection" in log
            assert f"connected to redis://127.0.0.1:{redis.port}/0 again" in log
            assert "Traceback" not in log
    finally:
        ua.close()
        redis.stop()


def probe_bytes(ua, port, method, user):
    """An out-of-dialog ``method`` from ``user`` as bytes."""
    n = next(_ids)
    return (f"{method} sip:probe@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bKrq{n}{uuid.uuid4().hex[:8]}\r\n"
            f"From: <sip:{user}@example.com>;tag=q{n}\r\nTo: <sip:probe@127.0.0.1>\r\n"
            f"Call-ID: rq-{n}-{uuid.uuid4().hex}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def request(ua, port, method, user):
    """Send an out-of-dialog ``method`` from ``user``; its response."""
    ua.send(probe_bytes(ua, port, method, user), port)
    return ua.recv(5, match=lambda m: not m.is_request and m.cseq_method == method)


def test_a_hung_redis_times_out_bounds_the_writes_and_recovers(tmp_path):
    """A Redis that stops answering (SIGSTOP): cache_fetch is false after cache.redis_timeout,
    writes beyond cache.redis_queue_max are refused at once; after SIGCONT reads work again."""
    import signal
    redis = RedisServer(tmp_path).start()
    cfg = {"cache": {"engines": {"redis": f"redis://127.0.0.1:{redis.port}/0"},
                     "redis_timeout": 1.0, "redis_queue_max": 3},
           "routing": {"request_route": PROBE_ROUTE + [
               {"if": {"eq": ["$rm", "NOTIFY"]},
                "then": [{"if": {"cache_store": ["redis", "w:$fU", "x"]},
                          "then": [{"sl_send_reply": [200, "sent"]}, "exit"]},
                         {"sl_send_reply": [500, "refused"]}, "exit"]}]}}
    ua = UdpEndpoint()
    try:
        with Sipdisp(tmp_path, cfg) as proxy:
            port = proxy.port("udp")
            wait_connected(proxy)
            redis_cli(redis.port, "SET", "probe", "v")
            assert options(ua, port, "probe").reason == "hit v"
            redis.proc.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                ua.send(probe_bytes(ua, port, "OPTIONS", "probe"), port)
                reasons = [request(ua, port, "NOTIFY", f"w{i}").status for i in range(5)]
                fetched = ua.recv(5, match=lambda m: not m.is_request and m.cseq_method == "OPTIONS")
                waited = time.monotonic() - started
            finally:
                redis.proc.send_signal(signal.SIGCONT)
            assert fetched.status == 404 and 0.8 < waited < 3.0, (fetched, waited)
            # the connection the timeout aborted is back, or was never lost
            back = time.monotonic()
            while options(ua, port, "probe").reason != "hit v":
                assert time.monotonic() - back < 10, proxy.log_text()[-3000:]
                time.sleep(0.2)
            errors = rpc(proxy, "cache.stats")["engines"]["redis"]["errors"]
            assert errors.get("timeout", 0) >= 1, errors
            assert "Traceback" not in proxy.log_text()
        assert reasons.count(500) >= 1 and reasons[:3] == [200, 200, 200], reasons
        assert errors.get("queue_full", 0) == 2, errors
    finally:
        ua.close()
        redis.stop()
