"""
The ``sipdisp`` command line: ``sipdisp GROUP ACTION ...``.

Subsystems add their own command groups without touching this file: any
module ``sipdisp.<package>.commands`` defining ``register(subparsers)`` is
found and asked to add its parsers (``sipdisp.storage.commands`` adds
``sipdisp db init|check|ddl``). A parser's ``func(args)`` returns the exit
code; asynchronous commands use :func:`run_async`, which drives Twisted
code from the command line with ``twisted.internet.task.react``.
"""

import argparse
import importlib
import importlib.util
import pkgutil
import sys


def command_modules():
    """The ``sipdisp.<package>.commands`` modules, in name order."""
    import sipdisp

    found = []
    for info in sorted(pkgutil.iter_modules(sipdisp.__path__), key=lambda i: i.name):
        if not info.ispkg:
            continue
        name = "sipdisp.%s.commands" % info.name
        try:
            if importlib.util.find_spec(name) is not None:
                found.append(importlib.import_module(name))
        except Exception as exc:  # one broken subsystem must not hide the rest
            sys.stderr.write("sipdisp: cannot load %s: %s\n" % (name, exc))
    return found


def build_parser():
    """The argument parser with every registered command group."""
    parser = argparse.ArgumentParser(
        prog="sipdisp", description="sipdisp SIP proxy: management commands.")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND")
    for module in command_modules():
        module.register(groups)
    return parser


def run_async(function, *args):
    """Run ``function(reactor, *args)`` (returning a Deferred that fires with
    an exit code) under ``task.react``; return the exit code."""
    from twisted.internet import defer, task

    def start(reactor):
        d = defer.maybeDeferred(function, reactor, *args)

        def finish(code):
            if code:
                raise SystemExit(code)
        return d.addCallback(finish)

    try:
        task.react(start)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0


def main(argv=None):
    """Entry point: parse *argv* (default ``sys.argv[1:]``), run, return code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
