"""
The C{aliases} section: the alias table and how it is searched (Kamailio's
and OpenSIPS' alias_db module parameters).
"""

from ..config.model import Bool, ConfigError, Key, Section, Str
from .aliases import check_table

ALIASES = Section(
    "aliases",
    "Aliases of the dbaliases table for alias_db_lookup (Kamailio/OpenSIPS alias_db, docs/aliases-dialplan.md).",
    Key("enabled", Bool(), False,
        "Offer alias_db_lookup and alias_db_find to the route and the alias.* commands; the table is read at each lookup, as alias_db does."),
    Key("table", Str(), "dbaliases",
        "The alias table of sipdisp alias and the alias.* commands (a route names its table in the function's argument)."),
    Key("use_domain", Bool(), False,
        "Match the R-URI's domain too (alias_db use_domain; the Kamailio seed's MULTIDOMAIN); false matches the user part alone."),
    Key("domain_prefix", Str(), "",
        "A prefix taken off the R-URI's domain before it is matched, such as 'sip.' (alias_db domain_prefix)."),
)


def aliases_table(cfg):
    """`aliases.table` is a table of the storage schema with the dbaliases columns."""
    try:
        check_table(cfg.aliases.table)
    except ValueError as exc:
        raise ConfigError("aliases.table", str(exc)) from None
