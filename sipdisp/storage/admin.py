"""
Schema administration over a started :class:`~sipdisp.storage.core.Storage`:
create the tables (idempotent, also on a kamctl-created database) and
compare a live database with the schema.
"""

from twisted.internet import defer

from . import schema as S


@defer.inlineCallbacks
def init_schema(storage, tables=S.TABLES):
    """Create missing tables, indexes and version rows, and add missing
    columns that have a default (such as the seed's acc extras on a
    kamctl-created ``acc``). Fires with ``(created tables, added columns)``.
    """
    created, added = [], []
    if storage.dialect == "memory":
        return created, added
    for table in tables:
        live = yield storage.describe(table.name)
        yield storage.run_query(S.create_table(storage.dialect, table))
        for stmt in S.create_indexes(storage.dialect, table):
            yield storage.run_query(stmt)
        yield storage.run_query(S.insert_version(storage.dialect, table))
        if live is None:
            created.append(table.name)
            continue
        for column in table.columns:
            if column.name in live:
                continue
            if column.null or column.default is not S.NO_DEFAULT:
                yield storage.run_query(S.add_column(storage.dialect, table, column))
                added.append("%s.%s" % (table.name, column.name))
    storage.schema_changed()
    return created, added


def _describe_type(column):
    if column.kind == "string":
        return "string(%d)" % column.size
    return column.family


@defer.inlineCallbacks
def check_schema(storage, tables=S.TABLES):
    """Fire with a list of problems (empty when the database matches):
    missing tables or columns, columns of another type family or shorter
    than sipdisp writes, and table versions other than the schema's."""
    problems = []
    present = set()
    for table in tables:
        live = yield storage.describe(table.name)
        if live is None:
            problems.append("missing table %s" % table.name)
            continue
        present.add(table.name)
        for column in table.columns:
            got = live.get(column.name)
            if got is None:
                problems.append("%s: missing column %s %s" % (
                    table.name, column.name, _describe_type(column)))
                continue
            family, length = got
            if family != column.family:
                problems.append("%s.%s: type %s, expected %s" % (
                    table.name, column.name, family, _describe_type(column)))
            elif (column.kind == "string" and length is not None
                  and length < column.size):
                problems.append("%s.%s: string(%d), shorter than the expected "
                                "string(%d)" % (table.name, column.name, length,
                                                column.size))
    if "version" in present:
        rows = yield storage.run_query(
            "SELECT %s, %s FROM %s" % (S.quote(storage.dialect, "table_name"),
                                       S.quote(storage.dialect, "table_version"),
                                       S.quote(storage.dialect, "version")))
        versions = {name: version for name, version in rows}
        for table in tables:
            if table.name not in present:
                continue
            got = versions.get(table.name)
            if got is None:
                problems.append("%s: no row in version (expected %d)" % (
                    table.name, table.version))
            elif int(got) != table.version:
                problems.append("%s: version %s, sipdisp expects %d" % (
                    table.name, got, table.version))
    return problems
