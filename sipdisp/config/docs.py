"""
Generate the configuration reference (Markdown) from a schema; the whole
schema's is written by C{python -m sipdisp.schema > docs/configuration.md}.
"""

import json

from sipdisp.config.model import Section

#: the command that writes docs/configuration.md, named in its header
REGENERATE = "python -m sipdisp.schema > docs/configuration.md"


def _code(text):
    return "`" + text.replace("|", "\\|") + "`"


def _cell(text):
    return text.replace("|", "\\|")


def _default(value):
    """A default as it would be written in YAML (JSON is valid YAML)."""
    return _code(json.dumps(value, ensure_ascii=False))


def _section(lines, dotted, section, level):
    lines += ["", "#" * level + " " + dotted, "", section.doc, ""]
    keys = [(name, child) for name, child in section.children.items() if not isinstance(child, Section)]
    if keys:
        lines += ["| Key | Type | Default | Description |", "|---|---|---|---|"]
        for name, key in keys:
            lines.append(
                f"| {_code(dotted + '.' + name)} | {_cell(key.type.describe())} "
                f"| {_default(key.default)} | {_cell(key.doc)} |")
    for name, child in section.children.items():
        if isinstance(child, Section):
            _section(lines, f"{dotted}.{name}", child, min(level + 1, 6))


def render(schema):
    """Return the Markdown reference for C{schema}."""
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated from sipdisp/schema.py by `{REGENERATE}`; do not edit. -->",
        "",
        "sipdisp reads one YAML file, given with `-c` (`etc/sipdisp.yaml` by default in `make run`).",
        "Every key is optional: a missing key takes the default below, and an empty file is valid.",
        "An unknown key, a value of the wrong type or a broken rule stops startup with one line",
        "naming the key, for example `listen.udp[1]: \"127.0.0.1:abc\" is not host:port`.",
        "",
        "Types: `host:port` is written `\"127.0.0.1:5060\"`, IPv6 as `\"[::1]:5060\"`, port 0 picks",
        "any free port; `seconds` accepts integers and decimals; relative paths are relative to",
        "the working directory.",
    ]
    for name, section in schema.root.children.items():
        _section(lines, name, section, 2)
    if schema.checks:
        lines += ["", "## Rules across keys", ""]
        lines += [f"- {' '.join(check.__doc__.split())}" for check in schema.checks]
    return "\n".join(lines) + "\n"
