"""The event state compositor of RFC 3903, sans-IO: publications by event
and presentity, each under its entity-tag, with an absolute expiry.

:func:`decide_publish` turns a PUBLISH (its event, SIP-If-Match, Expires,
Content-Type and body, already read off the request) into a
:class:`PublishOutcome`: the reply to send and what changes in the
:class:`Compositor`. Nothing here reads a clock or touches storage; the
presence server applies the outcome, writes the row and notifies.
"""

import itertools
import os

#: what a PUBLISH does to the state (RFC 3903 section 4)
INITIAL, REFRESH, MODIFY, REMOVE = "initial", "refresh", "modify", "remove"


class Publication:
    """One publication of a presentity's event state (a ``presentity`` row)."""

    __slots__ = ("etag", "source_id", "content_type", "body", "expires", "received",
                 "sender")

    def __init__(self, etag, content_type, body, expires, received, sender="",
                 source_id=None):
        self.etag = etag
        self.content_type = content_type
        self.body = body
        self.expires = expires
        self.received = received
        self.sender = sender
        #: who keeps it up to date from inside sipdisp (the dialog feed), else None
        self.source_id = source_id

    def __repr__(self):
        return f"<Publication {self.etag} until {self.expires}>"


class Compositor:
    """Publications per ``(event, presentity)``, oldest first, each under its
    entity-tag; ``by_source`` finds the ones sipdisp publishes itself."""

    __slots__ = ("state", "by_source", "_prefix", "_seq")

    def __init__(self, prefix=None):
        #: (event, presentity) -> {etag: Publication} in publication order
        self.state = {}
        #: (event, presentity, source_id) -> etag
        self.by_source = {}
        self._prefix = prefix or os.urandom(4).hex()
        self._seq = itertools.count(1)

    def new_etag(self):
        """An entity-tag no publication of this process had (RFC 3903 section 6: a
        new one on every successful PUBLISH); the random prefix keeps them
        apart from the ETags of the run before a restart."""
        return f"{self._prefix}.{next(self._seq):x}"

    def get(self, event, presentity, etag):
        """The publication under ``etag``, or None."""
        pubs = self.state.get((event, presentity))
        return None if pubs is None else pubs.get(etag)

    def publications(self, event, presentity):
        """The presentity's publications of ``event``, oldest first."""
        pubs = self.state.get((event, presentity))
        return list(pubs.values()) if pubs else []

    def count(self, event, presentity):
        """How many publications the presentity holds for ``event``."""
        return len(self.state.get((event, presentity)) or ())

    def put(self, event, presentity, pub, old_etag=None):
        """Store ``pub`` (replacing the one under ``old_etag``: the newest
        publication comes last, as RFC 3903's aggregation reads them)."""
        pubs = self.state.setdefault((event, presentity), {})
        if old_etag is not None:
            pubs.pop(old_etag, None)
        pubs[pub.etag] = pub
        if pub.source_id is not None:
            self.by_source[(event, presentity, pub.source_id)] = pub.etag

    def remove(self, event, presentity, etag):
        """Drop one publication; returns it, or None."""
        key = (event, presentity)
        pubs = self.state.get(key)
        if pubs is None:
            return None
        pub = pubs.pop(etag, None)
        if not pubs:
            del self.state[key]
        if pub is not None and pub.source_id is not None:
            self.by_source.pop((event, presentity, pub.source_id), None)
        return pub

    def presentities(self):
        """Distinct ``(event, presentity)`` keys holding publications."""
        return len(self.state)

    def publication_count(self):
        """Every publication held."""
        return sum(len(p) for p in self.state.values())


class PublishOutcome:
    """What a PUBLISH does: ``status``/``reason``/``headers`` of the reply,
    and with a 2xx the ``action`` (INITIAL, REFRESH, MODIFY, REMOVE), the
    granted ``expires`` and the ``etag`` it leaves (None after REMOVE)."""

    __slots__ = ("status", "reason", "headers", "action", "expires", "etag", "old_etag",
                 "limit")

    def __init__(self, status, reason, headers=(), action=None, expires=0, etag=None,
                 old_etag=None, limit=None):
        self.status = status
        self.reason = reason
        self.headers = tuple(headers)
        self.action = action
        self.expires = expires
        self.etag = etag
        self.old_etag = old_etag
        #: the config key whose limit refused it, or None
        self.limit = limit

    def __repr__(self):
        return f"<PublishOutcome {self.status} {self.action}>"


def grant_expires(value, params):
    """``(granted seconds, None)`` for an Expires header value (None: the
    default), or ``(None, (status, reason, headers))`` when it is refused:
    400 for a malformed one, 423 with Min-Expires below ``min_expires``
    (RFC 3903 section 6 step 3, RFC 6665 section 4.2.1.1). 0 stays 0;
    above ``max_expires`` it is cut to it."""
    if value is None:
        return int(params.default_expires), None
    value = value.strip()
    if not value.isdigit():
        return None, (400, "Bad Expires header", ())
    seconds = int(value)
    if seconds == 0:
        return 0, None
    if seconds < params.min_expires:
        return None, (423, "Interval Too Brief", (("min-expires", str(int(params.min_expires))),))
    return min(seconds, int(params.max_expires)), None


def decide_publish(comp, params, event, presentity, if_match, expires, body):
    """RFC 3903 section 6 for one PUBLISH whose event package exists and
    whose body (if any) is valid: the :class:`PublishOutcome`, with a new
    entity-tag for every 2xx but a removal. ``if_match`` is the SIP-If-Match
    value or None, ``expires`` the Expires header value or None."""
    granted, refused = grant_expires(expires, params)
    if refused is not None:
        return PublishOutcome(*refused)
    retry = (("retry-after", str(params.retry_after)),)
    if if_match is None:
        if not body:
            return PublishOutcome(400, "Missing body in initial PUBLISH")
        if granted == 0:
            return PublishOutcome(400, "Initial PUBLISH with Expires 0")
        if comp.count(event, presentity) == 0 and \
                comp.presentities() >= params.max_presentities:
            return PublishOutcome(503, "Too many presentities", retry,
                                  limit="presence.max_presentities")
        if comp.count(event, presentity) >= params.max_publications_per_presentity:
            return PublishOutcome(503, "Too many publications", retry,
                                  limit="presence.max_publications_per_presentity")
        return _ok(INITIAL, granted, comp.new_etag(), None)
    etag = if_match.strip()
    if comp.get(event, presentity, etag) is None:
        return PublishOutcome(412, "Conditional Request Failed")
    if granted == 0:
        return PublishOutcome(200, "OK", (("expires", "0"),), REMOVE, 0, None, etag)
    return _ok(MODIFY if body else REFRESH, granted, comp.new_etag(), etag)


def _ok(action, expires, etag, old_etag):
    return PublishOutcome(200, "OK", (("sip-etag", etag), ("expires", str(expires))),
                          action, expires, etag, old_etag)
