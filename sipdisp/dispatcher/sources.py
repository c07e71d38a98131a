"""Where destination sets come from: a Kamailio-format list file or the
``dispatcher`` table (Kamailio's columns), both turned into plain rows
``{"setid", "destination", "flags", "priority", "attrs", "description"}``.

List file syntax, one destination per line (``#`` starts a comment)::

    # setid  destination                 flags  priority  attrs
    0        sip:192.168.1.20:5080
    1        sip:10.0.0.11:5060;transport=tcp  8  10     weight=50;duid=fs1
"""

from twisted.internet import defer

from ..config.model import ConfigError
from ..sip.uri import parse_uri


class ListFileError(ConfigError):
    """A list file line that cannot be used; ``str()`` is ``file:line: problem``."""


def _number(text, what):
    text = text.strip()
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        raise ValueError(f"{what} must be an integer, got {text!r}") from None


def parse_list(text, name="dispatcher.list"):
    """Rows of a list file's text; ListFileError naming ``name:line`` on a bad line."""
    rows = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split(None, 4)
        try:
            if len(fields) < 2:
                raise ValueError("expected: setid destination [flags [priority [attrs]]]")
            setid = _number(fields[0], "setid")
            uri = fields[1]
            parsed = parse_uri(uri)
            if not parsed.is_sip or not parsed.host:
                raise ValueError(f"{uri!r} is not a sip: or sips: URI")
            flags = _number(fields[2], "flags") if len(fields) > 2 else 0
            priority = _number(fields[3], "priority") if len(fields) > 3 else 0
            attrs = fields[4].strip() if len(fields) > 4 else ""
        except Exception as exc:
            raise ListFileError(f"{name}:{lineno}", str(exc)) from None
        rows.append({"setid": setid, "destination": uri, "flags": flags,
                     "priority": priority, "attrs": attrs, "description": ""})
    return rows


def read_list_file(path):
    """Rows of the list file at ``path`` (OSError if it cannot be read)."""
    with open(path, encoding="utf-8") as f:
        return parse_list(f.read(), str(path))


def format_list(rows):
    """List-file text for rows (what ``dispatcher.list`` shows, as a file)."""
    lines = ["# setid destination flags priority attrs"]
    for row in rows:
        attrs = row.get("attrs") or ""
        lines.append(f"{row['setid']} {row['destination']} {row.get('flags') or 0} "
                     f"{row.get('priority') or 0}{' ' + attrs if attrs else ''}".rstrip())
    return "\n".join(lines) + "\n"


def rows_from_table(records):
    """Rows from ``dispatcher`` table records (dicts with Kamailio's columns)."""
    rows = []
    for rec in records:
        rows.append({"setid": int(rec.get("setid") or 0),
                     "destination": str(rec.get("destination") or "").strip(),
                     "flags": int(rec.get("flags") or 0),
                     "priority": int(rec.get("priority") or 0),
                     "attrs": rec.get("attrs") or "",
                     "description": rec.get("description") or ""})
    return rows


class FileSource:
    """Destination sets from a list file; ``fallback`` (a URI) stands in as
    set 0 when the file does not exist."""

    def __init__(self, path, fallback=None):
        self.path = path
        self.fallback = fallback

    def describe(self):
        """Where the sets come from, for logs and ``dispatcher.list``."""
        return f"file {self.path}"

    def load(self):
        """A Deferred firing with the rows (fails with ListFileError or OSError)."""
        try:
            rows = read_list_file(self.path)
        except FileNotFoundError:
            if self.fallback is None:
                return defer.fail(ListFileError("dispatcher.list_file",
                                                f"{self.path}: no such file"))
            rows = [{"setid": 0, "destination": self.fallback, "flags": 0, "priority": 0,
                     "attrs": "", "description": "proxy.next_hop"}]
        except Exception:
            return defer.fail()
        return defer.succeed(rows)


class TableSource:
    """Destination sets from the ``dispatcher`` table, through the storage API."""

    def __init__(self, storage, table="dispatcher"):
        self.storage = storage
        self.table = table

    def describe(self):
        """Where the sets come from, for logs and ``dispatcher.list``."""
        return f"table {self.table}"

    def load(self):
        """A Deferred firing with the rows of the table."""
        d = self.storage.select(self.table, order_by=["setid", "id"])
        d.addCallback(rows_from_table)
        return d
