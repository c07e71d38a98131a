"""
The ``sipdisp`` command line: ``sipdisp GROUP ACTION ...``.

Subsystems add their own command groups without touching this file: any
module ``sipdisp.<package>.commands`` defining ``register(subparsers)`` is
found and asked to add its parsers (``sipdisp.storage.commands`` adds
``sipdisp db init|check|ddl``). A parser's ``func(args)`` returns the exit
code; asynchronous commands use :func:`sipdisp.commands.run_async`, which
drives Twisted code from the command line with ``twisted.internet.task.react``.

A command that reads the configuration file calls ``args.load_config(path)``
(:func:`load_config`: the whole schema's loader, handed down so that no
subsystem imports the top layer that assembles the schema).
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


def load_config(path=None):
    """The sipdisp configuration in the file at ``path``, or the defaults when
    ``path`` is None; raises ``ConfigError``."""
    # imported on first use: ``sipdisp db`` needs no subsystem, and one that
    # fails to import must not take down the commands of the others
    from .schema import config_from_dict
    from .schema import load_config as load_file

    return config_from_dict({}) if path is None else load_file(path)


def build_parser():
    """The argument parser with every registered command group."""
    parser = argparse.ArgumentParser(
        prog="sipdisp", description="sipdisp SIP proxy: management commands.")
    parser.set_defaults(load_config=load_config)
    groups = parser.add_subparsers(dest="group", metavar="COMMAND")
    for module in command_modules():
        module.register(groups)
    return parser


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
