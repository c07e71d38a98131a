"""
The C{cluster} section: the Redis server several sipdisp nodes share their
counters and states through (docs/cluster.md).
"""

from ..config.model import Bool, ConfigError, Int, Key, Nullable, Seconds, Section, Str, Type
from ..cache.url import parse_cache_url


class RedisUrl(Type):
    """A ``redis://[:password@]host[:port][/database]`` URL."""

    expected = "a redis:// URL such as redis://127.0.0.1:6379/0"

    def parse(self, value, where):
        """The URL text, checked by the cache's URL parser (scheme redis only)."""
        if not isinstance(value, str):
            raise self.wrong(value, where)
        try:
            url = parse_cache_url(value)
        except ValueError as exc:
            raise ConfigError(where, str(exc)) from None
        if url.scheme != "redis":
            raise ConfigError(where, f"the cluster shares through redis://, not {url.scheme}://")
        return value

    def describe(self):
        """The type's name in docs/configuration.md."""
        return "redis:// URL"


CLUSTER = Section(
    "cluster",
    "Counters and states shared by several sipdisp nodes through Redis: dialog profiles and load-balancer loads, dispatcher and load-balancer destination states, the nonce secret, pike counts and bans; and the takeover of a dead node's dialogs (docs/cluster.md).",
    Key("redis", Nullable(RedisUrl()), None,
        "The Redis every node of the cluster uses, such as redis://127.0.0.1:6379/0; unset: nothing is shared."),
    Key("node_id", Nullable(Str()), None,
        "This node's name in Redis (unique per node); unset: host name and process id."),
    Key("key_prefix", Str(), "sipdisp:",
        "Prefix of every Redis key of the cluster (several clusters can share one Redis)."),
    Key("sync_interval", Seconds(positive=True), 0.1,
        "Seconds between two exchanges with Redis: this node's counts written, the other nodes' read; calls are counted against a view of the other nodes at most this old (plus a round trip)."),
    Key("node_ttl", Seconds(positive=True), 10.0,
        "A node that has not written its counts for this long (it died) stops counting on the others."),
    Key("pike_share_min", Int(min=1), 5,
        "A source sending this many requests to this node within one flood.sampling_time_unit has its count shared, so pike sums its requests over every node; quieter sources cost Redis nothing."),
    Key("pike_share_max", Int(min=1), 1000,
        "Most sources whose pike counts a node shares at once (a flood from many addresses); busier sources beyond are counted by each node alone and in sipdisp_cluster_pike_share_skipped_total."),
    Key("dialog_takeover", Bool(), True,
        "With dialog.db_mode 1 or 2: when a node dies (cluster.node_ttl), a surviving node takes over its answered calls from the dialog table (timeouts, profiles, accounting, in-dialog requests with its Record-Route); false: a dead node's calls are left alone (docs/cluster.md)."),
    Key("takeover_lock", Seconds(positive=True), 30.0,
        "How long the lock of one dead node's takeover holds: the node taking it over has this long to load its dialogs before another survivor tries again."),
    Key("redis_timeout", Seconds(positive=True), 2.0,
        "Connect and reply timeout of the cluster's Redis; an exchange unanswered this long counts as failed and the next one is tried."),
)
