"""
``sipdisp db``: ``init URL``, ``check URL`` and ``ddl DIALECT``.
"""

import sys

from twisted.internet import defer

from ..commands import run_async
from . import admin, schema
from .core import CONNECTED


def register(subparsers):
    """Add the ``db`` command group to the sipdisp command line."""
    db = subparsers.add_parser(
        "db", help="create or check the database tables",
        description="Create or check sipdisp's tables (Kamailio 5.x / "
                    "OpenSIPS 3.x compatible) in a database given by URL.")
    actions = db.add_subparsers(dest="db_action", metavar="ACTION")
    actions.required = True

    p = actions.add_parser("init", help="create missing tables, indexes, "
                                        "version rows and columns (idempotent)")
    p.add_argument("url", help="database URL, e.g. postgres://user:pw@host/db")
    p.set_defaults(func=lambda args: run_async(_init, args.url))

    p = actions.add_parser("check", help="report missing tables or columns and "
                                         "other versions; exit 1 if any")
    p.add_argument("url", help="database URL")
    p.set_defaults(func=lambda args: run_async(_check, args.url))

    p = actions.add_parser("ddl", help="print the CREATE statements for a "
                                       "dialect (as in etc/schema/)")
    p.add_argument("dialect", choices=schema.DIALECTS)
    p.set_defaults(func=lambda args: _ddl(args.dialect))


def _ddl(dialect, out=None):
    (out or sys.stdout).write(schema.render_file(dialect))
    return 0


@defer.inlineCallbacks
def _open(reactor, url, out):
    from . import open_storage

    storage = open_storage(url, reactor=reactor, ping_interval=0,
                           stop_timeout=1)
    yield storage.start()
    if storage.state != CONNECTED:
        yield storage.stop()
        out.write("sipdisp db: cannot connect to %s: %s\n" % (
            storage.url, storage.last_error))
        return None
    return storage


@defer.inlineCallbacks
def _init(reactor, url, out=None):
    out = out or sys.stdout
    storage = yield _open(reactor, url, out)
    if storage is None:
        return 1
    try:
        created, added = yield admin.init_schema(storage)
        problems = yield admin.check_schema(storage)
    finally:
        yield storage.stop()
    out.write("created %d table(s)%s\n" % (
        len(created), (": " + ", ".join(created)) if created else ""))
    if added:
        out.write("added column(s): %s\n" % ", ".join(added))
    for problem in problems:
        out.write("still wrong: %s\n" % problem)
    return 1 if problems else 0


@defer.inlineCallbacks
def _check(reactor, url, out=None):
    out = out or sys.stdout
    storage = yield _open(reactor, url, out)
    if storage is None:
        return 1
    try:
        problems = yield admin.check_schema(storage)
    finally:
        yield storage.stop()
    for problem in problems:
        out.write(problem + "\n")
    out.write("%s: %s\n" % (storage.url, "%d problem(s)" % len(problems)
                            if problems else "schema OK"))
    return 1 if problems else 0
