"""
The registrar's sections: REGISTER handling (C{registrar}), the location
table (C{usrloc}) and NAT keepalives (C{nat}).
"""

from ..config.model import Bool, Enum, Int, Key, Nullable, Seconds, Section, SipUri, Str


REGISTRAR = Section(
    "registrar",
    "REGISTER handling and lookup (Kamailio's registrar module, docs/registrar.md).",
    Key("enabled", Bool(), True,
        "Handle REGISTER with save(\"location\"); false answers 404 \"No registrar\" as the seed does."),
    Key("default_expires", Int(min=1), 3600,
        "Expiry of a contact whose REGISTER gives none, in seconds."),
    Key("min_expires", Int(min=0), 60,
        "Shortest expiry accepted; a shorter non-zero one is answered 423 Interval Too Brief with Min-Expires."),
    Key("max_expires", Int(min=0), 3600,
        "Longest expiry granted, in seconds (the seed's 3600); longer ones are cut to it; 0 = no maximum."),
    Key("max_contacts", Int(min=0), 32,
        "Most contacts per address-of-record (the OpenSIPS seed's 1); more are answered 503 and counted (register_max_contacts); 0 = no limit."),
    Key("max_unauthenticated_aors", Int(min=0), 10000,
        "Most distinct addresses-of-record bound by REGISTERs the route did not authenticate; a REGISTER for one more is answered 403 and counted (register_unauthenticated_aors_refused); 0 = no limit."),
    Key("append_branches", Bool(), True,
        "lookup forks to every reachable contact in parallel (by q-value); false: only the best one."),
    Key("method_filtering", Bool(), False,
        "lookup skips contacts whose Allow (or methods parameter) does not list the request's method."),
    Key("use_path", Bool(), True,
        "Store the REGISTER's Path (RFC 3327) and route requests to the contact through it."),
    Key("accept_any_domain", Bool(), False,
        "Bind addresses-of-record of any domain; false: a REGISTER the route did not authenticate is answered 403 \"Domain not served\" unless its To domain is local (proxy.domains, a listen or advertised address, the domain table with auth.domain_table)."),
)


USRLOC = Section(
    "usrloc",
    "The location table of registered contacts (Kamailio's usrloc module).",
    Key("db_mode", Int(min=0, max=3), 0,
        "0 memory only; 1 write-through (every change queued to the location table at once); 2 write-back every timer_interval; 3 database only (shared by several proxies). 1-3 keep registrations across restarts."),
    Key("use_domain", Bool(), False,
        "Addresses-of-record are user@domain (multi-domain); false: the user part alone, as the seed's MULTIDOMAIN 0."),
    Key("timer_interval", Seconds(positive=True), 60.0,
        "Seconds between sweeps of expired contacts, write-backs (db_mode 2) and deletions of expired rows."),
    Key("shared_url", Nullable(Str()), None,
        "Share registrations with the other nodes through Redis (OpenSIPS usrloc full-sharing cachedb mode, docs/cluster.md): a cachedb URL such as redis://127.0.0.1:6379/0; every save goes to Redis, every lookup reads it; null: this node's own table only. Not with db_mode 3."),
    Key("shared_prefix", Str(), "sipdisp:",
        "Prefix of the Redis keys of shared registrations (one hash per address-of-record, PREFIXul:AOR); the same on every node of a cluster."),
    Key("shared_resync_interval", Seconds(positive=True), 1.0,
        "Seconds between checks of the Redis connection of shared registrations: after an outage the bindings saved meanwhile (all of this node's after a lost connection) are written again."),
    Key("shared_resync_batch", Int(min=1), 1000,
        "Most bindings written again to Redis per shared_resync_interval after an outage (counted in usrloc_shared_resynced), so a large table goes back in steps rather than one burst."),
)


NAT = Section(
    "nat",
    "Keepalives to registered contacts behind NAT (Kamailio's nathelper).",
    Key("natping_interval", Seconds(min=0), 0.0,
        "Seconds between keepalive rounds (the seeds' 30 and 10); 0 sends none."),
    Key("natping_method", Enum("OPTIONS", "CRLF"), "OPTIONS",
        "Keepalive for UDP contacts: an OPTIONS request (sipping) or a CRLF CRLF; TCP/TLS flows always get CRLF CRLF."),
    Key("ping_nated_only", Bool(), True,
        "Ping only contacts registered from behind NAT (fix_nated_register) and TCP/TLS flows."),
    Key("sipping_from", SipUri(), "sip:pinger@localhost",
        "From URI of the OPTIONS keepalives (Kamailio sipping_from)."),
)
