"""
The C{dialplan} section: the translation rules' table and where a matching
rule's attributes go (Kamailio's and OpenSIPS' dialplan module parameters).
"""

from ..config.model import Bool, ConfigError, Key, Section, Str
from ..routing.pv import RouteError, compile_setter
from ..storage.schema import SCHEMA

#: the columns a dialplan table must have
COLUMNS = ("id", "dpid", "pr", "match_op", "match_exp", "match_len", "subst_exp", "repl_exp",
           "attrs")

DIALPLAN = Section(
    "dialplan",
    "Number translation rules of the dialplan table for dp_translate (Kamailio/OpenSIPS dialplan, docs/aliases-dialplan.md).",
    Key("enabled", Bool(), False,
        "Load the dialplan table at start (and on dp.reload) and offer dp_translate, dp_replace and dp_match to the route."),
    Key("table", Str(), "dialplan",
        "The table the rules are read from (dialplan table_name)."),
    Key("attrs_pvar", Str(), "",
        "Where a matching rule's attrs go when the call names no variable, such as '$var(attrs)' or '$avp(dpattrs)' (dialplan attrs_pvar); empty: nowhere."),
)


def dialplan_rules(cfg):
    """`dialplan.table` is a table of the storage schema with the dialplan columns, and `dialplan.attrs_pvar` is empty or a variable a route may assign."""
    d = cfg.dialplan
    table = SCHEMA.get(d.table)
    if table is None or not set(COLUMNS) <= set(table.column_names):
        known = sorted(t.name for t in SCHEMA.values() if set(COLUMNS) <= set(t.column_names))
        raise ConfigError("dialplan.table", f"no dialplan table {d.table!r} in the storage "
                                            f"schema (tables with its columns: {', '.join(known)})")
    if d.attrs_pvar:
        try:
            compile_setter(d.attrs_pvar, "dialplan.attrs_pvar")
        except RouteError as exc:
            raise ConfigError("dialplan.attrs_pvar", exc.problem) from None
