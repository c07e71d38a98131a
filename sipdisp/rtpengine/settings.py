"""
The C{rtpengine} section: the media relay's ng control (Kamailio's
rtpengine module parameters).
"""

from ..config.model import Int, Key, Seconds, Section, Str


RTPENGINE = Section(
    "rtpengine",
    "rtpengine control over its ng protocol: rtpengine_offer/answer/delete/manage/query and the rtpproxy names, several instances with weights, pings and failover (docs/rtpengine.md).",
    Key("sockets", Str(), "",
        "The rtpengine instances, Kamailio's rtpengine_sock: 'udp:127.0.0.1:2223=2 udp:127.0.0.1:2224' (weight 1 when absent); empty: no rtpengine, its functions are false."),
    Key("timeout", Seconds(positive=True), 1.0,
        "Seconds before an ng command is sent again (Kamailio's rtpengine_tout_ms / 1000)."),
    Key("retries", Int(min=0, max=20), 5,
        "Times an ng command is sent again before its instance is taken for down and the next one tried (rtpengine_retr)."),
    Key("ping_interval", Seconds(min=0), 10.0,
        "Seconds between pings of every instance; an instance down is enabled again by its first pong (0: ping only at start)."),
    Key("max_sessions", Int(min=1), 100000,
        "Calls whose rtpengine session the proxy remembers to delete at the call's end; past it the oldest is forgotten (logged, counted as rtpengine_sessions_evicted)."),
    Key("bind", Str(), "",
        "Local address the ng socket binds to (empty: all addresses, a port the system picks)."),
)
