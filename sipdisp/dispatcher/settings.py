"""
The C{dispatcher} section: where the destination sets come from and how their
health is probed (Kamailio's dispatcher module parameters).
"""

from ..config.model import (
    Bool,
    Enum,
    Int,
    Key,
    Path,
    Seconds,
    Section,
    SipUri,
    Str,
)
from ..config.values import check_probing


DISPATCHER = Section(
    "dispatcher",
    "Destination sets and their health (Kamailio's dispatcher module, docs/dispatcher.md).",
    Key("source", Enum("file", "db"), "file",
        "Where the sets come from: the list file, or the dispatcher table of storage.url (Kamailio's or OpenSIPS' columns)."),
    Key("table_format", Enum("auto", "kamailio", "opensips"), "auto",
        "Columns of the dispatcher table: kamailio (version 4: flags, priority, attrs), opensips (OpenSIPS 3.x version 9: state, probe_mode, weight, priority, socket, attrs), or auto, told apart by the columns the table has."),
    Key("hash_pvar", Str(), "",
        "What algorithm 7 hashes (Kamailio/OpenSIPS hash_pvar): a pseudo-variable or a template such as '$fU@$fd'; a route using algorithm 7 needs it."),
    Key("ping_latency_stats", Bool(), True,
        "Measure the round-trip time of every ping (Kamailio ds_ping_latency_stats), shown by dispatcher.list as LATENCY and used by algorithm 13."),
    Key("latency_estimator_alpha", Int(min=0, max=999), 900,
        "Weight of the past in the latency estimate, in thousandths (Kamailio ds_latency_estimator_alpha: 900 means a new sample counts 10 %)."),
    Key("list_file", Path(), "etc/dispatcher.list",
        "Kamailio-format list file, one 'setid uri [flags [priority [attrs]]]' per line; if it does not exist, set 0 is proxy.next_hop alone."),
    Key("ping_interval", Seconds(min=0), 10.0,
        "Seconds between ping rounds (Kamailio ds_ping_interval); 0 stops probing."),
    Key("ping_timeout", Seconds(positive=True), 1.0,
        "A ping unanswered after this long has failed (its own timer, not the 32 s transaction timeout)."),
    Key("ping_method", Str(), "OPTIONS",
        "Method of the pings (Kamailio ds_ping_method), such as OPTIONS or INFO."),
    Key("ping_from", SipUri(), "sip:dispatcher@localhost",
        "From URI of the pings (Kamailio ds_ping_from)."),
    Key("ping_reply_codes", Str(), "",
        "Replies besides 200 that count as up, in Kamailio syntax such as 'class=2;code=403;code=404' (a ping timeout never counts)."),
    Key("probing_mode", Int(min=0, max=3), 0,
        "Which destinations are pinged (Kamailio ds_probing_mode): 0 those with the probing flag, 1 all, 2 inactive ones with the probing flag, 3 those with the probing flag, keeping it."),
    Key("probing_threshold", Int(min=1), 1,
        "Failed pings (or ds_mark_dst t) that take a destination from active through trying to inactive."),
    Key("inactive_threshold", Int(min=1), 1,
        "Successful pings in a row that bring an inactive or trying destination back to active."),
    Key("load_expire", Seconds(positive=True), 7200.0,
        "An answered call whose BYE was never seen stops counting in its destination's load after this long (Kamailio ds_hash_expire)."),
    Key("load_init_expire", Seconds(positive=True), 300.0,
        "A dispatched INVITE whose transaction end was never seen stops counting after this long (Kamailio ds_hash_initexpire)."),
)


def dispatcher_ping_rules(cfg):
    """`dispatcher.ping_method` is a SIP method other than INVITE, ACK and CANCEL, and `dispatcher.ping_reply_codes` uses Kamailio's class=N;code=NNN syntax."""
    check_probing(cfg, "dispatcher", "ping_method", "ping_reply_codes")
