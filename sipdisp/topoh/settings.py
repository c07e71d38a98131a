"""
The C{topology_hiding} section: topology hiding (OpenSIPS' topology_hiding
module parameters).
"""

import re

from ..config.model import ConfigError, Key, Section, Str

TOPOLOGY_HIDING = Section(
    "topology_hiding",
    "Topology hiding: topology_hiding on an INVITE hides each party's Via, Record-Route, Route and Contact from the other; topology_hiding_match routes the in-dialog requests (docs/topoh.md).",
    Key("did_param", Str(), "did",
        "Name of the URI parameter of the proxy's Contact that carries the signed dialog id (OpenSIPS th_contact_encode_param)."),
)


def topoh_rules(cfg):
    """`topology_hiding.did_param` is a URI parameter name (a token)."""
    name = cfg.topology_hiding.did_param
    if not re.fullmatch(r"[A-Za-z0-9_.!~*'()-]+", name or "") or name.lower() in (
            "transport", "lr", "maddr", "user", "method", "ttl"):
        raise ConfigError("topology_hiding.did_param",
                          f"must be a URI parameter name of its own, got {name!r}")
