"""``sipdisp alias add|rm|list``: aliases in the configured database
(kamctl's ``alias_db add|rm|list``), the embedded SQLite default included.

    sipdisp alias add 1000@example.com alice@example.com [-c etc/sipdisp.yaml] [--url URL]
    sipdisp alias rm 1000@example.com
    sipdisp alias list [alice@example.com]

The database is ``storage.url`` of the configuration file (``-c``, default
``etc/sipdisp.yaml``; the built-in defaults if that file does not exist) or
``--url``, the table ``aliases.table``. On SQLite, missing tables are
created first; on PostgreSQL and MySQL run ``sipdisp db init`` once.
"""

import os
import sys

from twisted.internet import defer

from ..commands import run_async
from ..config import ConfigError

DEFAULT_CONFIG = "etc/sipdisp.yaml"


def register(subparsers):
    """Add the ``alias`` command group to the sipdisp command line."""
    alias = subparsers.add_parser(
        "alias", help="add, remove or list aliases (the dbaliases table)",
        description="Aliases of the dbaliases table (alias_db; kamctl alias_db add/rm/list), "
                    "in the database of the configuration's storage.url.")
    actions = alias.add_subparsers(dest="alias_action", metavar="ACTION")
    actions.required = True

    def common(p):
        p.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                       help="configuration file whose storage.url and aliases.table are used "
                            "(default %(default)s)")
        p.add_argument("--url", help="database URL instead of the configuration's")

    p = actions.add_parser("add", help="point an alias at a user (replacing its target)")
    p.add_argument("alias", help="alias@domain (the number or name callers dial)")
    p.add_argument("target", help="user@domain the alias reaches")
    common(p)
    p.set_defaults(func=lambda a: run_async(_add, a.alias, a.target, *_where(a)))

    p = actions.add_parser("rm", help="remove an alias")
    p.add_argument("alias", help="alias@domain")
    common(p)
    p.set_defaults(func=lambda a: run_async(_rm, a.alias, *_where(a)))

    p = actions.add_parser("list", help="list aliases (alias -> user@domain)")
    p.add_argument("target", nargs="?", help="only the aliases of this user@domain")
    common(p)
    p.set_defaults(func=lambda a: run_async(_list, a.target, *_where(a)))


def _where(args):
    """``(url, table)`` from ``--url`` and the configuration file."""
    # the default file may be absent (the built-in defaults); a file named with -c may not
    path = args.config if os.path.exists(args.config) or args.config != DEFAULT_CONFIG else None
    try:
        cfg = args.load_config(path)
    except ConfigError as exc:
        raise SystemExit(f"sipdisp alias: {args.config}: {exc}")
    return args.url or cfg.storage.url, cfg.aliases.table


@defer.inlineCallbacks
def _with_aliases(reactor, url, table, out, action):
    from sipdisp.storage import open_storage
    from sipdisp.storage.admin import init_schema
    from sipdisp.storage.core import CONNECTED

    from .aliases import Aliases

    storage = open_storage(url, reactor=reactor, ping_interval=0, stop_timeout=5)
    yield storage.start()
    try:
        if storage.state != CONNECTED:
            out.write(f"sipdisp alias: cannot connect to {storage.url}: {storage.last_error}\n")
            return 1
        if storage.dialect == "sqlite":
            yield init_schema(storage)
        if (yield storage.describe(table)) is None:
            out.write(f"sipdisp alias: {storage.url} has no {table} table; "
                      "run 'sipdisp db init URL' first\n")
            return 1
        try:
            code = yield action(Aliases(storage, table))
        except ValueError as exc:
            out.write(f"sipdisp alias: {exc}\n")
            return 2
        yield storage.flushed(10)
        return code
    finally:
        yield storage.stop()


def _add(reactor, alias, target, url, table, out=None):
    out = out or sys.stdout

    @defer.inlineCallbacks
    def action(aliases):
        new = yield aliases.add(alias, target)
        out.write(f"{'added' if new else 'updated'} {alias} -> {target}\n")
        return 0
    return _with_aliases(reactor, url, table, out, action)


def _rm(reactor, alias, url, table, out=None):
    out = out or sys.stdout

    @defer.inlineCallbacks
    def action(aliases):
        n = yield aliases.remove(alias)
        if not n:
            out.write(f"no alias {alias}\n")
            return 1
        out.write(f"removed {alias}\n")
        return 0
    return _with_aliases(reactor, url, table, out, action)


def _list(reactor, target, url, table, out=None):
    out = out or sys.stdout

    @defer.inlineCallbacks
    def action(aliases):
        for row in (yield aliases.list(target)):
            out.write(f"{row['alias']} -> {row['target']}\n")
        return 0
    return _with_aliases(reactor, url, table, out, action)
