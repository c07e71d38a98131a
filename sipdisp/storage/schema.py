"""
The tables sipdisp reads and writes, described once and rendered per dialect.

Column names, types and table versions follow the DDL that Kamailio 5.6's
``kamctl``/``kamdbctl`` ships (``utils/kamctl/{mysql,postgres,db_sqlite}``),
so sipdisp can be pointed at a database Kamailio already uses.  The
``load_balancer`` table follows OpenSIPS 3.x (table version 3).  ``acc`` and
``missed_calls`` carry the six extra columns of the Kamailio seed's
``acc``/``db_extra`` setting (``src_user`` ... ``dst_domain``).  ``cdrs`` is
sipdisp's own call-detail table in the acc CDR style (see docs/storage.md).

Nothing here touches a database: :func:`render` turns the description into
DDL statements for ``sqlite``, ``postgres`` or ``mysql``; ``etc/schema/*.sql``
are exactly that output (a test keeps them in step).
"""

import re

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

DIALECTS = ("sqlite", "postgres", "mysql")

#: Column kinds. ``serial``/``bigserial`` are auto-increment primary keys.
KINDS = ("serial", "bigserial", "int", "uint", "bigint", "float", "string",
         "datetime", "text", "blob")

NO_DEFAULT = object()


def check_identifier(name):
    """Return *name* if it is a plain SQL identifier, else raise ValueError."""
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise ValueError("invalid SQL identifier: %r" % (name,))
    return name


class Column:
    """One column: name, kind, size (strings) or MySQL precision (floats)."""

    __slots__ = ("name", "kind", "size", "null", "default", "precision")

    def __init__(self, name, kind, size=None, null=False, default=NO_DEFAULT,
                 precision=None):
        if kind not in KINDS:
            raise ValueError("unknown column kind %r" % (kind,))
        self.name = check_identifier(name)
        self.kind = kind
        self.size = size
        self.null = null
        self.default = default
        self.precision = precision

    @property
    def auto(self):
        """True for the auto-increment primary key."""
        return self.kind in ("serial", "bigserial")

    @property
    def family(self):
        """Type family used when comparing with a live database."""
        return {"serial": "int", "bigserial": "int", "uint": "int",
                "bigint": "int", "text": "string", "blob": "binary"}.get(self.kind, self.kind)

    def __repr__(self):
        return "Column(%r, %r)" % (self.name, self.kind)


class Index:
    """A named (unique) index over columns, named as Kamailio names it."""

    __slots__ = ("name", "columns", "unique")

    def __init__(self, name, columns, unique=False):
        self.name = check_identifier(name)
        self.columns = tuple(check_identifier(c) for c in columns)
        self.unique = unique


class Table:
    """A table: columns in DDL order, indexes, version and spool flag.

    ``spool`` marks tables whose writes are journalled to local disk during
    a database outage (call records and registrations).
    """

    def __init__(self, name, version, columns, indexes=(), spool=False,
                 origin="kamailio"):
        self.name = check_identifier(name)
        self.version = version
        self.columns = tuple(columns)
        self.indexes = tuple(indexes)
        self.spool = spool
        self.origin = origin
        self.by_name = {c.name: c for c in self.columns}
        if len(self.by_name) != len(self.columns):
            raise ValueError("duplicate column in %s" % name)
        autos = [c.name for c in self.columns if c.auto]
        self.primary_key = autos[0] if autos else None

    @property
    def column_names(self):
        """Column names in DDL order."""
        return tuple(c.name for c in self.columns)

    def __repr__(self):
        return "Table(%r, version=%r)" % (self.name, self.version)


def _s(name, size, default="", null=False):
    return Column(name, "string", size, null=null, default=default)


def _i(name, default=0, kind="int", null=False):
    return Column(name, kind, null=null, default=default)


def _dt(name, default=NO_DEFAULT):
    return Column(name, "datetime", default=default)


# Columns the Kamailio seed adds to acc and missed_calls (acc "db_extra").
_ACC_EXTRA = (
    _s("src_user", 64), _s("src_domain", 128), _s("src_ip", 64),
    _s("dst_ouser", 64), _s("dst_user", 64), _s("dst_domain", 128),
)


def _acc_like(name, version):
    return Table(name, version, (
        Column("id", "serial"),
        _s("method", 16), _s("from_tag", 128), _s("to_tag", 128),
        _s("callid", 255), _s("sip_code", 3), _s("sip_reason", 128),
        _dt("time"),
    ) + _ACC_EXTRA, (Index("callid_idx", ["callid"]),), spool=True)


TABLES = (
    Table("version", 1, (
        Column("id", "serial"),
        Column("table_name", "string", 32),
        Column("table_version", "uint", default=0),
    ), (Index("table_name_idx", ["table_name"], unique=True),)),

    Table("dispatcher", 4, (
        Column("id", "serial"),
        _i("setid"), _s("destination", 192), _i("flags"), _i("priority"),
        _s("attrs", 128), _s("description", 64),
    )),

    # OpenSIPS 3.x load_balancer (table version 3).
    Table("load_balancer", 3, (
        Column("id", "serial"),
        _i("group_id", kind="uint"),
        Column("dst_uri", "string", 128),
        Column("resources", "string", 255),
        _i("probe_mode", kind="uint"),
        _s("attrs", 255, default=None, null=True),
        _s("description", 128, default=None, null=True),
    ), (Index("dsturi_idx", ["dst_uri"]),), origin="opensips"),

    Table("location", 9, (
        Column("id", "serial"),
        _s("ruid", 64), _s("username", 64),
        _s("domain", 64, default=None, null=True),
        _s("contact", 512),
        _s("received", 128, default=None, null=True),
        _s("path", 512, default=None, null=True),
        _dt("expires", "2030-05-28 21:32:15"),
        Column("q", "float", default=1.0, precision=(10, 2)),
        _s("callid", 255, default="Default-Call-ID"),
        _i("cseq", default=1),
        _dt("last_modified", "2000-01-01 00:00:01"),
        _i("flags"), _i("cflags"),
        _s("user_agent", 255),
        _s("socket", 64, default=None, null=True),
        _i("methods", default=None, null=True),
        _s("instance", 255, default=None, null=True),
        _i("reg_id"), _i("server_id"), _i("connection_id"), _i("keepalive"),
        _i("partition"),
    ), (
        Index("ruid_idx", ["ruid"], unique=True),
        Index("account_contact_idx", ["username", "domain", "contact"]),
        Index("expires_idx", ["expires"]),
        Index("tcpcon_idx", ["connection_id"]),
        Index("connection_idx", ["server_id", "connection_id"]),
    ), spool=True),

    Table("subscriber", 7, (
        Column("id", "serial"),
        _s("username", 64), _s("domain", 64), _s("password", 64),
        _s("ha1", 128), _s("ha1b", 128),
    ), (
        Index("account_idx", ["username", "domain"], unique=True),
        Index("username_idx", ["username"]),
    )),

    _acc_like("acc", 5),

    Table("acc_cdrs", 2, (
        Column("id", "serial"),
        _dt("start_time", "2000-01-01 00:00:00"),
        _dt("end_time", "2000-01-01 00:00:00"),
        Column("duration", "float", default=0, precision=(10, 3)),
    ), (Index("start_time_idx", ["start_time"]),), spool=True),

    _acc_like("missed_calls", 4),

    Table("dialog", 7, (
        Column("id", "serial"),
        _i("hash_entry", default=NO_DEFAULT, kind="uint"),
        _i("hash_id", default=NO_DEFAULT, kind="uint"),
        _s("callid", 255, default=NO_DEFAULT),
        _s("from_uri", 255, default=NO_DEFAULT),
        _s("from_tag", 128, default=NO_DEFAULT),
        _s("to_uri", 255, default=NO_DEFAULT),
        _s("to_tag", 128, default=NO_DEFAULT),
        _s("caller_cseq", 20, default=NO_DEFAULT),
        _s("callee_cseq", 20, default=NO_DEFAULT),
        _s("caller_route_set", 512, default=NO_DEFAULT, null=True),
        _s("callee_route_set", 512, default=NO_DEFAULT, null=True),
        _s("caller_contact", 255, default=NO_DEFAULT),
        _s("callee_contact", 255, default=NO_DEFAULT),
        _s("caller_sock", 64, default=NO_DEFAULT),
        _s("callee_sock", 64, default=NO_DEFAULT),
        _i("state", default=NO_DEFAULT, kind="uint"),
        _i("start_time", default=NO_DEFAULT, kind="uint"),
        _i("timeout", kind="uint"), _i("sflags", kind="uint"),
        _i("iflags", kind="uint"),
        _s("toroute_name", 32, default=NO_DEFAULT, null=True),
        _s("req_uri", 255, default=NO_DEFAULT),
        _s("xdata", 512, default=NO_DEFAULT, null=True),
    ), (Index("hash_idx", ["hash_entry", "hash_id"]),)),

    Table("dialog_vars", 1, (
        Column("id", "serial"),
        _i("hash_entry", default=NO_DEFAULT, kind="uint"),
        _i("hash_id", default=NO_DEFAULT, kind="uint"),
        _s("dialog_key", 128, default=NO_DEFAULT),
        _s("dialog_value", 512, default=NO_DEFAULT),
    ), (Index("hash_idx", ["hash_entry", "hash_id"]),)),

    Table("domain", 2, (
        Column("id", "serial"),
        _s("domain", 64, default=NO_DEFAULT),
        _s("did", 64, default=None, null=True),
        _dt("last_modified", "2000-01-01 00:00:01"),
    ), (Index("domain_idx", ["domain"], unique=True),)),

    # alias_db (kamctl alias_db-create.sql; OpenSIPS 3.x has the same columns).
    Table("dbaliases", 1, (
        Column("id", "serial"),
        _s("alias_username", 64), _s("alias_domain", 64),
        _s("username", 64), _s("domain", 64),
    ), (
        Index("alias_user_idx", ["alias_username"]),
        Index("alias_idx", ["alias_username", "alias_domain"]),
        Index("target_idx", ["username", "domain"]),
    )),

    # dialplan (kamctl dialplan-create.sql): every column NOT NULL, no default.
    Table("dialplan", 2, (
        Column("id", "serial"),
        _i("dpid", default=NO_DEFAULT), _i("pr", default=NO_DEFAULT),
        _i("match_op", default=NO_DEFAULT),
        _s("match_exp", 64, default=NO_DEFAULT),
        _i("match_len", default=NO_DEFAULT),
        _s("subst_exp", 64, default=NO_DEFAULT),
        _s("repl_exp", 64, default=NO_DEFAULT),
        _s("attrs", 64, default=NO_DEFAULT),
    )),

    # Kamailio 5.x msilo (table version 8): offline messages; inc_time and
    # exp_time are Unix seconds; body and extra_hdrs are the nullable BLOB
    # and TEXT of version 8. Spooled: a message answered 202 survives an
    # outage and a restart.
    Table("silo", 8, (
        Column("id", "serial"),
        _s("src_addr", 128), _s("dst_addr", 128),
        _s("username", 64), _s("domain", 64),
        _i("inc_time"), _i("exp_time"), _i("snd_time"),
        _s("ctype", 32, default="text/plain"),
        Column("body", "blob", null=True, default=NO_DEFAULT),
        Column("extra_hdrs", "text", null=True, default=NO_DEFAULT),
        _s("callid", 128), _i("status"),
    ), (Index("account_idx", ["username", "domain"]),), spool=True),

    # Kamailio 5.x presence (presentity 5, active_watchers 12, watchers 3,
    # xcap 4), as kamctl's presence-create.sql: PUBLISHed state, the
    # subscription dialogs (their next NOTIFY's CSeq survives a restart) and
    # the watchers' authorization (presence_xml). Times are Unix seconds.
    Table("presentity", 5, (
        Column("id", "serial"),
        _s("username", 64, default=NO_DEFAULT), _s("domain", 64, default=NO_DEFAULT),
        _s("event", 64, default=NO_DEFAULT), _s("etag", 128, default=NO_DEFAULT),
        _i("expires", default=NO_DEFAULT), _i("received_time", default=NO_DEFAULT),
        Column("body", "blob", default=NO_DEFAULT),
        _s("sender", 255, default=NO_DEFAULT),
        _i("priority"),
        _s("ruid", 64, default=NO_DEFAULT, null=True),
    ), (
        Index("presentity_idx", ["username", "domain", "event", "etag"], unique=True),
        Index("ruid_idx", ["ruid"], unique=True),
        Index("presentity_expires", ["expires"]),
        Index("account_idx", ["username", "domain", "event"]),
    ), spool=True),

    Table("active_watchers", 12, (
        Column("id", "serial"),
        _s("presentity_uri", 255, default=NO_DEFAULT),
        _s("watcher_username", 64, default=NO_DEFAULT),
        _s("watcher_domain", 64, default=NO_DEFAULT),
        _s("to_user", 64, default=NO_DEFAULT), _s("to_domain", 64, default=NO_DEFAULT),
        _s("event", 64, default="presence"),
        _s("event_id", 64, default=NO_DEFAULT, null=True),
        _s("to_tag", 128, default=NO_DEFAULT), _s("from_tag", 128, default=NO_DEFAULT),
        _s("callid", 255, default=NO_DEFAULT),
        _i("local_cseq", default=NO_DEFAULT), _i("remote_cseq", default=NO_DEFAULT),
        _s("contact", 255, default=NO_DEFAULT),
        Column("record_route", "text", null=True, default=NO_DEFAULT),
        _i("expires", default=NO_DEFAULT), _i("status", default=2),
        _s("reason", 64, default=NO_DEFAULT, null=True),
        _i("version"),
        _s("socket_info", 64, default=NO_DEFAULT),
        _s("local_contact", 255, default=NO_DEFAULT),
        _s("from_user", 64, default=NO_DEFAULT), _s("from_domain", 64, default=NO_DEFAULT),
        _i("updated", default=NO_DEFAULT), _i("updated_winfo", default=NO_DEFAULT),
        _i("flags"),
        _s("user_agent", 255, default="", null=True),
    ), (
        Index("active_watchers_idx", ["callid", "to_tag", "from_tag"], unique=True),
        Index("active_watchers_expires", ["expires"]),
        Index("active_watchers_pres", ["presentity_uri", "event"]),
        Index("updated_idx", ["updated"]),
        Index("updated_winfo_idx", ["updated_winfo", "presentity_uri"]),
    ), spool=True),

    Table("watchers", 3, (
        Column("id", "serial"),
        _s("presentity_uri", 255, default=NO_DEFAULT),
        _s("watcher_username", 64, default=NO_DEFAULT),
        _s("watcher_domain", 64, default=NO_DEFAULT),
        _s("event", 64, default="presence"),
        _i("status", default=NO_DEFAULT),
        _s("reason", 64, default=NO_DEFAULT, null=True),
        _i("inserted_time", default=NO_DEFAULT),
    ), (Index("watcher_idx", ["presentity_uri", "watcher_username", "watcher_domain",
                              "event"], unique=True),)),

    Table("xcap", 4, (
        Column("id", "serial"),
        _s("username", 64, default=NO_DEFAULT), _s("domain", 64, default=NO_DEFAULT),
        Column("doc", "blob", default=NO_DEFAULT),
        _i("doc_type", default=NO_DEFAULT),
        _s("etag", 128, default=NO_DEFAULT),
        _i("source", default=NO_DEFAULT),
        _s("doc_uri", 255, default=NO_DEFAULT),
        _i("port", default=NO_DEFAULT),
    ), (
        Index("doc_uri_idx", ["doc_uri"], unique=True),
        Index("account_doc_type_idx", ["username", "domain", "doc_type"]),
        Index("account_doc_type_uri_idx", ["username", "domain", "doc_type", "doc_uri"]),
        Index("account_doc_uri_idx", ["username", "domain", "doc_uri"]),
    )),

    # OpenSIPS 3.x drouting (dr_gateways 6, dr_rules 4, dr_carriers 3,
    # dr_groups 2), as its PostgreSQL DDL (VARCHAR where MySQL's says CHAR).
    Table("dr_gateways", 6, (
        Column("id", "serial"),
        _s("gwid", 64, default=NO_DEFAULT), _i("type", kind="uint"),
        _s("address", 128, default=NO_DEFAULT), _i("strip", kind="uint"),
        _s("pri_prefix", 16, default=None, null=True),
        _s("attrs", 255, default=None, null=True),
        _i("probe_mode", kind="uint"), _i("state", kind="uint"),
        _s("socket", 128, default=None, null=True),
        _s("description", 128, default=None, null=True),
    ), (Index("dr_gw_idx", ["gwid"], unique=True),), origin="opensips"),
    Table("dr_rules", 4, (
        Column("ruleid", "serial"),
        _s("groupid", 255, default=NO_DEFAULT), _s("prefix", 64, default=NO_DEFAULT),
        _s("timerec", 255, default=None, null=True), _i("priority"),
        _s("routeid", 255, default=None, null=True), _s("gwlist", 255, default=NO_DEFAULT),
        _s("sort_alg", 1, default="N"),
        _i("sort_profile", kind="uint", default=None, null=True),
        _s("attrs", 255, default=None, null=True),
        _s("description", 128, default=None, null=True),
    ), origin="opensips"),
    Table("dr_carriers", 3, (
        Column("id", "serial"),
        _s("carrierid", 64, default=NO_DEFAULT), _s("gwlist", 255, default=NO_DEFAULT),
        _i("flags", kind="uint"), _s("sort_alg", 1, default="N"), _i("state", kind="uint"),
        _s("attrs", 255, default=None, null=True),
        _s("description", 128, default=None, null=True),
    ), (Index("dr_carrier_idx", ["carrierid"], unique=True),), origin="opensips"),
    Table("dr_groups", 2, (
        Column("id", "serial"),
        _s("username", 64, default=NO_DEFAULT),
        _s("domain", 128, default=None, null=True),
        _i("groupid", kind="uint"),
        _s("description", 128, default=None, null=True),
    ), origin="opensips"),

    # sipdisp's CDR table: acc CDR engine names (start_time, end_time,
    # duration) plus setup time, dialog identity, the seed's acc extras and
    # the final reply; one row per dialog (uk_cft as in Siremis' cdrs).
    Table("cdrs", 1, (
        Column("cdr_id", "bigserial"),
        _dt("start_time", "2000-01-01 00:00:00"),
        _dt("end_time", "2000-01-01 00:00:00"),
        Column("duration", "float", default=0, precision=(10, 3)),
        _i("setuptime", kind="uint"),
        _s("callid", 255), _s("from_tag", 128), _s("to_tag", 128),
    ) + _ACC_EXTRA + (
        _s("sip_code", 3), _s("sip_reason", 128),
    ), (
        Index("uk_cft", ["callid", "from_tag", "to_tag"], unique=True),
        Index("start_time_idx", ["start_time"]),
    ), spool=True, origin="sipdisp"),

    # One row per write batch in flight, inserted in the batch's own
    # transaction: after a connection dies during COMMIT, its presence says
    # whether the batch was committed, so no batch is written twice.
    Table("sipdisp_batches", 1, (
        _s("token", 64, default=NO_DEFAULT),
        _dt("created", "2000-01-01 00:00:00"),
    ), (Index("token_idx", ["token"], unique=True),), origin="sipdisp"),
)

SCHEMA = {t.name: t for t in TABLES}

#: The table of batch tokens (see Storage: exactly-once commits).
BATCH_TABLE = "sipdisp_batches"


# -- rendering ----------------------------------------------------------------

_TYPES = {
    "mysql": {
        "serial": "INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL",
        "bigserial": "BIGINT(20) AUTO_INCREMENT PRIMARY KEY NOT NULL",
        "int": "INT(11)", "uint": "INT(10) UNSIGNED", "bigint": "BIGINT(20)",
        "datetime": "DATETIME", "text": "TEXT", "blob": "BLOB",
    },
    "postgres": {
        "serial": "SERIAL PRIMARY KEY NOT NULL",
        "bigserial": "BIGSERIAL PRIMARY KEY NOT NULL",
        "int": "INTEGER", "uint": "INTEGER", "bigint": "BIGINT",
        "float": "REAL", "datetime": "TIMESTAMP WITHOUT TIME ZONE",
        "text": "TEXT", "blob": "BYTEA",
    },
    "sqlite": {
        "serial": "INTEGER PRIMARY KEY NOT NULL",
        "bigserial": "INTEGER PRIMARY KEY NOT NULL",
        "int": "INTEGER", "uint": "INTEGER", "bigint": "BIGINT",
        "float": "REAL", "datetime": "TIMESTAMP WITHOUT TIME ZONE",
        "text": "TEXT", "blob": "BLOB",
    },
}


def quote(dialect, name):
    """Quote a schema identifier for *dialect* (validated, never user data)."""
    check_identifier(name)
    return "`%s`" % name if dialect == "mysql" else '"%s"' % name


def _literal(value):
    if isinstance(value, str):
        return "'%s'" % value.replace("'", "''")
    return str(value)


def column_type(dialect, column):
    """The SQL type of *column* in *dialect*."""
    if column.kind == "string":
        return "VARCHAR(%d)" % column.size
    if column.kind == "float" and dialect == "mysql":
        return "FLOAT(%d,%d)" % column.precision
    return _TYPES[dialect][column.kind]


def column_ddl(dialect, column):
    """The column definition as it appears inside CREATE TABLE."""
    parts = [quote(dialect, column.name), column_type(dialect, column)]
    if column.auto:
        return " ".join(parts)
    if column.default is not NO_DEFAULT:
        parts.append("DEFAULT " + ("NULL" if column.default is None
                                   else _literal(column.default)))
    if not column.null:
        parts.append("NOT NULL")
    return " ".join(parts)


def _index_name(dialect, table, index):
    # MySQL index names are per table; PostgreSQL's and SQLite's are global,
    # so Kamailio prefixes them with the table name there.
    if dialect == "mysql":
        return index.name
    return "%s_%s" % (table.name, index.name)


def create_table(dialect, table):
    """CREATE TABLE IF NOT EXISTS for one table (MySQL keeps its indexes
    inline so the statement stays idempotent on MySQL 8 as well)."""
    lines = [column_ddl(dialect, c) for c in table.columns]
    for index in table.indexes:
        cols = ", ".join(quote(dialect, c) for c in index.columns)
        name = _index_name(dialect, table, index)
        if index.unique:
            lines.append("CONSTRAINT %s UNIQUE (%s)" % (name, cols))
        elif dialect == "mysql":
            lines.append("KEY %s (%s)" % (name, cols))
    return "CREATE TABLE IF NOT EXISTS %s (\n    %s\n)" % (
        quote(dialect, table.name), ",\n    ".join(lines))


def create_indexes(dialect, table):
    """CREATE INDEX IF NOT EXISTS statements (PostgreSQL and SQLite)."""
    if dialect == "mysql":
        return []
    out = []
    for index in table.indexes:
        if index.unique:
            continue
        out.append("CREATE INDEX IF NOT EXISTS %s ON %s (%s)" % (
            _index_name(dialect, table, index), quote(dialect, table.name),
            ", ".join(quote(dialect, c) for c in index.columns)))
    return out


def insert_version(dialect, table):
    """Insert the table's version row unless one is already there."""
    q = lambda n: quote(dialect, n)  # noqa: E731
    source = " FROM DUAL" if dialect == "mysql" else ""
    return ("INSERT INTO %s (%s, %s) SELECT '%s', %d%s WHERE NOT EXISTS "
            "(SELECT 1 FROM %s WHERE %s = '%s')" % (
                q("version"), q("table_name"), q("table_version"),
                table.name, table.version, source,
                q("version"), q("table_name"), table.name))


def add_column(dialect, table, column):
    """ALTER TABLE ... ADD COLUMN for a column missing from a live table."""
    return "ALTER TABLE %s ADD COLUMN %s" % (
        quote(dialect, table.name), column_ddl(dialect, column))


def render(dialect, tables=TABLES):
    """All statements creating *tables* in *dialect*, idempotent, in order."""
    if dialect not in DIALECTS:
        raise ValueError("unknown dialect %r" % (dialect,))
    out = []
    for table in tables:
        out.append(create_table(dialect, table))
        out.extend(create_indexes(dialect, table))
        out.append(insert_version(dialect, table))
    return out


def render_file(dialect, tables=TABLES):
    """The text of ``etc/schema/<dialect>.sql``."""
    head = ("-- sipdisp schema for %s, generated from sipdisp/storage/schema.py"
            "\n-- (sipdisp db ddl %s). Kamailio 5.x / OpenSIPS 3.x compatible;"
            "\n-- every statement is idempotent, so it can run on an existing"
            "\n-- kamctl-created database.\n\n" % (dialect, dialect))
    return head + "".join(s + ";\n\n" for s in render(dialect, tables))


_ORIGIN = {
    "kamailio": "Kamailio 5.x kamctl",
    "opensips": "OpenSIPS 3.x",
    "sipdisp": "sipdisp",
}


def render_markdown(tables=TABLES):
    """The table-by-table column mapping of docs/storage.md."""
    out = []
    for table in tables:
        out.append("### `%s` (version %d, %s%s)\n" % (
            table.name, table.version, _ORIGIN[table.origin],
            ", spooled" if table.spool else ""))
        out.append("| column | MySQL/MariaDB | PostgreSQL | SQLite | null | default |")
        out.append("|---|---|---|---|---|---|")
        for c in table.columns:
            default = ("auto" if c.auto else "" if c.default is NO_DEFAULT
                       else "NULL" if c.default is None else _literal(c.default))
            out.append("| `%s` | %s | %s | %s | %s | %s |" % (
                c.name, column_type("mysql", c), column_type("postgres", c),
                column_type("sqlite", c), "yes" if c.null else "no", default))
        if table.indexes:
            out.append("\nIndexes: " + "; ".join(
                "%s`%s` (%s)" % ("unique " if i.unique else "", i.name,
                                 ", ".join(i.columns)) for i in table.indexes) + ".")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    import sys
    if sys.argv[1:] == ["markdown"]:
        sys.stdout.write(render_markdown())
    else:
        sys.stdout.write(render_file(sys.argv[1] if len(sys.argv) > 1 else "sqlite"))
