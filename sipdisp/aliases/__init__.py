"""Aliases (Kamailio's and OpenSIPS' alias_db): the ``dbaliases`` table read
at each ``alias_db_lookup``, ``sipdisp alias add|rm|list`` and the
``alias.*`` commands (docs/aliases-dialplan.md)."""

from .aliases import AliasModule, Aliases, lookup_query, parse_flags, split_address, target_uri

__all__ = ["AliasModule", "Aliases", "lookup_query", "parse_flags", "split_address",
           "target_uri"]
