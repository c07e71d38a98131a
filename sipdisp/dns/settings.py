"""
The C{dns} section: how next hops given as names are resolved (RFC 3263:
NAPTR, SRV, A/AAAA) and how long the answers are kept (Kamailio's
dns_cache_* core parameters).
"""

from ..config.model import ConfigError, HostPort, Int, Key, ListOf, Seconds, Section

DNS = Section(
    "dns",
    "DNS for next hops given as names: NAPTR, SRV and A/AAAA (RFC 3263) through Twisted's resolver, with a TTL cache (docs/dns.md).",
    Key("servers", ListOf(HostPort()), [],
        "Name servers to ask, as \"host:port\" such as [\"127.0.0.1:5353\"]; empty: the ones /etc/resolv.conf names."),
    Key("timeout", Seconds(positive=True), 2.0,
        "Seconds to wait for one answer; a query unanswered after that counts in dns_timeouts, logs a line and is cached as a negative answer for negative_ttl."),
    Key("cache_size", Int(min=1), 10000,
        "Most record sets the cache holds (Kamailio dns_cache_max_mem, counted in answers); beyond, the oldest goes, counted in dns_cache_evictions and logged once a minute."),
    Key("negative_ttl", Seconds(min=0), 10.0,
        "Seconds a name that does not resolve (NXDOMAIN, no records, no answer in time) is remembered as such (Kamailio dns_neg_cache_ttl)."),
    Key("min_ttl", Seconds(min=0), 1.0,
        "Shortest time an answer is kept, whatever its TTL says (a TTL of 0 would leave the request that asked without it)."),
    Key("max_ttl", Seconds(positive=True), 3600.0,
        "Longest time an answer is kept, whatever its TTL says (Kamailio dns_cache_max_ttl)."),
)


def dns_ttls(cfg):
    """`dns.min_ttl` is not above `dns.max_ttl`."""
    if cfg.dns.min_ttl > cfg.dns.max_ttl:
        raise ConfigError("dns.min_ttl", f"must be <= dns.max_ttl ({cfg.dns.max_ttl:g}), got {cfg.dns.min_ttl:g}")
