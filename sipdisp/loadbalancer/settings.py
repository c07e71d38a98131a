"""
The C{load_balancer} section: destinations and probing (OpenSIPS'
load_balancer module parameters).
"""

from ..config.model import ConfigError, Enum, Key, Seconds, Section, SipUri, Str, Type
from ..config.values import check_probing
from .balancer import LbDestination, reply_codes


class LbDestinations(Type):
    """Load balancer destinations: a list of mappings with the load_balancer table's columns."""

    expected = "a list of destinations ({group, uri, resources[, id, probe_mode, description]})"
    FIELDS = {"id", "group", "uri", "resources", "probe_mode", "description", "attrs"}

    def parse(self, value, where):
        """Each entry checked: known fields, a SIP URI, resources as name=capacity, unique ids."""
        if not isinstance(value, list):
            raise self.wrong(value, where)
        out = []
        ids = set()
        for n, entry in enumerate(value):
            here = f"{where}[{n}]"
            if not isinstance(entry, dict):
                raise ConfigError(here, "expected a mapping with group, uri and resources")
            unknown = set(entry) - self.FIELDS
            missing = {"group", "uri", "resources"} - set(entry)
            if unknown or missing:
                raise ConfigError(here, f"unknown field(s) {sorted(unknown)}" if unknown
                                  else f"missing field(s) {sorted(missing)}")
            item = dict(entry)
            item.setdefault("id", n + 1)
            item.setdefault("probe_mode", 0)
            try:
                LbDestination(item["id"], item["group"], str(item["uri"]), str(item["resources"]),
                              item["probe_mode"], str(item.get("attrs") or ""),
                              str(item.get("description") or ""))
            except (ValueError, TypeError) as exc:
                raise ConfigError(here, str(exc)) from None
            if item["id"] in ids:
                raise ConfigError(here, f"id {item['id']} is given twice")
            ids.add(item["id"])
            out.append(item)
        return out

    def describe(self):
        """The type's name in docs/configuration.md."""
        return "list of {group, uri, resources, id, probe_mode, description}"


LOAD_BALANCER = Section(
    "load_balancer",
    "Resource-based load balancing over FreeSWITCH nodes (OpenSIPS load_balancer module, docs/loadbalancer.md).",
    Key("source", Enum("config", "db"), "config",
        "Where destinations come from: load_balancer.destinations, or the load_balancer table of storage.url (OpenSIPS' columns)."),
    Key("destinations", LbDestinations(), [],
        "Destinations when source is config: group, uri, resources such as 'vm=100;pstn=500', optional id, probe_mode (0 none, 1 while disabled, 2 always) and description."),
    Key("probing_interval", Seconds(min=0), 30.0,
        "Seconds between probing rounds (OpenSIPS probing_interval; the seed's 5); 0 stops probing."),
    Key("probing_timeout", Seconds(positive=True), 1.0,
        "A probe unanswered after this long has failed."),
    Key("probing_method", Str(), "OPTIONS",
        "Method of the probes (the seed's INFO)."),
    Key("probing_from", SipUri(), "sip:prober@localhost",
        "From URI of the probes."),
    Key("probing_reply_codes", Str(), "",
        "Replies besides 200 that count as up: OpenSIPS' '501, 403' or Kamailio's 'class=2;code=403' (a probe timeout never counts)."),
)


def load_balancer_probing(cfg):
    """`load_balancer.probing_method` is a method other than INVITE, ACK and CANCEL, and `load_balancer.probing_reply_codes` parses."""
    check_probing(cfg, "load_balancer", "probing_method", "probing_reply_codes", reply_codes)
