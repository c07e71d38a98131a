"""Where destination sets come from: a Kamailio-format list file or the
``dispatcher`` table (Kamailio's columns, or OpenSIPS 3.x's read as is), all
turned into plain rows
``{"setid", "destination", "flags", "priority", "attrs", "description"}``
(OpenSIPS rows add ``socket``, ``weight`` and ``rweight``).

OpenSIPS 3.x's table (version 9) has ``id, setid, destination, socket,
state, probe_mode, weight, priority, attrs, description``: ``state`` 0
active, 1 inactive, 2 probing becomes Kamailio's state bits (``AX``, ``IX``,
``IP``), ``probe_mode`` 1 (always ping) the probing flag, and the relative
``weight`` both the relative weight of algorithm 11 and the percentage of
algorithm 9 (weights 1 and 3 in a set: 25 % and 75 %).

List file syntax, one destination per line (``#`` starts a comment)::

    # setid  destination                 flags  priority  attrs
    0        sip:192.168.1.20:5080
    1        sip:10.0.0.11:5060;transport=tcp  8  10     weight=50;duid=fs1
"""

from twisted.internet import defer

from ..config.model import ConfigError
from ..probing import INACTIVE, PROBING
from ..sip.uri import parse_uri
from ..storage.schema import Column, Table
from .algorithms import percent_weights

#: OpenSIPS 3.x's dispatcher table (version 9), as its DDL creates it; sipdisp
#: reads it as is (``sipdisp db init`` creates Kamailio's)
OPENSIPS_TABLE = Table("dispatcher", 9, (
    Column("id", "serial"),
    Column("setid", "int", default=0),
    Column("destination", "string", 192, default=""),
    Column("socket", "string", 128, null=True, default=None),
    Column("state", "int", default=0),
    Column("probe_mode", "int", default=0),
    Column("weight", "string", 64, default="1"),
    Column("priority", "int", default=0),
    Column("attrs", "string", 128, null=True, default=None),
    Column("description", "string", 64, null=True, default=None),
), origin="opensips")

#: OpenSIPS' state column -> Kamailio state bits
OPENSIPS_STATES = {0: 0, 1: INACTIVE, 2: INACTIVE | PROBING}
#: table formats and how to tell them apart by their columns
FORMATS = ("kamailio", "opensips")


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


def detect_format(records):
    """``"opensips"`` when the records have OpenSIPS' columns (``state``,
    ``probe_mode``, ``socket``) and no Kamailio ``flags``, else ``"kamailio"``."""
    for rec in records:
        keys = set(rec)
        if "flags" not in keys and keys & {"state", "probe_mode", "socket"}:
            return "opensips"
        return "kamailio"
    return "kamailio"


def _opensips_int(rec, column, allowed=None):
    value = rec.get(column)
    text = "0" if value is None or value == "" else str(value).strip()
    if not text.lstrip("-").isdigit():
        raise ValueError(f"dispatcher table row id {rec.get('id')}: {column} must be an "
                         f"integer, got {value!r}")
    number = int(text)
    if allowed is not None and number not in allowed:
        raise ValueError(f"dispatcher table row id {rec.get('id')}: {column} must be one of "
                         f"{', '.join(map(str, allowed))}, got {number}")
    return number


def _opensips_socket(rec):
    """The socket column checked: ``proto:host:port`` (empty: none)."""
    text = str(rec.get("socket") or "").strip()
    if not text:
        return ""
    proto, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    if proto.lower() not in ("udp", "tcp", "tls", "ws", "wss") or not host or not port.isdigit():
        raise ValueError(f"dispatcher table row id {rec.get('id')}: socket must be "
                         f"proto:host:port such as udp:10.0.0.1:5060, got {text!r}")
    return f"{proto.lower()}:{host}:{port}"


def rows_from_opensips(records):
    """Rows from OpenSIPS 3.x ``dispatcher`` records (version 9 columns); a
    ValueError naming the row id for a value sipdisp cannot use (such as a
    weight that is a statistic name rather than a number)."""
    rows = []
    for rec in records:
        state = OPENSIPS_STATES[_opensips_int(rec, "state", tuple(OPENSIPS_STATES))]
        probe_mode = _opensips_int(rec, "probe_mode", (0, 1))
        weight = _opensips_int(rec, "weight")
        if weight < 0:
            raise ValueError(f"dispatcher table row id {rec.get('id')}: weight must be >= 0, "
                             f"got {weight}")
        flags = state | (PROBING if probe_mode else 0)
        rows.append({"setid": _opensips_int(rec, "setid"),
                     "destination": str(rec.get("destination") or "").strip(),
                     "flags": flags, "priority": _opensips_int(rec, "priority"),
                     "attrs": rec.get("attrs") or "",
                     "description": rec.get("description") or "",
                     "socket": _opensips_socket(rec), "rweight": min(weight, 100)})
    by_set = {}
    for row in rows:
        by_set.setdefault(row["setid"], []).append(row)
    for members in by_set.values():
        for row, pct in zip(members, percent_weights([r["rweight"] for r in members])):
            row["weight"] = pct
    return rows


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
    """Destination sets from the ``dispatcher`` table, through the storage API,
    in ``table_format`` kamailio, opensips or auto (told by the columns)."""

    def __init__(self, storage, table="dispatcher", table_format="auto"):
        if table_format not in FORMATS + ("auto",):
            raise ValueError(f"table_format must be auto, kamailio or opensips, "
                             f"got {table_format!r}")
        self.storage = storage
        self.table = table
        self.table_format = table_format
        #: the format of the last load (auto: as detected)
        self.format = None if table_format == "auto" else table_format

    def describe(self):
        """Where the sets come from, for logs and ``dispatcher.list``."""
        if self.format == "opensips":
            return f"table {self.table} (OpenSIPS format)"
        return f"table {self.table}"

    def load(self):
        """A Deferred firing with the rows of the table (a ValueError naming
        the row for a bad value)."""
        d = self.storage.select(self.table, order_by=["setid", "id"])
        d.addCallback(self._convert)
        return d

    def _convert(self, records):
        fmt = self.table_format
        if fmt == "auto":
            fmt = detect_format(records) if records else (self.format or "kamailio")
        self.format = fmt
        return rows_from_opensips(records) if fmt == "opensips" else rows_from_table(records)
