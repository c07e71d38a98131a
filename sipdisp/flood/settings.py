"""
The C{flood} section: Kamailio's pike module parameters, the ban table
(the seed's C{ipban} htable), the scanner filter and the route's hash tables
(Kamailio htable's C{modparam("htable", "htable", "ipban=>autoexpire=300")}).
"""

import re

from ..config.model import Bool, ConfigError, Int, Key, ListOf, Seconds, Section, Str, Type, show
from .guard import DEFAULT_SCANNERS

_NAME = re.compile(r"[A-Za-z_][\w-]*\Z")

#: the keys of one hash table definition and their defaults
TABLE_KEYS = {"autoexpire": 0.0, "max_items": 65536}


class HTables(Type):
    """Table name -> {autoexpire: seconds, max_items: n}."""

    expected = "a mapping of table name to {autoexpire: seconds, max_items: n}"

    def parse(self, value, where):
        """Each table with both keys filled in; a bad name or value names its key."""
        if not isinstance(value, dict):
            raise self.wrong(value, where)
        out = {}
        for name, spec in value.items():
            here = f"{where}.{name}"
            if not isinstance(name, str) or not _NAME.match(name):
                raise ConfigError(here, f"a table name is a word such as ipban, got {show(name)}")
            spec = {} if spec is None else spec
            if not isinstance(spec, dict):
                raise ConfigError(here, f"expected {{autoexpire: seconds, max_items: n}}, "
                                        f"got {show(spec)}")
            unknown = set(spec) - set(TABLE_KEYS)
            if unknown:
                raise ConfigError(f"{here}.{sorted(map(str, unknown))[0]}",
                                  "unknown key (autoexpire or max_items)")
            autoexpire = spec.get("autoexpire", TABLE_KEYS["autoexpire"])
            if isinstance(autoexpire, bool) or not isinstance(autoexpire, (int, float)) \
                    or autoexpire < 0:
                raise ConfigError(f"{here}.autoexpire", f"expected seconds >= 0, got "
                                                        f"{show(autoexpire)}")
            max_items = spec.get("max_items", TABLE_KEYS["max_items"])
            if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
                raise ConfigError(f"{here}.max_items", f"expected an integer >= 1, got "
                                                       f"{show(max_items)}")
            out[name] = {"autoexpire": float(autoexpire), "max_items": max_items}
        return out

    def describe(self):
        """The type's name in docs/configuration.md."""
        return "mapping of table name to {autoexpire, max_items}"


FLOOD = Section(
    "flood",
    "Flood detection and bans (Kamailio pike and the htable ipban, OpenSIPS pike), the scanner filter and the route's hash tables $sht(name=>key) (docs/flood.md).",
    Key("enabled", Bool(), False,
        "Count every request per source address before parsing and ban a source that sends more than reqs_density_per_unit in sampling_time_unit for ban_time; false leaves it to the route (pike_check_req, $sht(ipban=>$si))."),
    Key("sampling_time_unit", Seconds(positive=True), 2.0,
        "The window the request rate is measured over, in seconds (pike sampling_time_unit); it slides."),
    Key("reqs_density_per_unit", Int(min=1), 30,
        "Most requests a source may send within sampling_time_unit (pike reqs_density_per_unit; the seed sets 16)."),
    Key("remove_latency", Seconds(min=0), 120.0,
        "Seconds a quiet source stays in the rate table after its window (pike remove_latency; the seed sets 4)."),
    Key("max_sources", Int(min=1), 100000,
        "Most source addresses the rate table holds; beyond, the least recently seen is forgotten, logged once a minute and counted in flood_sources_evicted."),
    Key("ban_time", Seconds(positive=True), 300.0,
        "Seconds a source is banned once over the density (the seed's ipban autoexpire=300), and the default of ipban.add."),
    Key("ban_table", Str(), "ipban",
        "The hash table whose live keys are banned source addresses, dropped before parsing; the route writes it as $sht(ipban=>$si)."),
    Key("max_bans", Int(min=1), 100000,
        "Most entries of the ban table when flood.htables does not define it; beyond, the oldest ban is lifted, logged and counted in flood_bans_evicted."),
    Key("scanner_user_agents", ListOf(Str()), list(DEFAULT_SCANNERS),
        "Requests whose User-Agent contains one of these (case-insensitive) are dropped silently before parsing (Kamailio's default $ua =~ \"friendly-scanner|sipcli|...\"); [] turns the filter off."),
    Key("htables", HTables(), {},
        "Hash tables for $sht(name=>key) and sht_* (Kamailio modparam(\"htable\", \"htable\", \"ipban=>autoexpire=300\")): name -> {autoexpire: seconds (0 never), max_items: n}; the ban table is added with ban_time and max_bans unless named here."),
)


_SHT = re.compile(r"\$sht\(\s*([^=)]*?)\s*=>")


def flood_tables(cfg):
    """`flood.ban_table` is a table name (a word), and every $sht(table=>key) of the routing names the ban table or one of `flood.htables`."""
    name = cfg.flood.ban_table
    if not _NAME.match(name):
        raise ConfigError("flood.ban_table", f"a table name is a word such as ipban, got {show(name)}")
    if cfg.routing.module:
        return
    from ..routing import routing_spec
    known = set(cfg.flood.htables) | {name}

    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(k, where)
                walk(v, f"{where}.{k}")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")
        elif isinstance(node, str):
            for table in _SHT.findall(node):
                if table not in known:
                    raise ConfigError(where, f"$sht({table}=>...): no hash table {table!r} "
                                             f"(define it in flood.htables; known: "
                                             f"{', '.join(sorted(known))})")
    walk(routing_spec(cfg), "routing")
