"""
The section that belongs to no package: C{log}, applied to L{sipdisp.logs} at
start-up and on reload.
"""

from sipdisp.config.model import Enum, Int, Key, Seconds, Section, Str


LOG = Section(
    "log",
    "Logging.",
    Key("level", Enum("debug", "info", "warn", "error"), "info",
        "Least severe level that is logged."),
    Key("repeat_limit", Int(min=0), 10,
        "Most lines of one kind a peer can cause (a malformed message, bad credentials) per repeat_interval; the rest are counted and their number logged; 0 = no limit."),
    Key("repeat_interval", Seconds(positive=True), 10.0,
        "The interval of log.repeat_limit, in seconds."),
    Key("prefix", Str(), "",
        "Text put before every line the route logs (xlog, xdbg ...), with pseudo-variables, as Kamailio's log_prefix (the Kamailio seed's \"{$mt $hdr(CSeq) $ci} \"); compiled once."),
)
