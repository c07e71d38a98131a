"""The storage schema: Kamailio/OpenSIPS names, types, versions, and DDL."""

import pathlib

import pytest

from sipdisp.storage import schema as S

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("dialect", S.DIALECTS)
def test_etc_schema_files_are_the_rendered_schema(dialect):
    """etc/schema/<dialect>.sql is exactly what schema.py renders (no drift)."""
    text = (ROOT / "etc" / "schema" / ("%s.sql" % dialect)).read_text()
    assert text == S.render_file(dialect)


def test_tables_and_versions_follow_kamailio_and_opensips():
    """Each table carries the version number Kamailio 5.x / OpenSIPS 3.x use."""
    versions = {t.name: t.version for t in S.TABLES}
    assert versions == {
        "version": 1, "dispatcher": 4, "load_balancer": 3, "location": 9,
        "subscriber": 7, "acc": 5, "acc_cdrs": 2, "missed_calls": 4,
        "dialog": 7, "dialog_vars": 1, "domain": 2, "dbaliases": 1, "dialplan": 2, "cdrs": 1, "silo": 8,
        "presentity": 5, "active_watchers": 12, "watchers": 3, "xcap": 4,
        "dr_gateways": 6, "dr_rules": 4, "dr_carriers": 3, "dr_groups": 2,
        "sipdisp_batches": 1}


def test_location_has_kamailio_usrloc_columns_in_order():
    """location has Kamailio's usrloc columns, in kamctl's order."""
    assert S.SCHEMA["location"].column_names == (
        "id", "ruid", "username", "domain", "contact", "received", "path",
        "expires", "q", "callid", "cseq", "last_modified", "flags", "cflags",
        "user_agent", "socket", "methods", "instance", "reg_id", "server_id",
        "connection_id", "keepalive", "partition")


@pytest.mark.parametrize("table", ["acc", "missed_calls"])
def test_acc_tables_have_the_seed_extra_columns(table):
    """acc and missed_calls have the core columns plus the seed's db_extra."""
    assert S.SCHEMA[table].column_names == (
        "id", "method", "from_tag", "to_tag", "callid", "sip_code",
        "sip_reason", "time", "src_user", "src_domain", "src_ip", "dst_ouser",
        "dst_user", "dst_domain")
    assert S.SCHEMA[table].spool


def test_dispatcher_subscriber_load_balancer_columns():
    """dispatcher, subscriber and load_balancer have the issue's columns."""
    assert S.SCHEMA["dispatcher"].column_names == (
        "id", "setid", "destination", "flags", "priority", "attrs", "description")
    assert S.SCHEMA["subscriber"].column_names == (
        "id", "username", "domain", "password", "ha1", "ha1b")
    assert S.SCHEMA["load_balancer"].column_names == (
        "id", "group_id", "dst_uri", "resources", "probe_mode", "attrs",
        "description")


def test_cdrs_is_acc_cdr_style():
    """cdrs has cdr_id, start/end time, duration, setup time and call identity."""
    names = S.SCHEMA["cdrs"].column_names
    for column in ("cdr_id", "start_time", "end_time", "duration", "setuptime",
                   "callid", "from_tag", "to_tag", "src_user", "dst_user",
                   "sip_code", "sip_reason"):
        assert column in names
    assert S.SCHEMA["cdrs"].primary_key == "cdr_id"


def test_mysql_types_match_kamctl_spelling():
    """MySQL column definitions read as kamctl's mysql/*-create.sql do."""
    loc = S.SCHEMA["location"].by_name
    assert S.column_ddl("mysql", loc["q"]) == "`q` FLOAT(10,2) DEFAULT 1.0 NOT NULL"
    assert S.column_ddl("mysql", loc["expires"]) == \
        "`expires` DATETIME DEFAULT '2030-05-28 21:32:15' NOT NULL"
    assert S.column_ddl("mysql", loc["id"]) == \
        "`id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL"
    assert S.column_ddl("postgres", loc["domain"]) == \
        '"domain" VARCHAR(64) DEFAULT NULL'
    assert S.column_ddl("postgres", S.SCHEMA["acc"].by_name["time"]) == \
        '"time" TIMESTAMP WITHOUT TIME ZONE NOT NULL'


def test_index_names_are_prefixed_except_on_mysql():
    """Index names follow kamctl: bare on MySQL, table-prefixed elsewhere."""
    pg = "\n".join(S.render("postgres"))
    my = "\n".join(S.render("mysql"))
    assert "CONSTRAINT location_ruid_idx UNIQUE" in pg
    assert "CONSTRAINT ruid_idx UNIQUE" in my
    assert "CREATE INDEX IF NOT EXISTS acc_callid_idx ON" in pg
    assert "KEY callid_idx (`callid`)" in my


@pytest.mark.parametrize("dialect", S.DIALECTS)
def test_every_statement_is_idempotent(dialect):
    """db init can re-run: every CREATE has IF NOT EXISTS, every INSERT a guard."""
    for stmt in S.render(dialect):
        if stmt.startswith("CREATE"):
            assert "IF NOT EXISTS" in stmt
        else:
            assert stmt.startswith("INSERT INTO") and "WHERE NOT EXISTS" in stmt


@pytest.mark.parametrize("name", ["a b", "x;drop", "1abc", "", "a" * 64, None])
def test_bad_identifiers_are_refused(name):
    """Identifiers that are not plain names never reach SQL text."""
    with pytest.raises(ValueError):
        S.check_identifier(name)
    with pytest.raises(ValueError):
        S.quote("postgres", name)


def test_docs_table_mapping_is_the_schema():
    """docs/storage.md carries the generated column mapping of every table."""
    text = (ROOT / "docs" / "storage.md").read_text()
    assert S.render_markdown() in text
