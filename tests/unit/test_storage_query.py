"""Parameterised SQL generation and the in-Python twin used by memory/caches."""

import datetime
import sqlite3

from sipdisp.storage import query as Q
from sipdisp.storage.base import WriteOp, decode, encode

PG = Q.DIALECTS["postgres"]
LITE = Q.DIALECTS["sqlite"]
EVIL = "x'); DROP TABLE acc; --"


def test_values_are_never_in_sql_text():
    """Every value, however hostile, travels as a parameter."""
    for stmt in (PG.insert("acc", {"callid": EVIL}),
                 PG.update("acc", {"sip_reason": EVIL}, {"callid": EVIL}),
                 PG.delete("acc", {"callid": EVIL}),
                 PG.select("acc", {"callid": [EVIL, "b"]})):
        assert EVIL not in stmt.sql
        assert EVIL in stmt.params


def test_where_forms():
    """Equality, NULL, IN, empty IN and comparison operators compile."""
    sql, params = PG.where({"a": 1, "b": None, "c": [1, 2], "d": Q.lt(5),
                            "e": Q.ne(None), "f": []})
    assert sql == (' WHERE "a" = %s AND "b" IS NULL AND "c" IN (%s, %s) AND '
                   '"d" < %s AND "e" IS NOT NULL AND 1 = 0')
    assert params == (1, 1, 2, 5)


def test_select_with_order_and_limit():
    """Columns, ORDER BY (with -desc) and LIMIT compile with ? on SQLite."""
    stmt = LITE.select("location", {"username": "alice"}, ["contact", "q"],
                       ["-q", "contact"], 3)
    assert stmt.sql == ('SELECT "contact", "q" FROM "location" WHERE '
                        '"username" = ? ORDER BY "q" DESC, "contact" LIMIT 3')
    assert stmt.params == ("alice",)


def _run(program, rowcounts):
    """Drive a program with canned rowcounts; return (statements, result)."""
    seen = []
    try:
        stmt = next(program)
        while True:
            seen.append(stmt)
            n = rowcounts.pop(0)
            stmt = program.send(Q.Result(n, ["x"], [(1,)] * n))
    except StopIteration as stop:
        return seen, stop.value


def test_upsert_updates_when_a_row_matches():
    """upsert is one UPDATE when the keys match a row."""
    op = WriteOp(1, "upsert", "location", {"ruid": "r1", "contact": "c"},
                 keys=["ruid"])
    seen, result = _run(Q.write_program(PG, op), [1])
    assert [s.sql.split()[0] for s in seen] == ["UPDATE"]
    assert result == 1


def test_upsert_inserts_when_nothing_matches():
    """upsert falls back to INSERT when the UPDATE matched nothing."""
    op = WriteOp(1, "upsert", "location", {"ruid": "r1", "contact": "c"},
                 keys=["ruid"])
    seen, result = _run(Q.write_program(PG, op), [0, 1])
    assert [s.sql.split()[0] for s in seen] == ["UPDATE", "INSERT"]
    assert seen[0].params == ("c", "r1")


def test_programs_run_on_a_real_dbapi_cursor():
    """run_blocking drives write and select programs on sqlite3."""
    conn = sqlite3.connect(":memory:")
    conn.execute('CREATE TABLE "t" ("k" TEXT, "v" INTEGER)')
    ops = [WriteOp(1, "insert", "t", {"k": "a", "v": 1}),
           WriteOp(2, "upsert", "t", {"k": "a", "v": 2}, keys=["k"]),
           WriteOp(3, "upsert", "t", {"k": "b", "v": 3}, keys=["k"])]
    cur = conn.cursor()
    assert Q.run_blocking(cur, [Q.write_program(LITE, op) for op in ops]) == [1, 1, 1]
    rows = Q.run_blocking(cur, [Q.select_program(LITE, "t", order_by=["k"])])[0]
    assert rows == [{"k": "a", "v": 2}, {"k": "b", "v": 3}]


def test_python_twin_matches_sql_semantics():
    """matches/select_rows implement the same where, order and limit."""
    rows = [{"u": "a", "q": 0.5, "x": None}, {"u": "b", "q": 1.0, "x": 1},
            {"u": "c", "q": None, "x": 2}]
    assert [r["u"] for r in Q.select_rows(rows, {"q": Q.ge(0.5)})] == ["a", "b"]
    assert [r["u"] for r in Q.select_rows(rows, {"x": None})] == ["a"]
    assert [r["u"] for r in Q.select_rows(rows, {"x": Q.ne(None)})] == ["b", "c"]
    assert [r["u"] for r in Q.select_rows(rows, {"u": ["a", "c"]})] == ["a", "c"]
    assert [r["u"] for r in Q.select_rows(rows, order_by=["-u"], limit=2)] == ["c", "b"]
    assert Q.select_rows(rows, {"u": "a"}, columns=["q"]) == [{"q": 0.5}]


def test_apply_write_covers_every_kind():
    """apply_write inserts (with defaults and ids), updates, upserts, deletes."""
    rows, ids = [], iter(range(1, 10))
    next_id = lambda: ("id", next(ids))  # noqa: E731
    op = WriteOp(1, "insert", "t", {"k": "a"})
    assert Q.apply_write(rows, op, {"k": "", "v": 0}, next_id) == 1
    assert rows == [{"id": 1, "k": "a", "v": 0}]
    Q.apply_write(rows, WriteOp(2, "upsert", "t", {"k": "a", "v": 5}, keys=["k"]))
    Q.apply_write(rows, WriteOp(3, "upsert", "t", {"k": "b", "v": 6}, keys=["k"]),
                  {"k": "", "v": 0}, next_id)
    assert Q.apply_write(rows, WriteOp(4, "update", "t", {"v": 7},
                                       where={"v": Q.gt(5)})) == 1
    assert [(r["k"], r["v"]) for r in rows] == [("a", 5), ("b", 7)]
    assert Q.apply_write(rows, WriteOp(5, "delete", "t", where={"k": "a"})) == 1
    assert [r["k"] for r in rows] == ["b"]


def test_write_ops_survive_json():
    """A write op round-trips through the spool's JSON encoding with types."""
    when = datetime.datetime(2024, 5, 1, 12, 30, 15, 250000)
    op = WriteOp(7, "update", "location", {"expires": when, "path": b"\x00\xff"},
                 where={"ruid": ["a", "b"], "q": Q.lt(0.5)})
    back = WriteOp.from_json(op.to_json())
    assert (back.seq, back.kind, back.table) == (7, "update", "location")
    assert back.row == {"expires": when, "path": b"\x00\xff"}
    assert back.where == {"ruid": ["a", "b"], "q": Q.lt(0.5)}
    assert back.spooled
    assert decode(encode(None)) is None
