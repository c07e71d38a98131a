"""
The C{sip} section: message size and header count limits, RFC 3261 transaction
timers and the Server/User-Agent header.
"""

from ..config.model import ConfigError, Int, Key, Nullable, Seconds, Section, Str


SIP = Section(
    "sip",
    "SIP message limits and RFC 3261 transaction timers.",
    Key("max_message_size", Int(min=1), 65535,
        "Largest SIP message accepted, in bytes."),
    Key("max_via_headers", Int(min=1), 70,
        "Most Via values a message may carry (Max-Forwards starts at 70, so no honest "
        "message has more); beyond it a request gets 400 and a response is dropped."),
    Key("max_route_headers", Int(min=1), 30,
        "Most Route values a message may carry; beyond it a request gets 400 and a "
        "response is dropped."),
    Key("max_transactions", Int(min=0), 100000,
        "Most server and client transactions at once; while the table is full new requests "
        "are answered 503 Server Busy with Retry-After, statelessly (0: no limit)."),
    Key("t1", Seconds(positive=True), 0.5,
        "RFC 3261 T1, the round-trip time estimate."),
    Key("t2", Seconds(positive=True), 4.0,
        "RFC 3261 T2, the longest retransmit interval for non-INVITE requests and INVITE responses."),
    Key("t4", Seconds(positive=True), 5.0,
        "RFC 3261 T4, the longest time a message stays in the network."),
    Key("fr_timer", Seconds(positive=True), 30.0,
        "Final reply timeout for a request with no provisional reply (Kamailio tm fr_timer)."),
    Key("fr_inv_timer", Seconds(positive=True), 120.0,
        "INVITE final reply timeout once a provisional reply arrived (Kamailio tm fr_inv_timer)."),
    Key("server_header", Nullable(Str()), "sipdisp",
        "Value of the Server and User-Agent headers the proxy writes; null writes none."),
)


def t2_not_below_t1(cfg):
    """`sip.t2` must not be less than `sip.t1` (RFC 3261 section 17.1.2.2)."""
    if cfg.sip.t2 < cfg.sip.t1:
        raise ConfigError("sip.t2", f"must be >= sip.t1 ({cfg.sip.t1}), got {cfg.sip.t2}")
