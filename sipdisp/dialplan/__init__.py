"""Number translation (Kamailio's and OpenSIPS' dialplan module): the
``dialplan`` table loaded into memory, ``dp_translate`` / ``dp_replace`` /
``dp_match`` in the route and the ``dp.*`` commands (docs/aliases-dialplan.md)."""

from .dialplan import EQUAL, FNMATCH, REGEX, Dialplan, Rule, RuleError, Translation, parse_repl

__all__ = ["EQUAL", "FNMATCH", "REGEX", "Dialplan", "Rule", "RuleError", "Translation",
           "parse_repl"]
