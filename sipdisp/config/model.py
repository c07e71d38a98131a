"""
The configuration engine: value types, keys, sections, the schema and the
validated L{Config}.

Nothing here knows about any particular key: each package declares its own
sections in its C{settings} module, and L{sipdisp.schema} assembles them.
Every failure is a L{ConfigError} whose C{str()} is one line:
C{"<dotted.key>: <what is wrong>"}.
"""

import difflib
import ipaddress
import json
import math
import re


class ConfigError(ValueError):
    """
    A configuration problem, located by a dotted key path (or C{file:line}).

    C{str(error)} is always one line: C{"where: problem"}.
    """

    def __init__(self, where, problem):
        self.where = where
        self.problem = problem
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", f"{where}: {problem}"))

    def __str__(self):
        return self.args[0]


def show(value):
    """Render a configuration value for an error message, on one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _bounds(minimum, maximum, above):
    """Describe numeric bounds for the docs: C{"1..255"}, C{">= 1"}, C{"> 0"}."""
    if minimum is not None and maximum is not None:
        return f"{minimum}..{maximum}"
    parts = []
    if above is not None:
        parts.append(f"> {above}")
    if minimum is not None:
        parts.append(f">= {minimum}")
    if maximum is not None:
        parts.append(f"<= {maximum}")
    return ", ".join(parts)


def _check_bounds(value, where, minimum, maximum, above=None):
    if above is not None and not value > above:
        raise ConfigError(where, f"must be > {above}, got {show(value)}")
    if minimum is not None and value < minimum:
        raise ConfigError(where, f"must be >= {minimum}, got {show(value)}")
    if maximum is not None and value > maximum:
        raise ConfigError(where, f"must be <= {maximum}, got {show(value)}")


# -- value types ---------------------------------------------------------
#
# A type has parse(value, where) -> python value (or raises ConfigError) and
# describe() -> the phrase used in the docs and in "expected ..." messages.


class Type:
    """Base class of configuration value types."""

    #: phrase for C{"expected <expected>, got ..."}
    expected = "a value"

    # Subclasses define parse(value, where) -> Python value, raising
    # ConfigError, and describe() -> the short name shown in the docs.

    def wrong(self, value, where):
        """The error for a value of the wrong kind."""
        return _WrongKind(where, f"expected {self.expected}, got {show(value)}")


class _WrongKind(ConfigError):
    """A value of the wrong kind altogether (so L{Nullable} can say "or null")."""


class Str(Type):
    """Any string."""

    expected = "a string"

    def parse(self, value, where):
        if not isinstance(value, str):
            raise self.wrong(value, where)
        return value

    def describe(self):
        return "string"


class Int(Type):
    """An integer with optional inclusive bounds."""

    expected = "an integer"

    def __init__(self, min=None, max=None):
        self.min = min
        self.max = max

    def parse(self, value, where):
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.wrong(value, where)
        _check_bounds(value, where, self.min, self.max)
        return value

    def describe(self):
        bounds = _bounds(self.min, self.max, None)
        return f"int ({bounds})" if bounds else "int"


class Seconds(Type):
    """
    A duration in seconds, int or float in the file, always a float in the
    config.  C{positive=True} means strictly greater than zero.
    """

    expected = "a number of seconds"

    def __init__(self, min=None, max=None, positive=False):
        self.min = min
        self.max = max
        self.above = 0 if positive else None

    def parse(self, value, where):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.wrong(value, where)
        if not math.isfinite(value):
            raise ConfigError(where, f"must be a finite number of seconds, got {show(value)}")
        _check_bounds(value, where, self.min, self.max, self.above)
        return float(value)

    def describe(self):
        bounds = _bounds(self.min, self.max, self.above)
        return f"seconds ({bounds})" if bounds else "seconds"


class Bool(Type):
    """C{true} or C{false}."""

    expected = "true or false"

    def parse(self, value, where):
        if not isinstance(value, bool):
            raise self.wrong(value, where)
        return value

    def describe(self):
        return "bool"


class Enum(Type):
    """One string out of a fixed list of choices."""

    def __init__(self, *choices):
        if not choices or not all(isinstance(c, str) for c in choices):
            raise TypeError("Enum needs one or more string choices")
        self.choices = choices

    def parse(self, value, where):
        if value not in self.choices or not isinstance(value, str):
            raise ConfigError(where, f"{show(value)} is not one of {', '.join(self.choices)}")
        return value

    def describe(self):
        return "one of " + ", ".join(self.choices)


class Path(Type):
    """A filesystem path, kept as the string written (relative to the working directory)."""

    expected = "a path"

    def parse(self, value, where):
        if not isinstance(value, str) or not value:
            raise self.wrong(value, where)
        return value

    def describe(self):
        return "path"


_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?\Z")


class HostPort(Type):
    """
    C{"host:port"} parsed to a C{(host, port)} tuple.  IPv6 hosts are written
    in brackets, C{"[::1]:5060"}, and returned without them.  Port 0 means
    "any free port" (useful for tests).  A C{(host, port)} tuple is accepted
    as is, so that C{config_from_dict(cfg.as_dict())} round-trips.
    """

    expected = '"host:port"'

    def parse(self, value, where):
        if isinstance(value, tuple) and len(value) == 2:
            value = f"[{value[0]}]:{value[1]}" if ":" in str(value[0]) else f"{value[0]}:{value[1]}"
        if not isinstance(value, str):
            raise self.wrong(value, where)
        host, sep, port = value.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            try:
                ok = ipaddress.ip_address(host).version == 6
            except ValueError:
                ok = False
        elif ":" in host:
            raise ConfigError(where, f'{show(value)} is not host:port (write IPv6 as "[::1]:5060")')
        else:
            ok = bool(_HOSTNAME.match(host))
        if not (sep and ok and port.isdigit() and port.isascii()):
            raise ConfigError(where, f"{show(value)} is not host:port")
        if int(port) > 65535:
            raise ConfigError(where, f"{show(value)}: port must be 0..65535")
        return (host, int(port))

    def describe(self):
        return "host:port"


class SipUri(Type):
    """A SIP URI, kept as a string; it must start with C{sip:} or C{sips:}."""

    expected = "a SIP URI"

    def parse(self, value, where):
        if not isinstance(value, str):
            raise self.wrong(value, where)
        scheme, sep, rest = value.partition(":")
        if not (sep and rest and scheme.lower() in ("sip", "sips")):
            raise ConfigError(where, f"{show(value)} is not a SIP URI (must start with sip: or sips:)")
        return value

    def describe(self):
        return "SIP URI"


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S")


class Url(Type):
    """A URL (C{scheme:...}), kept as a string; the consumer interprets the scheme."""

    expected = "a URL"

    def parse(self, value, where):
        if not isinstance(value, str):
            raise self.wrong(value, where)
        if not _SCHEME.match(value) or any(c.isspace() for c in value):
            raise ConfigError(where, f"{show(value)} is not a URL (scheme:...)")
        return value

    def describe(self):
        return "URL"


class ListOf(Type):
    """A YAML list whose items all have one type; errors name the index, C{key[2]}."""

    def __init__(self, item):
        self.item = item
        self.expected = f"a list of {item.describe()}"

    def parse(self, value, where):
        if not isinstance(value, (list, tuple)):
            raise self.wrong(value, where)
        return [self.item.parse(v, f"{where}[{i}]") for i, v in enumerate(value)]

    def describe(self):
        return f"list of {self.item.describe()}"


class Nullable(Type):
    """The inner type, or C{null}."""

    def __init__(self, inner):
        self.inner = inner
        self.expected = f"{inner.expected} or null"

    def parse(self, value, where):
        if value is None:
            return None
        try:
            return self.inner.parse(value, where)
        except _WrongKind as e:
            if e.where != where:
                raise
            raise self.wrong(value, where) from None

    def describe(self):
        return f"{self.inner.describe()} or null"


# -- schema structure ----------------------------------------------------


_RESERVED = {"as_dict"}


def _check_name(name):
    if not (isinstance(name, str) and name.isidentifier() and not name.startswith("_")):
        raise TypeError(f"config name {name!r} must be a Python identifier")
    if name in _RESERVED:
        raise TypeError(f"config name {name!r} is reserved")


def _sentence(doc, what):
    if not isinstance(doc, str) or not doc.strip():
        raise TypeError(f"{what} needs a one-sentence doc")
    return " ".join(doc.split())


class Key:
    """
    One configuration key: name, type, default (as written in YAML) and a
    one-sentence doc.  The default is validated against the type when the key
    is declared, so a bad default fails at import time.
    """

    def __init__(self, name, type, default, doc):
        _check_name(name)
        self.name = name
        self.type = type
        self.default = default
        self.doc = _sentence(doc, f"key {name!r}")
        type.parse(default, f"(default of {name})")

    def parse(self, raw, where):
        return self.type.parse(raw, where)


class Section:
    """A named mapping of keys and sub-sections."""

    def __init__(self, name, doc, *children):
        if name:
            _check_name(name)
        self.name = name
        self.doc = _sentence(doc, f"section {name!r}") if name else doc
        self.children = {}
        for child in children:
            self.add(child)

    def add(self, child):
        """Add a L{Key} or L{Section}; names must be unique within a section."""
        if not isinstance(child, (Key, Section)):
            raise TypeError(f"{child!r} is neither a Key nor a Section")
        if child.name in self.children:
            raise TypeError(f"{self.name or 'config'}: {child.name!r} declared twice")
        self.children[child.name] = child
        return child

    def keys(self, prefix=""):
        """Yield C{(dotted_name, Key)} for every key, depth first, in declaration order."""
        for child in self.children.values():
            name = prefix + child.name
            if isinstance(child, Section):
                yield from child.keys(name + ".")
            else:
                yield name, child

    def sections(self, prefix=""):
        """Yield C{(dotted_name, Section)} for this section's sub-sections, depth first."""
        for child in self.children.values():
            if isinstance(child, Section):
                name = prefix + child.name
                yield name, child
                yield from child.sections(name + ".")

    def parse(self, raw, where):
        """Validate a mapping against this section and return a L{Config}."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(where or "config", f"expected a mapping, got {show(raw)}")
        prefix = where + "." if where else ""
        for name in raw:
            if name not in self.children:
                near = difflib.get_close_matches(str(name), list(self.children), n=1)
                hint = f" (did you mean {near[0]}?)" if near else ""
                raise ConfigError(f"{prefix}{name}", f"unknown key{hint}")
        values = {}
        for name, child in self.children.items():
            if isinstance(child, Section):
                values[name] = child.parse(raw.get(name), prefix + name)
            else:
                values[name] = child.parse(raw.get(name, child.default), prefix + name)
        return Config(values, where)


class Schema:
    """
    The whole configuration: top-level sections plus cross-key checks.

    Sections are declared with L{section} or added with L{add}; a check is a
    function C{check(cfg)} that raises L{ConfigError} naming the key at fault,
    added with L{check} (or with its section by L{add}).
    """

    def __init__(self):
        self.root = Section("", "")
        self.checks = []

    def section(self, name, doc, *children):
        """Declare a top-level section of keys and sub-sections; return it."""
        return self.root.add(Section(name, doc, *children))

    def add(self, section, *checks):
        """Add a L{Section} declared elsewhere as a top-level section, then its checks."""
        self.root.add(section)
        for check in checks:
            self.check(check)
        return section

    def check(self, function):
        """Register a cross-key check (usable as a decorator); its docstring documents the rule."""
        _sentence(function.__doc__, f"check {function.__name__}")
        self.checks.append(function)
        return function

    def keys(self):
        """Yield C{(dotted_name, Key)} for every key in the schema."""
        return self.root.keys()

    def validate(self, raw):
        """Validate a mapping (as loaded from YAML) and return a L{Config}."""
        cfg = self.root.parse(raw, "")
        for check in self.checks:
            check(cfg)
        return cfg


# -- the validated configuration -----------------------------------------


class Config:
    """
    Validated, read-only configuration with attribute access:
    C{cfg.listen.udp} is a list of C{(host, port)}, C{cfg.sip.t1} a float.
    """

    __slots__ = ("_values", "_where")

    def __init__(self, values, where=""):
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_where", where)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            prefix = self._where + "." if self._where else ""
            raise AttributeError(f"no configuration key {prefix}{name}") from None

    def __setattr__(self, name, value):
        raise AttributeError("configuration is read-only")

    def __reduce__(self):
        return (Config, (self._values, self._where))

    def __dir__(self):
        return list(self._values) + ["as_dict"]

    def __eq__(self, other):
        return isinstance(other, Config) and self.as_dict() == other.as_dict()

    def __repr__(self):
        return f"Config({self.as_dict()!r})"

    def as_dict(self):
        """Return the parsed values as nested plain dicts (host:port values as tuples)."""
        out = {}
        for name, value in self._values.items():
            if isinstance(value, Config):
                value = value.as_dict()
            elif isinstance(value, list):
                value = list(value)
            out[name] = value
        return out
