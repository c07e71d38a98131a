"""
The C{storage} section: the database URL and the write queue and spool that
ride out its outages.
"""

from ..config.model import Int, Key, Path, Section, Url


STORAGE = Section(
    "storage",
    "Where registrations, dispatcher sets and accounting records are kept.",
    Key("url", Url(), "sqlite:///var/sipdisp.db",
        "Database URL, such as sqlite:///var/sipdisp.db or postgresql://user@host/sipdisp."),
    Key("write_queue_max", Int(min=1), 100000,
        "Most writes held in memory while the database is slow or unreachable."),
    Key("spool_dir", Path(), "var/spool",
        "Directory where records are spooled to disk while the database is unreachable."),
)
