"""
The C{presence} section: the presence server (OpenSIPS' presence and
presence_xml modules: PUBLISH, SUBSCRIBE and NOTIFY for the proxy's own
domains).
"""

from ..config.model import Bool, Int, Key, Seconds, Section


PRESENCE = Section(
    "presence",
    "Presence server: an event state compositor for PUBLISH (RFC 3903) and subscriptions with NOTIFY (RFC 6665) for the presence, presence.winfo, dialog and message-summary packages, over the presentity, active_watchers and watchers tables (OpenSIPS presence + presence_xml, docs/presence.md).",
    Key("enabled", Bool(), False,
        "The built-in route answers PUBLISH and SUBSCRIBE for its own domains (and in-dialog SUBSCRIBEs to the proxy) with handle_publish / handle_subscribe; routes may call them either way."),
    Key("force_active", Bool(), True,
        "Every watcher is authorized at once (presence_xml force_active 1, as the OpenSIPS seed sets it). False: the watchers table decides (status 1 allow, 2 deny, absent or 0 pending: Subscription-State pending) and presence.winfo subscribers hear about new watchers."),
    Key("min_expires", Seconds(min=0), 60.0,
        "Shortest Expires of a PUBLISH or SUBSCRIBE (other than 0); shorter ones get 423 Interval Too Brief with Min-Expires (presence min_expires)."),
    Key("max_expires", Seconds(positive=True), 3600.0,
        "Longest Expires granted to a PUBLISH or SUBSCRIBE; longer ones are cut to it (presence max_expires)."),
    Key("default_expires", Seconds(positive=True), 3600.0,
        "Expires of a PUBLISH or SUBSCRIBE without an Expires header (3600, the default of the presence, dialog and message-summary packages)."),
    Key("max_presentities", Int(min=1), 100000,
        "Presentities with publications kept at once; a PUBLISH for one more gets 503 with Retry-After (counter presence_limit_presentities)."),
    Key("max_publications_per_presentity", Int(min=1), 32,
        "Publications (ETags) one presentity may hold per event; one more gets 503 with Retry-After (counter presence_limit_publications)."),
    Key("max_subscriptions", Int(min=1), 100000,
        "Subscriptions kept at once; a new SUBSCRIBE past it gets 503 with Retry-After (counter presence_limit_subscriptions)."),
    Key("max_watchers_per_presentity", Int(min=1), 5000,
        "Subscriptions one presentity may have per event; one more gets 503 with Retry-After (counter presence_limit_watchers)."),
    Key("max_subscriptions_per_source", Int(min=1), 1000,
        "Subscriptions created from one source IP address that may be live at once, so a SUBSCRIBE flood from one host cannot fill the table; past it 503 with Retry-After (counter presence_limit_source)."),
    Key("max_body_size", Int(min=1), 65536,
        "Largest PUBLISH body stored, in bytes; a larger one gets 413 Request Entity Too Large (counter presence_limit_body)."),
    Key("retry_after", Int(min=1), 30,
        "Retry-After (seconds) of the 503 answered past a limit."),
)
