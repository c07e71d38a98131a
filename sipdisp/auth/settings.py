"""
The C{auth} section: digest authentication (Kamailio's auth and auth_db
module parameters).
"""

import ipaddress

from ..config.model import (
    Bool,
    ConfigError,
    Enum,
    Key,
    ListOf,
    Nullable,
    Seconds,
    Section,
    Str,
)


AUTH = Section(
    "auth",
    "Digest authentication against the subscriber table (Kamailio's auth and auth_db modules).",
    Key("enabled", Bool(), False,
        "The built-in route challenges REGISTERs (401) and requests from local users (407), refuses relaying for others (403) and trusts FreeSWITCH nodes; false: the seed's route, without authentication."),
    Key("secret", Nullable(Str()), None,
        "Secret signing the nonces; give every node the same one so any node accepts any node's nonces; null: random at each start."),
    Key("nonce_expire", Seconds(positive=True), 300.0,
        "Lifetime of a nonce; a right answer to an older one is challenged again with stale=true."),
    Key("nonce_bind_address", Bool(), True,
        "A nonce is valid only from the IP address it was given to."),
    Key("algorithms", ListOf(Enum("MD5", "SHA-256", "SHA-512-256")), ["MD5"],
        "Digest algorithms offered, one challenge header each, in order of preference (RFC 8760: list SHA-256 first for clients that have it)."),
    Key("qop", Enum("auth", "auth-int", "auth,auth-int", ""), "auth",
        "Quality of protection offered when the challenge's flags do not choose; '' offers none (each nonce then works once)."),
    Key("realm", Nullable(Str()), None,
        "Realm of the challenges; null uses the To (REGISTER) or From domain, as www_authorize(\"\", ...)."),
    Key("calculate_ha1", Bool(), True,
        "Compute H(A1) from the password column (the seeds' calculate_ha1 yes); false uses the ha1/ha1b columns."),
    Key("use_domain", Bool(), False,
        "Look subscribers up by username and domain (the realm); false: by username alone."),
    Key("trusted", ListOf(Str()), [],
        "Addresses or networks (such as FreeSWITCH nodes) never challenged, Kamailio's allow_source_address."),
    Key("trust_dispatcher", Bool(), True,
        "Requests from dispatcher destinations (ds_is_from_list: the FreeSWITCH nodes) are never challenged."),
    Key("domain_table", Bool(), False,
        "Also treat the domains of the domain table as local (loaded at start and by domain.reload)."),
)


def auth_networks(cfg):
    """Every `auth.trusted` entry is an IP address or network, and `auth.algorithms` is not empty."""
    for item in cfg.auth.trusted:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError("auth.trusted", f"{item!r} is not an IP address or network") from None
    if not cfg.auth.algorithms:
        raise ConfigError("auth.algorithms", "must list at least one algorithm")
