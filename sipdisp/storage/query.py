"""
Parameterised SQL for the table API, and the same semantics in pure Python.

A *where* is a dict ``{column: condition}``, all conditions ANDed:

- a plain value: ``column = value`` (``None`` means ``IS NULL``);
- a list, tuple, set or frozenset: ``column IN (...)``;
- an :class:`Op` from :func:`lt`, :func:`le`, :func:`gt`, :func:`ge`,
  :func:`ne`: that comparison (``ne(None)`` is ``IS NOT NULL``).

Identifiers are quoted schema names (checked against the schema before
they get here); every value travels as a bound parameter, never in SQL text.

Writes and reads are *programs*: generators that yield :class:`Statement`
objects and receive a :class:`Result` for each, so one description of
"update, and insert if nothing matched" runs on a blocking DB-API cursor in
an adbapi thread and on txpostgres' asynchronous cursor alike.
"""

from .schema import quote


class Op:
    """A comparison in a where clause (``lt(now)``, ``ne(None)``, ...)."""

    __slots__ = ("op", "value")
    _SQL = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "ne": "<>"}

    def __init__(self, op, value):
        if op not in self._SQL:
            raise ValueError("unknown operator %r" % (op,))
        self.op = op
        self.value = value

    def __eq__(self, other):
        return (isinstance(other, Op) and other.op == self.op
                and other.value == self.value)

    def __repr__(self):
        return "%s(%r)" % (self.op, self.value)


def lt(value):
    """``column < value``."""
    return Op("lt", value)


def le(value):
    """``column <= value``."""
    return Op("le", value)


def gt(value):
    """``column > value``."""
    return Op("gt", value)


def ge(value):
    """``column >= value``."""
    return Op("ge", value)


def ne(value):
    """``column <> value``; ``ne(None)`` is ``IS NOT NULL``."""
    return Op("ne", value)


_MULTI = (list, tuple, set, frozenset)


class Statement:
    """One SQL text with its parameters (a tuple)."""

    __slots__ = ("sql", "params")

    def __init__(self, sql, params=()):
        self.sql = sql
        self.params = tuple(params)

    def __repr__(self):
        return "Statement(%r, %r)" % (self.sql, self.params)


class Result:
    """What a program gets back for one statement."""

    __slots__ = ("rowcount", "columns", "rows")

    def __init__(self, rowcount, columns=None, rows=None):
        self.rowcount = rowcount
        self.columns = columns
        self.rows = rows


class Dialect:
    """Quoting and parameter style of one backend."""

    def __init__(self, name, placeholder):
        self.name = name
        self.placeholder = placeholder

    def q(self, name):
        """Quote one identifier."""
        return quote(self.name, name)

    def where(self, where):
        """``(sql, params)`` for a where dict; ``("", ())`` when empty."""
        if not where:
            return "", ()
        parts, params = [], []
        p = self.placeholder
        for column, cond in where.items():
            col = self.q(column)
            if isinstance(cond, Op):
                if cond.value is None:
                    if cond.op != "ne":
                        raise ValueError("only ne() compares with None")
                    parts.append("%s IS NOT NULL" % col)
                else:
                    parts.append("%s %s %s" % (col, Op._SQL[cond.op], p))
                    params.append(cond.value)
            elif cond is None:
                parts.append("%s IS NULL" % col)
            elif isinstance(cond, _MULTI):
                values = list(cond)
                if not values:
                    parts.append("1 = 0")
                else:
                    parts.append("%s IN (%s)" % (col, ", ".join([p] * len(values))))
                    params.extend(values)
            else:
                parts.append("%s = %s" % (col, p))
                params.append(cond)
        return " WHERE " + " AND ".join(parts), tuple(params)

    def insert(self, table, row):
        cols = list(row)
        if not cols:
            return Statement("INSERT INTO %s DEFAULT VALUES" % self.q(table)
                             if self.name != "mysql" else
                             "INSERT INTO %s () VALUES ()" % self.q(table))
        return Statement("INSERT INTO %s (%s) VALUES (%s)" % (
            self.q(table), ", ".join(self.q(c) for c in cols),
            ", ".join([self.placeholder] * len(cols))), [row[c] for c in cols])

    def update(self, table, values, where):
        sets = ", ".join("%s = %s" % (self.q(c), self.placeholder) for c in values)
        wsql, wparams = self.where(where)
        return Statement("UPDATE %s SET %s%s" % (self.q(table), sets, wsql),
                         tuple(values.values()) + wparams)

    def delete(self, table, where):
        wsql, wparams = self.where(where)
        return Statement("DELETE FROM %s%s" % (self.q(table), wsql), wparams)

    def select(self, table, where=None, columns=None, order_by=None, limit=None):
        cols = ", ".join(self.q(c) for c in columns) if columns else "*"
        wsql, params = self.where(where)
        sql = "SELECT %s FROM %s%s" % (cols, self.q(table), wsql)
        if order_by:
            sql += " ORDER BY " + ", ".join(
                self.q(c[1:]) + " DESC" if c.startswith("-") else self.q(c)
                for c in order_by)
        if limit is not None:
            sql += " LIMIT %d" % int(limit)
        return Statement(sql, params)


DIALECTS = {
    "sqlite": Dialect("sqlite", "?"),
    "postgres": Dialect("postgres", "%s"),
    "mysql": Dialect("mysql", "%s"),
}


# -- programs -------------------------------------------------------------------

def write_program(dialect, op):
    """Statements for one write; returns the number of rows it touched."""
    if op.kind == "insert":
        r = yield dialect.insert(op.table, op.row)
        return r.rowcount
    if op.kind == "update":
        r = yield dialect.update(op.table, op.row, op.where)
        return r.rowcount
    if op.kind == "delete":
        r = yield dialect.delete(op.table, op.where)
        return r.rowcount
    if op.kind == "upsert":
        keys = {k: op.row[k] for k in op.keys}
        rest = {k: v for k, v in op.row.items() if k not in op.keys}
        if rest:
            r = yield dialect.update(op.table, rest, keys)
            found = r.rowcount
        else:
            r = yield dialect.select(op.table, keys, columns=list(op.keys), limit=1)
            found = len(r.rows)
        if found and found > 0:
            return found
        r = yield dialect.insert(op.table, op.row)
        return r.rowcount
    raise ValueError("unknown write kind %r" % (op.kind,))


def select_program(dialect, table, where=None, columns=None, order_by=None,
                   limit=None):
    """One SELECT; returns a list of dicts keyed by column name."""
    r = yield dialect.select(table, where, columns, order_by, limit)
    return [dict(zip(r.columns, row)) for row in r.rows]


def raw_program(sql, params):
    """Any statement; returns its rows as tuples ([] when it has none)."""
    r = yield Statement(sql, params or ())
    return list(r.rows) if r.rows is not None else []


def run_blocking(cursor, programs):
    """Drive *programs* on a DB-API cursor (runs in an adbapi thread)."""
    results = []
    for program in programs:
        try:
            stmt = next(program)
            while True:
                cursor.execute(stmt.sql, stmt.params)
                if cursor.description is not None:
                    res = Result(cursor.rowcount,
                                 [d[0] for d in cursor.description],
                                 cursor.fetchall())
                else:
                    res = Result(cursor.rowcount)
                stmt = program.send(res)
        except StopIteration as stop:
            results.append(stop.value)
    return results


# -- the same semantics in Python (memory backend, read caches) ---------------

def _compare(op, a, b):
    if a is None:
        return False
    try:
        if op == "lt":
            return a < b
        if op == "le":
            return a <= b
        if op == "gt":
            return a > b
        if op == "ge":
            return a >= b
    except TypeError:
        return False
    return a != b


def matches(row, where):
    """True if *row* (a dict) satisfies *where*."""
    if not where:
        return True
    for column, cond in where.items():
        value = row.get(column)
        if isinstance(cond, Op):
            if cond.value is None:
                if value is None:
                    return False
            elif not _compare(cond.op, value, cond.value):
                return False
        elif cond is None:
            if value is not None:
                return False
        elif isinstance(cond, _MULTI):
            if value not in cond:
                return False
        elif value != cond:
            return False
    return True


def select_rows(rows, where=None, columns=None, order_by=None, limit=None):
    """SELECT over a list of dicts; returns copies."""
    out = [r for r in rows if matches(r, where)]
    for key in reversed(order_by or ()):
        desc = key.startswith("-")
        name = key[1:] if desc else key
        out.sort(key=lambda r: (r.get(name) is not None, r.get(name)),
                 reverse=desc)
    if limit is not None:
        out = out[:int(limit)]
    if columns:
        return [{c: r.get(c) for c in columns} for r in out]
    return [dict(r) for r in out]


def apply_write(rows, op, defaults=None, next_id=None):
    """Apply *op* to a list of dicts in place; returns rows touched.

    *defaults* fills columns an insert leaves out; *next_id* is a callable
    giving ``(pk_name, value)`` for a new row, or None.
    """
    if op.kind == "insert":
        rows.append(_new_row(op.row, defaults, next_id))
        return 1
    if op.kind in ("update", "delete"):
        hit = [r for r in rows if matches(r, op.where)]
        if op.kind == "update":
            for r in hit:
                r.update(op.row)
        else:
            rows[:] = [r for r in rows if not matches(r, op.where)]
        return len(hit)
    if op.kind == "upsert":
        keys = {k: op.row[k] for k in op.keys}
        hit = [r for r in rows if matches(r, keys)]
        for r in hit:
            r.update(op.row)
        if hit:
            return len(hit)
        rows.append(_new_row(op.row, defaults, next_id))
        return 1
    raise ValueError("unknown write kind %r" % (op.kind,))


def _new_row(values, defaults, next_id):
    row = dict(defaults or {})
    if next_id is not None:
        pk, value = next_id()
        if pk is not None and values.get(pk) is None:
            row[pk] = value
    row.update(values)
    return row
