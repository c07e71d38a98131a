"""Dialplan translation (Kamailio's and OpenSIPS' dialplan module), sans-IO:
rows of the ``dialplan`` table compiled into rules, and the rules of a
dialplan id tried against a string.

A row is ``dpid, pr, match_op, match_exp, match_len, subst_exp, repl_exp,
attrs``:

* ``match_op`` 0 compares ``match_exp`` with the input for equality, 1
  searches it as a regular expression (PCRE in Kamailio, Python's ``re``
  here), 2 matches it as a shell pattern (fnmatch);
* ``match_len`` other than 0 makes the rule apply only to inputs of that
  length. As Kamailio indexes them, the rules with the input's exact length
  are tried first, then those of any length (0), each in ``pr`` order
  (ascending; ``id`` breaks ties);
* the first rule that matches decides: its ``attrs`` are returned, and the
  output is ``repl_exp`` with ``\\1`` .. ``\\9`` (``\\0`` the whole match)
  filled from ``subst_exp`` searched in the input. Without ``subst_exp``
  the output is ``repl_exp`` as it stands; without either, the input
  unchanged. ``repl_exp`` may hold pseudo-variables (``$var(prefix)\\1``),
  read from the request. A ``subst_exp`` that does not match the input
  fails the translation (Kamailio logs "matched the match_exp but not the
  subst_exp").

A row whose expression does not compile (or whose ``repl_exp`` refers to a
group ``subst_exp`` lacks, or an unknown ``match_op``) is refused at load:
:meth:`Dialplan.load` returns it with the reason, the service logs one
line naming the row's id, and the row is left out.
"""

import fnmatch
import re

from ..routing.pv import PV_RE, SIMPLE, RouteError, compile_pv

EQUAL, REGEX, FNMATCH = 0, 1, 2
MATCH_OPS = {EQUAL: "equal", REGEX: "regex", FNMATCH: "fnmatch"}
_ESCAPES = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


class RuleError(ValueError):
    """A dialplan row that cannot be used (the message says why)."""


class Rule:
    """One compiled dialplan row."""

    __slots__ = ("id", "dpid", "pr", "match_op", "match_exp", "match_len", "subst_exp",
                 "repl_exp", "attrs", "_match", "_subst", "_repl")

    def __init__(self, row, variables=None):
        try:
            self.id = int(row.get("id") or 0)
            self.dpid = int(row["dpid"])
            self.pr = int(row["pr"])
            self.match_op = int(row["match_op"])
            self.match_len = int(row["match_len"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RuleError(f"bad number in dpid, pr, match_op or match_len: {exc}") from None
        self.match_exp = str(row.get("match_exp") or "")
        self.subst_exp = str(row.get("subst_exp") or "")
        self.repl_exp = str(row.get("repl_exp") or "")
        self.attrs = str(row.get("attrs") or "")
        if self.match_op not in MATCH_OPS:
            raise RuleError(f"match_op {self.match_op} is none of 0 (equal), 1 (regex), "
                            "2 (fnmatch)")
        if self.match_len < 0:
            raise RuleError(f"match_len {self.match_len} is negative")
        self._match = None
        if self.match_op == REGEX:
            self._match = _compile(self.match_exp, "match_exp")
        self._subst = _compile(self.subst_exp, "subst_exp") if self.subst_exp else None
        self._repl = parse_repl(self.repl_exp, variables) if self.repl_exp else None
        highest = max((p for p in self._repl or () if isinstance(p, int)), default=-1)
        if highest >= 0 and self._subst is None:
            raise RuleError(f"repl_exp {self.repl_exp!r} refers to \\{highest}, "
                            "but there is no subst_exp")
        if self._subst is not None and highest > self._subst.groups:
            raise RuleError(f"repl_exp {self.repl_exp!r} refers to \\{highest}, but "
                            f"subst_exp {self.subst_exp!r} has {self._subst.groups} group(s)")

    @property
    def order(self):
        """Sort key within a dialplan id: exact-length rules first, then by pr, then id."""
        return (0 if self.match_len else 1, self.pr, self.id)

    def matches(self, text):
        """True if ``text`` matches this rule's match_len and match_exp."""
        if self.match_len and len(text) != self.match_len:
            return False
        if self.match_op == EQUAL:
            return text == self.match_exp
        if self.match_op == REGEX:
            return self._match.search(text) is not None
        return fnmatch.fnmatchcase(text, self.match_exp)

    def translate(self, text, ctx=None):
        """The output for ``text`` (which matched), or None when ``subst_exp``
        does not match it."""
        if self._repl is None:
            return text
        groups = ()
        if self._subst is not None:
            m = self._subst.search(text)
            if m is None:
                return None
            groups = (m.group(0),) + m.groups()
        out = []
        for part in self._repl:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, int):
                out.append(groups[part] or "")
            else:
                value = part(ctx) if ctx is not None else None
                out.append("" if value is None else str(value))
        return "".join(out)

    def describe(self):
        """The row as ``dp.dump`` shows it."""
        return {"id": self.id, "dpid": self.dpid, "pr": self.pr, "match_op": self.match_op,
                "match_exp": self.match_exp, "match_len": self.match_len,
                "subst_exp": self.subst_exp, "repl_exp": self.repl_exp, "attrs": self.attrs}


def _compile(expression, column):
    try:
        return re.compile(expression)
    except re.error as exc:
        raise RuleError(f"{column} {expression!r} does not compile: {exc}") from None


def parse_repl(text, variables=None):
    """``repl_exp`` as a list of parts: literal strings, group numbers
    (``\\0``..``\\9``) and pseudo-variable getters (``$var(x)``, ``$rU`` ...,
    known to ``variables``). A ``$`` that starts no pseudo-variable is
    literal. RuleError on an unknown escape or pseudo-variable."""
    parts = []
    literal = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text):
                raise RuleError(f"repl_exp {text!r} ends with a lone backslash")
            nxt = text[i + 1]
            if nxt.isdigit():
                if literal:
                    parts.append("".join(literal))
                    literal = []
                parts.append(int(nxt))
            elif nxt in _ESCAPES:
                literal.append(_ESCAPES[nxt])
            else:
                raise RuleError(f"repl_exp {text!r}: unknown escape \\{nxt}")
            i += 2
            continue
        if ch == "$":
            m = PV_RE.match(text, i)
            known = SIMPLE if variables is None else variables
            if m is not None and (m.group(1) or m.group(3) in known):
                try:
                    getter = compile_pv(m.group(0), "repl_exp", variables)
                except RouteError as exc:
                    raise RuleError(f"repl_exp {text!r}: {exc.problem}") from None
                if literal:
                    parts.append("".join(literal))
                    literal = []
                parts.append(getter)
                i = m.end()
                continue
        literal.append(ch)
        i += 1
    if literal:
        parts.append("".join(literal))
    return parts


class Translation:
    """The outcome of a translation: ``output`` (None when the matching
    rule's subst_exp did not match), ``attrs`` and the ``rule``."""

    __slots__ = ("output", "attrs", "rule")

    def __init__(self, output, attrs, rule):
        self.output = output
        self.attrs = attrs
        self.rule = rule


class Dialplan:
    """The rules of every dialplan id, as last loaded.

    ``variables`` (pseudo-variable name -> getter) lets ``repl_exp`` use
    the route's pseudo-variables. ``stats`` counts translations by outcome
    and the rows refused at the last load.
    """

    def __init__(self, variables=None):
        self.variables = variables
        self.rules = {}  # dpid -> [Rule] in the order they are tried
        self.refused = []  # [(id, reason)] of the last load
        self.stats = {"translations": 0, "matched": 0, "no_match": 0, "no_dpid": 0,
                      "subst_failed": 0, "rules_refused": 0}

    def load(self, rows):
        """Replace the rules with those of ``rows`` (dicts with the table's
        columns); returns ``{"rules", "dpids", "refused"}`` where refused is
        ``[(id, reason)]`` of the rows left out."""
        rules, refused = {}, []
        for row in rows:
            try:
                rule = Rule(row, self.variables)
            except RuleError as exc:
                refused.append((row.get("id"), str(exc)))
                continue
            rules.setdefault(rule.dpid, []).append(rule)
        for group in rules.values():
            group.sort(key=lambda r: r.order)
        self.rules = rules
        self.refused = refused
        self.stats["rules_refused"] += len(refused)
        return {"rules": sum(len(g) for g in rules.values()), "dpids": len(rules),
                "refused": refused}

    def find(self, dpid, text):
        """The first rule of ``dpid`` matching ``text``, or None."""
        for rule in self.rules.get(dpid, ()):
            if rule.matches(text):
                return rule
        return None

    def translate(self, dpid, text, ctx=None):
        """Translate ``text`` with the rules of ``dpid``: a :class:`Translation`,
        or None when ``dpid`` has no rules or none matches (counted)."""
        stats = self.stats
        stats["translations"] += 1
        if dpid not in self.rules:
            stats["no_dpid"] += 1
            return None
        rule = self.find(dpid, text)
        if rule is None:
            stats["no_match"] += 1
            return None
        output = rule.translate(text, ctx)
        stats["matched" if output is not None else "subst_failed"] += 1
        return Translation(output, rule.attrs, rule)

    def dump(self, dpid=None):
        """``[row]`` of every rule (of one dpid), in the order they are tried."""
        ids = [dpid] if dpid is not None else sorted(self.rules)
        return [rule.describe() for d in ids for rule in self.rules.get(d, ())]

    def metrics(self):
        """Translations by outcome and rules loaded (the /metrics hook)."""
        yield ("sipdisp_dialplan_translations_total", "counter",
               "dp_translate calls by outcome (matched, no_match, no_dpid, subst_failed).",
               [({"outcome": k}, v) for k, v in sorted(self.stats.items())
                if k not in ("translations", "rules_refused")])
        yield ("sipdisp_dialplan_rules", "gauge", "Dialplan rules in memory.",
               sum(len(g) for g in self.rules.values()))
        yield ("sipdisp_dialplan_rules_refused_total", "counter",
               "Dialplan rows refused at load (bad expression, match_op or back-reference).",
               self.stats["rules_refused"])
