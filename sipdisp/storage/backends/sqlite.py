"""
``sqlite:///path.db``: the embedded default, through adbapi with ONE thread.

One thread, because SQLite serialises writers anyway and because a shared
``:memory:`` database would otherwise be a different empty database in each
pool thread. Options: ``?timeout=SECONDS`` (busy timeout, default 5).
"""

import datetime
import os
import re
import sqlite3

from ..base import type_family
from ._adbapi import AdbapiBackend, QuietConnectionPool

_TRANSIENT = ("locked", "busy", "disk i/o", "unable to open")


def _adapt_datetime(value):
    return value.isoformat(" ")


def _convert_datetime(raw):
    text = raw.decode("utf-8", "replace")
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return text


# Kamailio's SQLite schema declares TIMESTAMP WITHOUT TIME ZONE and stores
# 'YYYY-MM-DD HH:MM:SS' text; give sipdisp datetimes back (and avoid the
# default adapters, deprecated since Python 3.12).
sqlite3.register_adapter(datetime.datetime, _adapt_datetime)
sqlite3.register_converter("TIMESTAMP", _convert_datetime)
sqlite3.register_converter("DATETIME", _convert_datetime)


class SQLiteBackend(AdbapiBackend):
    """SQLite file (or ``:memory:``) through a one-thread adbapi pool."""

    dialect = "sqlite"

    def _make_pool(self):
        path = self.url.database
        if path != ":memory:":
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)

        def setup(conn):
            if path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")

        return QuietConnectionPool(
            "sqlite3", path, timeout=float(self.url.params.get("timeout", 5)),
            detect_types=sqlite3.PARSE_DECLTYPES, check_same_thread=False,
            cp_min=1, cp_max=1, cp_openfun=setup, cp_noisy=False,
            cp_reactor=self._reactor)

    def describe(self, table):
        d = self.run_query("PRAGMA table_info(%s)" % self.sql.q(table))

        def parse(rows):
            if not rows:
                return None
            out = {}
            for _cid, name, declared, *_ in rows:
                m = re.search(r"\((\d+)", declared or "")
                family = type_family(declared)
                out[name] = (family, int(m.group(1)) if m and family == "string"
                             else None)
            return out
        return d.addCallback(parse)

    def is_transient(self, failure):
        err = failure.check(sqlite3.OperationalError)
        if err is None:
            return False
        text = str(failure.value).lower()
        return any(word in text for word in _TRANSIENT)
