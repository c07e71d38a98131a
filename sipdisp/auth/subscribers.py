"""The ``subscriber`` and ``domain`` tables (Kamailio's auth_db and domain
modules) over the storage API: credential lookups for :class:`Auth`, and
what ``sipdisp user add|rm|list`` and the ``subscriber.*`` commands do.

Rows are written as ``kamctl add`` writes them: ``ha1`` is
``MD5(username:domain:password)``, ``ha1b`` is
``MD5(username@domain:domain:password)`` (the realm is the domain), and the
password is kept in clear unless ``plaintext`` is off.
"""

from twisted.internet import defer

from .digest import calc_ha1

TABLE = "subscriber"
DOMAIN_TABLE = "domain"


def split_user(text):
    """``alice@example.com`` -> ``("alice", "example.com")``; ValueError if
    either part is missing (a ``sip:`` prefix is allowed)."""
    text = text.strip()
    if text.lower().startswith("sip:"):
        text = text[4:]
    username, sep, domain = text.rpartition("@")
    if not sep or not username or not domain:
        raise ValueError(f"expected user@domain, got {text!r}")
    return username, domain.lower()


def subscriber_row(username, domain, password, plaintext=True):
    """The ``subscriber`` row for a user, kamctl style."""
    return {"username": username, "domain": domain,
            "password": password if plaintext else "",
            "ha1": calc_ha1("MD5", username, domain, password),
            "ha1b": calc_ha1("MD5", f"{username}@{domain}", domain, password)}


class Subscribers:
    """Credential rows in ``storage``'s subscriber table; with
    ``use_domain`` a user is looked up by username and domain (the realm),
    else by username alone (Kamailio's auth_db ``use_domain``)."""

    def __init__(self, storage, use_domain=False):
        self.storage = storage
        self.use_domain = use_domain

    def lookup(self, username, domain):
        """A Deferred firing with the row of ``username`` (dict) or None."""
        where = {"username": username}
        if self.use_domain:
            where["domain"] = (domain or "").lower()
        d = self.storage.select(TABLE, where=where,
                                columns=["username", "domain", "password", "ha1", "ha1b"],
                                limit=1)
        return d.addCallback(lambda rows: rows[0] if rows else None)

    @defer.inlineCallbacks
    def add(self, username, domain, password, plaintext=True):
        """Add or replace a subscriber; fires with True if it was new."""
        row = subscriber_row(username, domain, password, plaintext)
        existing = yield self.storage.select(TABLE, where={"username": username,
                                                         "domain": domain}, limit=1)
        if existing:
            yield self.storage.update(TABLE, {k: v for k, v in row.items()
                                              if k not in ("username", "domain")},
                                      where={"username": username, "domain": domain})
            return False
        yield self.storage.insert(TABLE, row)
        return True

    def remove(self, username, domain):
        """Delete a subscriber; fires with the number of rows deleted."""
        return self.storage.delete(TABLE, where={"username": username, "domain": domain})

    def list(self, domain=None):
        """Fire with ``[{"username", "domain"}]`` sorted by domain and name
        (passwords are never listed)."""
        where = {"domain": domain.lower()} if domain else None
        return self.storage.select(TABLE, where=where, columns=["username", "domain"],
                                   order_by=["domain", "username"])


def load_domains(storage):
    """A Deferred firing with the set of domains in the ``domain`` table."""
    d = storage.select(DOMAIN_TABLE, columns=["domain"])
    return d.addCallback(lambda rows: {r["domain"].lower() for r in rows if r.get("domain")})
