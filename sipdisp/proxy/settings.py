"""
The C{proxy} section: routing behaviour of the proxy core.
"""

from ..config.model import (
    Bool,
    Int,
    Key,
    ListOf,
    Nullable,
    Path,
    Seconds,
    Section,
    SipUri,
    Str,
)


PROXY = Section(
    "proxy",
    "Routing behaviour of the proxy core.",
    Key("domains", ListOf(Str()), [],
        'Names and addresses treated as "myself" besides the listen and advertised addresses.'),
    Key("max_forwards", Int(min=1, max=255), 10,
        "Max-Forwards value set when a request has none; a request arriving with 0 is answered 483."),
    Key("record_route", Bool(), True,
        "Let the route's record_route add Record-Route, so in-dialog requests come back through the proxy; false: record_route adds nothing and in-dialog requests go end to end."),
    Key("next_hop", SipUri(), "sip:127.0.0.1:5080",
        "Default destination for requests no other rule routes, such as a FreeSWITCH node."),
    Key("branch_timeout", Seconds(positive=True), 2.0,
        "Per-branch final reply timeout before failing over (Kamailio t_set_fr(0, 2000))."),
    Key("failover_codes", ListOf(Int(min=300, max=699)), [500, 502, 503, 504, 408],
        "Final response codes from a destination that make the proxy try the next one."),
    Key("secret", Nullable(Str()), None,
        "Node secret signing Record-Route, so only dialogs the proxy record-routed are relayed in-dialog; the same on every node; null reads (or creates) proxy.secret_file."),
    Key("gc_freeze_interval", Seconds(min=0), 1.0,
        "Seconds between two moves of the live objects out of the garbage collector's sight (gc.freeze), so its automatic collections only look at what is newer and never stall a loaded proxy by walking every lingering transaction (counted in gc_freezes); 0: Python's own schedule, whose full collections took 100-800 ms every few seconds at 800 calls/s (docs/benchmarks.md)."),
    Key("gc_full_interval", Seconds(min=0), 600.0,
        "Seconds between two full collections of everything frozen (gc.unfreeze, gc.collect), which free the reference cycles that died old; each is a log line and counted (gc_full_collections, gc_full_collected, gc_full_pause_ms: the longest). 0: never (only with gc_freeze_interval > 0; cycles that die after a freeze then stay)."),
    Key("secret_file", Path(), "var/node_secret",
        "File holding the node secret when proxy.secret is null, created (mode 0600) with a random one on first start and kept across restarts."),
)
