"""One registry of management commands (``module.verb``, Kamailio's names),
shared by every front-end: the Manhole console, JSON-RPC over HTTP and the
``sipdisp-ctl`` CLI.

Subsystems register plain functions; the signature's annotations give the
argument types and the docstring's first line the help text::

    registry = CommandRegistry()

    @registry.command("dispatcher.reload")
    def reload() -> dict:
        "Re-read the destination sets, keeping runtime state."

Command-line groups (``sipdisp db``, ``sipdisp user``) that run Twisted
code drive it with :func:`run_async`.
"""

import inspect

from twisted.internet import task
from twisted.internet.defer import maybeDeferred


class CommandError(Exception):
    """A command was called wrongly (unknown name, bad or missing argument)."""


class Command:
    """One registered command: name, function, help text and typed parameters."""

    __slots__ = ("name", "func", "help", "params")

    def __init__(self, name, func, help=None):
        self.name = name
        self.func = func
        doc = inspect.getdoc(func) or ""
        self.help = help or (doc.splitlines()[0] if doc else name)
        self.params = []
        for param in inspect.signature(func).parameters.values():
            kind = param.annotation if param.annotation is not inspect.Parameter.empty else str
            required = param.default is inspect.Parameter.empty
            self.params.append((param.name, kind, required, None if required else param.default))

    def bind(self, args=(), kwargs=None):
        """Convert positional/keyword arguments (strings from a CLI are fine) to the declared types."""
        kwargs = dict(kwargs or {})
        names = [p[0] for p in self.params]
        if len(args) > len(names):
            raise CommandError(f"{self.name}: takes at most {len(names)} arguments")
        for name, value in zip(names, args):
            if name in kwargs:
                raise CommandError(f"{self.name}: argument {name!r} given twice")
            kwargs[name] = value
        out = {}
        for name, kind, required, default in self.params:
            if name not in kwargs:
                if required:
                    raise CommandError(f"{self.name}: missing argument {name!r}")
                continue
            out[name] = _convert(self.name, name, kind, kwargs.pop(name))
        if kwargs:
            raise CommandError(f"{self.name}: unknown argument(s) {', '.join(sorted(kwargs))}")
        return out

    def describe(self):
        """A JSON-friendly description (for ``system.listMethods``-style help)."""
        return {"name": self.name, "help": self.help,
                "params": [{"name": n, "type": getattr(k, "__name__", str(k)),
                            "required": r, "default": d} for n, k, r, d in self.params]}


def _convert(command, name, kind, value):
    if kind in (str, int, float) and not isinstance(value, kind):
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise CommandError(f"{command}: argument {name!r} must be {kind.__name__}, "
                               f"got {value!r}") from None
    if kind is bool and isinstance(value, str):
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise CommandError(f"{command}: argument {name!r} must be a boolean, got {value!r}")
    return value


class CommandRegistry:
    """Commands by name."""

    def __init__(self):
        self._commands = {}

    def command(self, name, help=None):
        """Decorator registering ``func`` as command ``name``."""
        def decorate(func):
            self.register(name, func, help)
            return func
        return decorate

    def register(self, name, func, help=None):
        """Register ``func`` under ``name`` (``module.verb``); re-registering replaces it."""
        if "." not in name:
            raise ValueError(f"command names are module.verb, got {name!r}")
        self._commands[name] = Command(name, func, help)

    def get(self, name):
        """The Command called ``name``; CommandError if unknown."""
        try:
            return self._commands[name]
        except KeyError:
            raise CommandError(f"unknown command {name!r}") from None

    def call(self, name, *args, **kwargs):
        """Run a command; always returns a Deferred with its result."""
        command = self.get(name)
        bound = command.bind(args, kwargs)
        return maybeDeferred(command.func, **bound)

    def names(self):
        """Every registered command name, sorted."""
        return sorted(self._commands)

    def __iter__(self):
        return iter(self._commands[n] for n in self.names())

    def __contains__(self, name):
        return name in self._commands

    def __len__(self):
        return len(self._commands)


def run_async(function, *args):
    """Run ``function(reactor, *args)`` (returning a Deferred that fires with
    an exit code) under ``task.react``; return the exit code."""
    def start(reactor):
        d = maybeDeferred(function, reactor, *args)

        def finish(code):
            if code:
                raise SystemExit(code)
        return d.addCallback(finish)

    try:
        task.react(start)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0
