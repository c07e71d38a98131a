"""
The C{drouting} section: OpenSIPS drouting's module parameters (the tables
come from storage.url, as OpenSIPS reads them from its db_url).
"""

from ..config.model import Bool, ConfigError, Int, Key, Seconds, Section, SipUri, Str
from ..config.values import check_probing
from .router import reply_codes


def zone(name):
    """The tzinfo of an IANA zone name; None for "" (the host's local time)."""
    if not name:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


DROUTING = Section(
    "drouting",
    "PSTN routing by prefix, time and priority over gateways and carriers (OpenSIPS drouting module, docs/drouting.md).",
    Key("enabled", Bool(), False,
        "Load dr_gateways, dr_rules, dr_carriers and dr_groups from storage.url at start and on dr.reload, for do_routing, use_next_gw and is_from_gw."),
    Key("default_group", Int(min=-1), -1,
        "Routing group of a caller without a dr_groups row when do_routing names none (OpenSIPS default_group); -1: no group, do_routing fails."),
    Key("use_domain", Bool(), True,
        "dr_groups rows match the caller's user and domain (OpenSIPS use_domain); false: the user alone."),
    Key("timezone", Str(), "",
        "IANA time zone the rules' timerec local times are read in, such as Europe/Berlin; empty: the host's local time."),
    Key("probing_interval", Seconds(min=0), 30.0,
        "Seconds between gateway probing rounds (OpenSIPS probing_interval); 0 stops probing."),
    Key("probing_timeout", Seconds(positive=True), 1.0,
        "A probe unanswered after this long has failed."),
    Key("probing_method", Str(), "OPTIONS",
        "Method of the probes (OpenSIPS probing_method)."),
    Key("probing_from", SipUri(), "sip:prober@localhost",
        "From URI of the probes (OpenSIPS probing_from)."),
    Key("probing_reply_codes", Str(), "",
        "Replies besides 200 that count as up: OpenSIPS' '501, 403' or Kamailio's 'class=2;code=403' (a probe timeout never counts)."),
)


def drouting_rules(cfg):
    """`drouting.probing_method` is a method other than INVITE, ACK and CANCEL, `drouting.probing_reply_codes` parses, and `drouting.timezone` is a known zone."""
    check_probing(cfg, "drouting", "probing_method", "probing_reply_codes", reply_codes)
    try:
        zone(cfg.drouting.timezone)
    except ValueError as exc:
        raise ConfigError("drouting.timezone", str(exc)) from None
