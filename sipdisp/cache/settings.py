"""
The C{cache} section: the cachedb engines the route's C{cache_*} functions
name, and the limits of each kind (OpenSIPS' cachedb_local and
cachedb_redis module parameters).
"""

import re

from ..config.model import ConfigError, Int, Key, Seconds, Section, Type, show
from .url import parse_cache_url

_NAME = re.compile(r"[A-Za-z_][\w.:-]*\Z")

#: the engine every configuration has unless cache.engines names it otherwise
DEFAULT_ENGINES = {"local": "local://"}


class Engines(Type):
    """Engine name -> cachedb URL; each URL is parsed, so a bad one stops start-up."""

    expected = "a mapping of engine name to cachedb URL (redis: \"redis://127.0.0.1:6379/0\")"

    def parse(self, value, where):
        """The mapping with ``local: local://`` added unless given; each URL checked."""
        if not isinstance(value, dict):
            raise self.wrong(value, where)
        out = dict(DEFAULT_ENGINES)
        for name, url in value.items():
            here = f"{where}.{name}"
            if not isinstance(name, str) or not _NAME.match(name):
                raise ConfigError(here, f"an engine name is a word such as redis or "
                                        f"redis:prod, got {show(name)}")
            try:
                parse_cache_url(url)
            except ValueError as exc:
                raise ConfigError(here, str(exc)) from None
            out[name] = url
        return out

    def describe(self):
        """The type's name in docs/configuration.md."""
        return "mapping of name to cachedb URL"


CACHE = Section(
    "cache",
    "Key-value cache for cache_store, cache_fetch and counters (OpenSIPS cachedb_local and cachedb_redis, docs/cache.md).",
    Key("engines", Engines(), {},
        "Engines by the name the route gives them (OpenSIPS' cachedb_url group), such as {redis: \"redis://127.0.0.1:6379/0\"}; local: \"local://\" is always there unless named otherwise."),
    Key("local_max_keys", Int(min=1), 100000,
        "Most keys a local:// engine holds; a store of a new key beyond returns false, logs a line and counts in sipdisp_cache_errors_total{reason=\"full\"}."),
    Key("local_cleanup_interval", Seconds(positive=True), 60.0,
        "Seconds between sweeps freeing the expired keys of local:// engines (OpenSIPS cache_clean_period); expired keys are never read in between."),
    Key("redis_timeout", Seconds(positive=True), 2.0,
        "Connect and reply timeout of redis:// engines; a cache_fetch waits at most this long, then returns false and the call goes on."),
    Key("redis_queue_max", Int(min=1), 10000,
        "Most writes (cache_store, cache_remove, cache_add) a redis:// engine sends without their answer yet; beyond, they return false and count as queue_full."),
    Key("redis_reconnect_max", Seconds(positive=True), 5.0,
        "Longest wait between two reconnection attempts to a Redis server that went away (the wait starts at 1 s and grows)."),
)
