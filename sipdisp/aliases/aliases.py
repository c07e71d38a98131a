"""Aliases of the ``dbaliases`` table (Kamailio's and OpenSIPS' alias_db):
what a lookup asks the table and what it makes of the row, and the rows
``sipdisp alias add|rm|list`` and the ``alias.*`` commands write.

The table is read on every lookup, as alias_db reads it (it keeps no
cache): an alias added with ``sipdisp alias add`` works on the next call.
A lookup asks for the alias's user (and domain, with ``use_domain``) and
turns the first row into ``sip:username@domain``, the URI alias_db writes
into the Request-URI (its ``append_branches`` is off by default, so only
the first row counts; rows are read in ``id`` order).

The functions here take and return plain values; :class:`Aliases` wraps
the table over the storage API (Deferreds).
"""

from ..storage.schema import SCHEMA, check_identifier

TABLE = "dbaliases"
COLUMNS = ("alias_username", "alias_domain", "username", "domain")

#: alias_db_lookup flags: d (never the domain), u (always the domain), r (reverse)
FLAGS = frozenset("dur")


def parse_flags(text):
    """``"rd"`` -> ``(use_domain, reverse)`` where ``use_domain`` is True (u),
    False (d) or None (the ``aliases.use_domain`` default); ValueError on an
    unknown flag or on d and u together."""
    text = "" if text is None else str(text)
    unknown = set(text) - FLAGS
    if unknown:
        raise ValueError(f"unknown alias flag(s) {''.join(sorted(unknown))!r} "
                         "(d: no domain, u: use domain, r: reverse)")
    if "d" in text and "u" in text:
        raise ValueError("alias flags d and u exclude each other")
    use_domain = True if "u" in text else False if "d" in text else None
    return use_domain, "r" in text


def check_table(name):
    """``name`` if the storage schema has it with the dbaliases columns; ValueError otherwise."""
    check_identifier(name)
    table = SCHEMA.get(name)
    if table is None or not set(COLUMNS) <= set(table.column_names):
        known = sorted(t.name for t in SCHEMA.values() if set(COLUMNS) <= set(t.column_names))
        raise ValueError(f"no alias table {name!r} in the storage schema "
                         f"(tables with dbaliases' columns: {', '.join(known)})")
    return name


def strip_prefix(domain, prefix):
    """``domain`` without ``prefix`` (alias_db ``domain_prefix``), only when
    something is left after it."""
    if prefix and len(prefix) < len(domain) and domain.lower().startswith(prefix.lower()):
        return domain[len(prefix):]
    return domain


def lookup_query(user, domain, use_domain, reverse=False, domain_prefix=""):
    """``(where, columns)`` of a lookup of ``user@domain``: alias to user, or
    with ``reverse`` user to alias. The domain is compared in lower case."""
    if reverse:
        keys, columns = ("username", "domain"), ["alias_username", "alias_domain"]
    else:
        keys, columns = ("alias_username", "alias_domain"), ["username", "domain"]
    where = {keys[0]: user}
    if use_domain:
        where[keys[1]] = strip_prefix((domain or "").lower(), domain_prefix)
    return where, columns


def target_uri(row, columns, fallback_domain):
    """``sip:user@domain`` from a lookup row (``columns`` as
    :func:`lookup_query` gave them). A row with an empty domain keeps
    ``fallback_domain`` (the Request-URI's): rows added without a domain
    while ``use_domain`` is off."""
    user, domain = row.get(columns[0]), row.get(columns[1])
    if not user:
        return None
    return f"sip:{user}@{domain or fallback_domain}"


def split_address(text):
    """``alice@example.com`` (``sip:`` allowed) -> ``("alice", "example.com")``;
    ``alice`` alone -> ``("alice", "")``; ValueError when the user is missing."""
    text = (text or "").strip()
    if text.lower().startswith(("sip:", "sips:")):
        text = text.split(":", 1)[1]
    user, sep, domain = text.rpartition("@") if "@" in text else (text, "", "")
    if not user:
        raise ValueError(f"expected user@domain, got {text!r}")
    return user, domain.split(";", 1)[0].lower()


class Aliases:
    """The alias rows of ``table`` in ``storage`` (a :class:`~sipdisp.storage.Storage`)."""

    def __init__(self, storage, table=TABLE, use_domain=False, domain_prefix=""):
        self.storage = storage
        self.table = check_table(table)
        self.use_domain = use_domain
        self.domain_prefix = domain_prefix
        self.stats = {"lookups": 0, "found": 0, "not_found": 0, "errors": 0}

    def find(self, user, domain, table=None, use_domain=None, reverse=False):
        """A Deferred firing with the target URI of ``user@domain`` (or with
        ``reverse``, its alias), or None when there is none."""
        use_domain = self.use_domain if use_domain is None else use_domain
        where, columns = lookup_query(user, domain, use_domain, reverse, self.domain_prefix)
        d = self.storage.select(table or self.table, where=where, columns=columns,
                                order_by=["id"], limit=1)
        return d.addCallback(lambda rows: target_uri(rows[0], columns, domain) if rows else None)

    def count(self, found):
        """Count one lookup's outcome (True found, False not, None error)."""
        self.stats["lookups"] += 1
        key = "errors" if found is None else "found" if found else "not_found"
        self.stats[key] += 1

    def add(self, alias, target):
        """Point ``alias`` (``user@domain``) at ``target``, replacing what it
        pointed at; fires with True if the alias was new (kamctl alias add)."""
        a_user, a_domain = split_address(alias)
        user, domain = split_address(target)
        where = {"alias_username": a_user, "alias_domain": a_domain}
        d = self.storage.select(self.table, where=where, columns=["id"], limit=1)

        def write(rows):
            values = {"username": user, "domain": domain}
            if rows:
                return self.storage.update(self.table, values, where).addCallback(lambda _: False)
            return self.storage.insert(self.table, dict(where, **values)).addCallback(
                lambda _: True)
        return d.addCallback(write)

    def remove(self, alias):
        """Delete ``alias``; fires with the number of rows deleted."""
        a_user, a_domain = split_address(alias)
        return self.storage.delete(self.table, {"alias_username": a_user,
                                                "alias_domain": a_domain})

    def list(self, target=None):
        """Fire with ``[{"alias", "target"}]`` (``user@domain`` each), sorted;
        only the aliases of ``target`` when given."""
        where = None
        if target:
            user, domain = split_address(target)
            where = {"username": user}
            if domain:
                where["domain"] = domain
        d = self.storage.select(self.table, where=where, columns=list(COLUMNS),
                                order_by=["alias_domain", "alias_username"])
        return d.addCallback(lambda rows: [
            {"alias": _address(r["alias_username"], r["alias_domain"]),
             "target": _address(r["username"], r["domain"])} for r in rows])

    def metrics(self):
        """``sipdisp_alias_lookups_total`` by outcome (the /metrics hook)."""
        yield ("sipdisp_alias_lookups_total", "counter",
               "alias_db_lookup calls by outcome (found, not_found, errors).",
               [({"outcome": k}, v) for k, v in sorted(self.stats.items()) if k != "lookups"])


def _address(user, domain):
    return f"{user}@{domain}" if domain else user


class AliasModule:
    """What the route functions find in ``modules.aliases``: the table
    (:class:`Aliases`), the :class:`~sipdisp.proxy.suspend.Suspender` that
    holds a request while its row is read, and the (repeat-limited) log of
    failed reads."""

    def __init__(self, aliases, suspender, log):
        self.aliases = aliases
        self.suspender = suspender
        self.log = log

    def failed(self, table, user, error):
        """A lookup could not read the table: counted, logged; the lookup is false."""
        self.aliases.count(None)
        self.log.warn("aliases.db_error", "alias_db_lookup: cannot read {table} for {user!r}: "
                      "{err}; treated as no alias", table=table, user=user, err=error)

    def metrics(self):
        """The table's counters (the /metrics hook)."""
        return self.aliases.metrics()
