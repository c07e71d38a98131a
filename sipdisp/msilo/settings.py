"""
The C{msilo} section: offline message storage (Kamailio's and OpenSIPS'
msilo module parameters).
"""

from ..config.model import Bool, Int, Key, Seconds, Section, SipUri, Str


MSILO = Section(
    "msilo",
    "Offline messages: m_store keeps a MESSAGE for a user with no contact in the silo table, m_dump sends it when she registers (msilo, docs/msilo.md).",
    Key("enabled", Bool(), False,
        "The built-in route stores MESSAGEs for local users with no contact and delivers them at their next REGISTER; routes may call m_store and m_dump either way."),
    Key("expire_time", Seconds(positive=True), 259200.0,
        "A stored message not delivered within this long is dropped (msilo expire_time, 3 days)."),
    Key("max_messages", Int(min=1), 100,
        "Messages kept per user; m_store returns false past it (OpenSIPS msilo max_messages). Also the most one REGISTER dumps."),
    Key("clean_period", Seconds(positive=True), 600.0,
        "Seconds between sweeps deleting expired messages from the silo table (Kamailio's check_time x clean_period)."),
    Key("notify_offline", Bool(), False,
        "Answer the sender of a stored MESSAGE with a MESSAGE saying the user is offline (msilo's from_address notice)."),
    Key("from_address", SipUri(), "sip:msilo@localhost",
        "From URI of the offline notices (msilo from_address)."),
    Key("offline_message", Str(), "User offline, message stored",
        "Text of the offline notice (msilo offline_message), sent as text/plain."),
)
