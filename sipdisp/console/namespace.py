"""The Manhole's namespace: live objects with readable reprs, and every
registered command as a function (``dispatcher.list()``, ``core.version()``).

Nothing here touches SSH or the reactor; ``build_namespace(root)`` is called
once per console session, so modules registered after start-up show up in
the next session.
"""

import inspect
import pprint
import pydoc

from twisted.python.failure import Failure

from .. import __version__

#: live objects taken from ``root.modules``: namespace name -> its slot there
MODULE_OBJECTS = {"dispatcher": "dispatcher", "registrations": "usrloc", "dialogs": "dialogs"}

#: command modules whose namespace also shows (and falls back to) a live object
COMMAND_TARGETS = {"core": "proxy", "tm": "transactions", "ul": "registrations",
                   "dlg": "dialogs", "stats": "stats", "dispatcher": "dispatcher"}

_MAX_ROWS = 50


def settle(d):
    """The result of ``d`` if it has already fired (raising its failure), else ``d``
    itself, which the console shows when it fires."""
    box = []

    def grab(result):
        box.append(result)
        return result

    d.addBoth(grab)
    if not box:
        return d
    result = box[0]
    if isinstance(result, Failure):
        d.addErrback(lambda _: None)  # reported here, not as "Unhandled error"
        result.raiseException()
    return result


def _signature(command):
    parts = []
    for name, kind, required, default in command.params:
        text = f"{name}: {getattr(kind, '__name__', kind)}"
        parts.append(text if required else f"{text} = {default!r}")
    return f"{command.name}({', '.join(parts)})"


class CommandFunction:
    """One registered command as a console function; calling it runs the
    command and returns its result (or a Deferred the console shows later)."""

    def __init__(self, registry, command):
        self._registry = registry
        self._command = command
        doc = inspect.getdoc(command.func) or command.help
        self.__doc__ = f"{_signature(command)}\n\n{doc}"

    @property
    def name(self):
        """The command's ``module.verb`` name."""
        return self._command.name

    def __call__(self, *args, **kwargs):
        return settle(self._registry.call(self._command.name, *args, **kwargs))

    def __repr__(self):
        return f"<command {_signature(self._command)}: {self._command.help}>"


class CommandNamespace:
    """The commands of one module as attributes (``dispatcher.list``), laid
    over the module's live object, if any: other attributes come from it."""

    def __init__(self, name, target=None):
        self._name = name
        self._children = {}
        self._target = target

    def _add(self, verb, value):
        self._children[verb] = value

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        children = self.__dict__.get("_children", {})
        if attr in children:
            return children[attr]
        target = self.__dict__.get("_target")
        if target is not None:
            return getattr(target, attr)
        raise AttributeError(f"{self._name} has no command or attribute {attr!r}")

    def __dir__(self):
        names = set(self._children)
        if self._target is not None:
            names.update(n for n in dir(self._target) if not n.startswith("_"))
        return sorted(names)

    def _live(self):
        if self._target is None:
            raise TypeError(f"{self._name} holds only commands")
        return self._target

    def __getitem__(self, key):
        return self._live()[key]

    def __iter__(self):
        return iter(self._live())

    def __len__(self):
        return len(self._live())

    def __bool__(self):
        return True

    def commands(self):
        """The CommandFunctions below this namespace, sorted by name."""
        out = []
        for verb in sorted(self._children):
            child = self._children[verb]
            out.extend(child.commands() if isinstance(child, CommandNamespace) else [child])
        return out

    def __repr__(self):
        listing = ", ".join(f"{c.name}()" for c in self.commands())
        if self._target is not None:
            return f"{self._target!r}\n(commands: {listing})"
        return f"<{self._name} commands: {listing}>"


class LiveView:
    """A live object with a summary repr; every attribute comes from the object."""

    def __init__(self, obj):
        self._obj = obj

    def __getattr__(self, attr):
        if attr.startswith("__") or attr == "_obj":
            raise AttributeError(attr)
        return getattr(self._obj, attr)

    def __dir__(self):
        return [n for n in dir(self._obj) if not n.startswith("_")]


class ProxyView(LiveView):
    """The proxy core (``proxy.stats``, ``proxy.layer``, ``proxy.listeners`` ...)."""

    def __init__(self, core, switchboard=None):
        super().__init__(core)
        self._switchboard = switchboard

    def __repr__(self):
        core = self._obj
        listeners = ", ".join(f"{lst.proto}:{lst.host}:{lst.port}" for lst in core.listeners)
        conns = "?" if self._switchboard is None else len(self._switchboard.connections)
        return (f"<proxy sipdisp {__version__}: listening on {listeners or 'nothing'}; "
                f"{len(core.layer.servers)} server / {len(core.layer.clients)} client "
                f"transactions; {conns} connections>")


class TransactionsView(LiveView):
    """The transaction layer; its repr is the table of live transactions."""

    def rows(self):
        """One dict per live transaction: kind, method, state, call_id."""
        layer = self._obj
        out = [{"kind": "server", "method": t.method, "state": t.state,
                "call_id": t.call_id} for t in list(layer.servers.values())]
        out += [{"kind": "client", "method": t.method, "state": t.state,
                 "call_id": t.call_id} for t in list(layer.clients.values())]
        return out

    def __len__(self):
        return len(self._obj.servers) + len(self._obj.clients)

    def __iter__(self):
        return iter(self.rows())

    def __repr__(self):
        rows = self.rows()
        layer = self._obj
        lines = [f"<transactions: {len(layer.servers)} server, {len(layer.clients)} client>"]
        for row in rows[:_MAX_ROWS]:
            lines.append(f"  {row['kind']:6} {row['method']:9} {str(row['state']):12} "
                         f"{row['call_id']}")
        if len(rows) > _MAX_ROWS:
            lines.append(f"  ... {len(rows) - _MAX_ROWS} more")
        return "\n".join(lines)


def stat_name(key):
    """A core counter key as text: ``"rcv_requests"``, ``("rcv_request", "INVITE")`` ->
    ``"rcv_request:INVITE"``."""
    if isinstance(key, tuple):
        return ":".join(str(part) for part in key)
    return str(key)


class StatsView(LiveView):
    """The core's counters (a Counter); its repr is one counter per line."""

    def __repr__(self):
        items = sorted((stat_name(k), v) for k, v in self._obj.items())
        if not items:
            return "<stats: no counters yet>"
        width = max(len(k) for k, _ in items)
        return "\n".join(f"{k:{width}}  {v}" for k, v in items)

    def __getitem__(self, key):
        return self._obj[key]

    def __iter__(self):
        return iter(self._obj)

    def __len__(self):
        return len(self._obj)


class ConfigView(LiveView):
    """The loaded configuration (read-only); its repr is pretty-printed."""

    def __repr__(self):
        return pprint.pformat(self._obj.as_dict(), sort_dicts=False, width=100)


def module_object(root, name):
    """The live object of ``root.modules`` shown as ``name`` (None if absent)."""
    return getattr(root.modules, MODULE_OBJECTS.get(name, name), None)


def make_help(namespace):
    """A ``help`` for the console: builtin help() would read the server's stdin."""

    def help(obj=None):
        """help() lists the objects and commands; help(x) shows x's documentation."""
        if obj is None:
            print(_overview(namespace))
        elif isinstance(obj, CommandNamespace):
            print("\n".join(f"{c.name}(): {c._command.help}" for c in obj.commands())
                  or f"{obj._name}: no commands")
        elif isinstance(obj, CommandFunction):
            print(obj.__doc__)
        else:
            print(pydoc.render_doc(obj, renderer=pydoc.plaintext))

    return help


def _overview(namespace):
    lines = ["Objects:"]
    for name in sorted(namespace):
        value = namespace[name]
        if name.startswith("_") or name == "help" or isinstance(value, CommandNamespace) \
                and value._target is None:
            continue
        summary = (repr(value).splitlines() or [""])[0]
        lines.append(f"  {name:14} {summary[:90]}")
    lines.append("Commands (call them, e.g. core.version(); help(x) for details):")
    for value in sorted((v for v in namespace.values() if isinstance(v, CommandNamespace)),
                        key=lambda v: v._name):
        for command in value.commands():
            lines.append(f"  {command.name + '()':28} {command._command.help}")
    return "\n".join(lines)


def build_namespace(root):
    """The console namespace for the service tree ``root``: live objects and commands."""
    ns = {
        "root": root,
        "registry": root.registry,
        "modules": root.modules,
        "config": ConfigView(root.cfg),
    }
    sip = getattr(root, "sip", None)
    if sip is not None:  # the supervisor of worker processes runs no core
        core = sip.core
        ns["proxy"] = ProxyView(core, getattr(sip, "switchboard", None))
        ns["transactions"] = TransactionsView(core.layer)
        ns["stats"] = StatsView(core.stats)
    for name in MODULE_OBJECTS:
        ns[name] = module_object(root, name)
    for command in root.registry:
        parts = command.name.split(".")
        top = parts[0]
        space = ns.get(top)
        if not isinstance(space, CommandNamespace):
            target = ns.get(COMMAND_TARGETS.get(top, top))
            if isinstance(target, CommandNamespace):
                target = target._target
            space = CommandNamespace(top, target)
            ns[top] = space
        for i, part in enumerate(parts[1:-1], 1):
            child = space._children.get(part)
            if not isinstance(child, CommandNamespace):
                child = CommandNamespace(".".join(parts[:i + 1]))
                space._add(part, child)
            space = child
        space._add(parts[-1], CommandFunction(root.registry, command))
    ns["help"] = make_help(ns)
    return ns
