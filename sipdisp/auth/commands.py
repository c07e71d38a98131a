"""``sipdisp user add|rm|list``: subscribers in the configured database
(kamctl's ``add``/``rm``), the embedded SQLite default included.

    sipdisp user add alice@example.com PASSWORD [-c etc/sipdisp.yaml] [--url URL]
    sipdisp user rm alice@example.com
    sipdisp user list [example.com]

The database is ``storage.url`` of the configuration file (``-c``, default
``etc/sipdisp.yaml``; the built-in defaults if that file does not exist) or
``--url``. On SQLite, missing tables are created first; on PostgreSQL and
MySQL run ``sipdisp db init`` once.
"""

import os
import sys

from twisted.internet import defer

from ..commands import run_async
from ..config import ConfigError

DEFAULT_CONFIG = "etc/sipdisp.yaml"


def register(subparsers):
    """Add the ``user`` command group to the sipdisp command line."""
    user = subparsers.add_parser(
        "user", help="add, remove or list subscribers (digest credentials)",
        description="Subscribers of the subscriber table (Kamailio's kamctl add/rm), "
                    "in the database of the configuration's storage.url.")
    actions = user.add_subparsers(dest="user_action", metavar="ACTION")
    actions.required = True

    def common(p):
        p.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                       help="configuration file whose storage.url is used (default %(default)s)")
        p.add_argument("--url", help="database URL instead of the configuration's")

    p = actions.add_parser("add", help="add a subscriber, or change her password")
    p.add_argument("user", help="user@domain")
    p.add_argument("password")
    p.add_argument("--no-plaintext", action="store_true",
                   help="store only ha1/ha1b, not the password (needs auth.calculate_ha1: false)")
    common(p)
    p.set_defaults(func=lambda a: run_async(_add, a.user, a.password, not a.no_plaintext,
                                            _url(a)))

    p = actions.add_parser("rm", help="remove a subscriber")
    p.add_argument("user", help="user@domain")
    common(p)
    p.set_defaults(func=lambda a: run_async(_rm, a.user, _url(a)))

    p = actions.add_parser("list", help="list subscribers (user@domain)")
    p.add_argument("domain", nargs="?", help="only this domain")
    common(p)
    p.set_defaults(func=lambda a: run_async(_list, a.domain, _url(a)))


def _url(args):
    if args.url:
        return args.url
    # the default file may be absent (the built-in defaults); a file named with -c may not
    path = args.config if os.path.exists(args.config) or args.config != DEFAULT_CONFIG else None
    try:
        return args.load_config(path).storage.url
    except ConfigError as exc:
        raise SystemExit(f"sipdisp user: {args.config}: {exc}")


@defer.inlineCallbacks
def _open(reactor, url, out):
    from sipdisp.storage import open_storage
    from sipdisp.storage.admin import init_schema
    from sipdisp.storage.core import CONNECTED

    storage = open_storage(url, reactor=reactor, ping_interval=0, stop_timeout=5)
    yield storage.start()
    if storage.state != CONNECTED:
        yield storage.stop()
        out.write(f"sipdisp user: cannot connect to {storage.url}: {storage.last_error}\n")
        return None
    if storage.dialect == "sqlite":
        yield init_schema(storage)
    live = yield storage.describe("subscriber")
    if live is None:
        yield storage.stop()
        out.write(f"sipdisp user: {storage.url} has no subscriber table; "
                  "run 'sipdisp db init URL' first\n")
        return None
    return storage


@defer.inlineCallbacks
def _with_storage(reactor, url, out, action):
    from .subscribers import Subscribers

    storage = yield _open(reactor, url, out)
    if storage is None:
        return 1
    try:
        code = yield action(Subscribers(storage, use_domain=True))
        yield storage.flushed(10)
    finally:
        yield storage.stop()
    return code


def _parse(user, out):
    from .subscribers import split_user
    try:
        return split_user(user)
    except ValueError as exc:
        out.write(f"sipdisp user: {exc}\n")
        return None


def _add(reactor, user, password, plaintext, url, out=None):
    out = out or sys.stdout
    parsed = _parse(user, out)
    if parsed is None:
        return defer.succeed(2)
    if not password:
        out.write("sipdisp user: the password must not be empty\n")
        return defer.succeed(2)
    username, domain = parsed

    @defer.inlineCallbacks
    def action(subs):
        new = yield subs.add(username, domain, password, plaintext)
        out.write(f"{'added' if new else 'updated'} {username}@{domain}\n")
        return 0
    return _with_storage(reactor, url, out, action)


def _rm(reactor, user, url, out=None):
    out = out or sys.stdout
    parsed = _parse(user, out)
    if parsed is None:
        return defer.succeed(2)
    username, domain = parsed

    @defer.inlineCallbacks
    def action(subs):
        n = yield subs.remove(username, domain)
        if not n:
            out.write(f"no subscriber {username}@{domain}\n")
            return 1
        out.write(f"removed {username}@{domain}\n")
        return 0
    return _with_storage(reactor, url, out, action)


def _list(reactor, domain, url, out=None):
    out = out or sys.stdout

    @defer.inlineCallbacks
    def action(subs):
        rows = yield subs.list(domain)
        for row in rows:
            out.write(f"{row['username']}@{row['domain']}\n")
        return 0
    return _with_storage(reactor, url, out, action)
