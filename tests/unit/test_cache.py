"""The cache (sipdisp/cache) without a reactor: cachedb URLs, the local
engine on an explicit clock, and the cache_* route functions in a real
ProxyCore, including a Redis engine that is not connected."""

import pytest

from sipdisp.cache.cache import Cache
from sipdisp.cache.local import CacheFull, LocalCache, NotACounter
from sipdisp.cache.redis import RedisEngine
from sipdisp.cache.url import parse_cache_url
from sipdisp.config import ConfigError
from sipdisp.logs import RepeatLimiter
from sipdisp.routing import Modules, compile_routing
from sipdisp.routing.compiler import Env
from sipdisp.schema import config_from_dict
from sipdisp.shipped import shipped_functions
from tests.support.dispatch import Proxy, responses
from tests.support.sipmsg import request


class Recorder:
    """A Logger stand-in for RepeatLimiter collecting formatted lines."""

    def __init__(self):
        self.lines = []

    def emit(self, level, format, **fields):
        self.lines.append(format.format(**fields))


def local(max_keys=100, name="local"):
    """A local engine."""
    return LocalCache(name, parse_cache_url("local://"), max_keys)


# -- URLs -----------------------------------------------------------------------------

def test_cachedb_urls_parse_as_opensips_writes_them():
    """The seed's URL gives host, port, database, user and password; a group is kept."""
    url = parse_cache_url("redis://root:Aa123456@192.168.10.114:6379/0")
    assert (url.scheme, url.host, url.port, url.database) == ("redis", "192.168.10.114", 6379, 0)
    assert (url.user, url.password) == ("root", "Aa123456")
    assert "Aa123456" not in url.safe and "***" in url.safe
    grouped = parse_cache_url("redis:prod://:pw@[::1]/3")
    assert (grouped.group, grouped.host, grouped.port, grouped.database) == ("prod", "::1", 6379, 3)
    assert grouped.password == "pw" and grouped.user is None
    assert parse_cache_url("local://").scheme == "local"


@pytest.mark.parametrize("text, message", [
    ("redis//127.0.0.1", "is not a cachedb URL"),
    ("mongodb://127.0.0.1", "unknown cachedb engine 'mongodb'"),
    ("redis://127.0.0.1:99999/0", "port 99999 out of range"),
    ("redis://127.0.0.1:6379/zero", "must be a number"),
    ("redis://:6379", "no host"),
    ("local://somewhere", "local:// takes no host"),
])
def test_bad_cachedb_urls_are_refused_in_one_line(text, message):
    """Each malformed URL gets a ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=message):
        parse_cache_url(text)


def test_a_bad_engine_url_stops_the_config_naming_the_key():
    """cache.engines.redis with a bad port is one line naming that key."""
    with pytest.raises(ConfigError) as info:
        config_from_dict({"cache": {"engines": {"redis": "redis://127.0.0.1:70000/0"}}})
    assert str(info.value).startswith("cache.engines.redis: ")
    assert "\n" not in str(info.value)


def test_local_is_always_an_engine():
    """cache.engines gets local: local:// besides what the file names."""
    cfg = config_from_dict({"cache": {"engines": {"redis": "redis://127.0.0.1:6379/0"}}})
    assert cfg.cache.engines == {"local": "local://", "redis": "redis://127.0.0.1:6379/0"}


# -- the local engine -------------------------------------------------------------------

def test_local_values_expire_on_the_given_clock():
    """A value stored for 10 s is read at 9.9 s and gone at 10 s; 0 never expires."""
    c = local()
    c.store("a", "1", 10, now=0.0)
    c.store("b", "2", 0, now=0.0)
    assert c.fetch("a", 9.9) == "1"
    assert c.fetch("a", 10.0) is None
    assert c.fetch("b", 1e9) == "2"
    assert c.expired == 1


def test_local_remove_says_whether_the_key_was_there():
    """remove is True once, then False; an expired key counts as absent."""
    c = local()
    c.store("a", "1", 0, 0.0)
    c.store("e", "1", 1, 0.0)
    assert c.remove("a", 0.0) is True and c.remove("a", 0.0) is False
    assert c.remove("e", 5.0) is False


def test_local_counters_add_subtract_and_expire():
    """add starts at 0, keeps a running total, refreshes the expiry and reads back as digits."""
    c = local()
    assert c.add("n", 5, 0, 0.0) == 5
    assert c.add("n", -2, 30, 1.0) == 3
    assert c.counter_fetch("n", 2.0) == 3 and c.fetch("n", 2.0) == "3"
    assert c.counter_fetch("n", 31.0) is None  # expired 30 s after the last add
    c.store("s", "12", 0, 0.0)
    assert c.add("s", 1, 0, 0.0) == 13  # a stored number is a counter too
    c.store("t", "text", 0, 0.0)
    with pytest.raises(NotACounter):
        c.add("t", 1, 0, 0.0)


def test_local_cap_refuses_new_keys_but_not_updates_and_expired_ones_make_room():
    """At max_keys a new key is CacheFull, an existing one is updated, an expired one frees a slot."""
    c = local(max_keys=2)
    c.store("a", "1", 5, 0.0)
    c.store("b", "1", 0, 0.0)
    with pytest.raises(CacheFull, match="cache.local_max_keys"):
        c.store("c", "1", 0, 1.0)
    c.store("b", "2", 0, 1.0)
    assert c.fetch("b", 1.0) == "2"
    c.store("c", "1", 0, 6.0)  # a expired at 5 s
    assert len(c) == 2 and c.fetch("c", 6.0) == "1"


def test_sweep_frees_expired_keys():
    """sweep drops what expired and says how many."""
    c = local()
    for i in range(5):
        c.store(f"k{i}", "v", i + 1, 0.0)
    assert c.sweep(3.0) == 3 and len(c) == 2


# -- the route functions ----------------------------------------------------------------

ROUTE = {"request_route": [
    {"if": {"eq": ["$rm", "OPTIONS"]},
     "then": [{"if": {"cache_fetch": ["local", "$fU", "$var(v)"]},
               "then": [{"sl_send_reply": [200, "hit $var(v)"]}, "exit"]},
              {"sl_send_reply": [404, "miss"]}, "exit"]},
    {"if": {"eq": ["$rm", "MESSAGE"]},
     "then": [{"cache_remove": ["local", "$fU"]}, {"sl_send_reply": [202, "removed"]}, "exit"]},
    {"if": {"eq": ["$rm", "INFO"]},
     "then": [{"cache_add": ["local", "n:$fU", 2, 0, "$var(n)"]},
              {"sl_send_reply": [200, "n=$var(n)"]}, "exit"]},
    {"if": {"cache_store": ["local", "$fU", "$ru", 10]},
     "then": [{"sl_send_reply": [200, "stored"]}, "exit"]},
    {"sl_send_reply": [500, "not stored"]}]}


def cache_proxy(max_keys=100, engines=None):
    """A proxy running ROUTE with a Cache of one local engine (or ``engines``)."""
    p = Proxy({"routing": ROUTE})
    recorder = Recorder()
    cache = Cache(engines or {"local": local(max_keys)},
                  limiter=RepeatLimiter(recorder, limit=0))
    p.core.modules.cache = cache
    return p, cache, recorder


def reason(out):
    """The reason phrase of the one response in ``out``."""
    (resp, _), = responses(out)
    return resp.status, resp.reason


def test_store_then_fetch_through_the_route_and_expiry():
    """cache_store keeps the R-URI under the From user; cache_fetch reads it until it expires."""
    p, cache, _ = cache_proxy()
    assert reason(p.send(request("REGISTER", "sip:example.com"))) == (200, "stored")
    assert reason(p.send(request("OPTIONS", "sip:x@127.0.0.1"))) == (200, "hit sip:example.com")
    p.advance(10.5)
    assert reason(p.send(request("OPTIONS", "sip:x@127.0.0.1"))) == (404, "miss")
    assert cache.ops[("local", "store")] == 1 and cache.ops[("local", "fetch")] == 2
    assert cache.ops[("local", "hit")] == 1 and cache.ops[("local", "miss")] == 1


def test_remove_through_the_route():
    """cache_remove forgets the key, so the next fetch misses."""
    p, cache, _ = cache_proxy()
    p.send(request("REGISTER", "sip:example.com"))
    assert reason(p.send(request("MESSAGE", "sip:x@127.0.0.1"))) == (202, "removed")
    assert reason(p.send(request("OPTIONS", "sip:x@127.0.0.1"))) == (404, "miss")


def test_counter_through_the_route_gives_the_new_value():
    """cache_add puts the running total into $var(n)."""
    p, _, _ = cache_proxy()
    assert reason(p.send(request("INFO", "sip:x@127.0.0.1"))) == (200, "n=2")
    assert reason(p.send(request("INFO", "sip:x@127.0.0.1"))) == (200, "n=4")


def test_a_full_local_cache_returns_false_counts_and_logs():
    """Past cache.local_max_keys, cache_store is false, counted as full, and logged naming the key."""
    p, cache, recorder = cache_proxy(max_keys=1)
    p.send(request("REGISTER", "sip:example.com"))
    out = p.send(request("REGISTER", "sip:example.com",
                         extra=["X: 1"]).replace(b"<sip:alice@", b"<sip:carol@"))
    assert reason(out) == (500, "not stored")
    assert cache.errors[("local", "full")] == 1
    assert any("cache.local_max_keys" in line for line in recorder.lines), recorder.lines


def test_a_write_runs_once_when_the_route_runs_again():
    """A request resumed after a suspension runs its route again: cache_add counts once."""
    spec = {"request_route": [{"cache_add": ["local", "k", 1]}]}
    cache = Cache({"local": local()})
    step = compile_routing(spec, Env(shipped_functions(), Modules(cache=cache))).request_route

    class Ctx:
        now = 0.0
        vars = {}
        tape, tape_pos = [], 0  # the route's own replay is not what this test checks
    ctx = Ctx()
    step(ctx)
    step(ctx)
    assert cache.engines["local"].counter_fetch("k", 0.0) == 1


def test_an_unknown_engine_is_a_route_error_naming_the_step():
    """cache_store on an engine cache.engines does not name stops the config."""
    with pytest.raises(ConfigError, match="no cache engine 'redis'"):
        config_from_dict({"routing": {"request_route": [
            {"cache_store": ["redis", "$fd:$fU", "$ru"]}]}})
    cfg = config_from_dict({"cache": {"engines": {"redis": "redis://127.0.0.1:6379/0"}},
                            "routing": {"request_route": [
                                {"cache_store": ["redis", "$fd:$fU", "$ru"]}, "t_relay"]}})
    assert "redis" in cfg.cache.engines


def test_redis_down_means_false_and_the_call_goes_on():
    """With no Redis connection, store and fetch are false at once, nothing is suspended, and
    both are counted as not_connected."""
    engine = RedisEngine("local", parse_cache_url("redis://127.0.0.1:1/0"), reactor=None)
    p, cache, recorder = cache_proxy(engines={"local": engine})
    assert reason(p.send(request("REGISTER", "sip:example.com"))) == (500, "not stored")
    assert reason(p.send(request("OPTIONS", "sip:x@127.0.0.1"))) == (404, "miss")
    assert cache.errors[("local", "not_connected")] == 2
    assert sum("the call goes on" in line for line in recorder.lines) == 2


def test_metrics_name_every_engine_and_reason():
    """The metrics hook reports operations, hit/miss, errors by reason and local key counts."""
    p, cache, _ = cache_proxy(max_keys=1)
    p.send(request("REGISTER", "sip:example.com"))
    p.send(request("OPTIONS", "sip:x@127.0.0.1"))
    families = {name: samples for name, _, _, samples in cache.metrics()}
    ops = dict((s["op"], n) for s, n in families["sipdisp_cache_operations_total"])
    assert ops["store"] == 1 and ops["fetch"] == 1
    assert ({"engine": "local"}, 1) in families["sipdisp_cache_keys"]
    assert ({"engine": "local", "result": "hit"}, 1) in families["sipdisp_cache_fetch_results_total"]
