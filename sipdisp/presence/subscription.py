"""Subscriptions as dialogs (RFC 6665), sans-IO: the state of one
subscription (an ``active_watchers`` row), the NOTIFY request it sends next
and the parsing of the headers that make one.
"""

from ..sip.errors import SipParseError
from ..sip.message import Request
from ..sip.uri import parse_uri

ACTIVE, PENDING, TERMINATED = "active", "pending", "terminated"
#: active_watchers.status as Kamailio writes it (presence/subscribe.h)
STATUS_CODES = {ACTIVE: 1, PENDING: 2, TERMINATED: 3}
STATUS_NAMES = {v: k for k, v in STATUS_CODES.items()}


def parse_event(value):
    """``(package, id or None)`` of an Event header value (RFC 6665 section
    8.2.1: the package name is compared case-insensitively)."""
    name, _, params = value.partition(";")
    event_id = None
    for part in params.split(";"):
        key, _, val = part.partition("=")
        if key.strip().lower() == "id":
            event_id = val.strip().strip('"') or None
    return name.strip().lower(), event_id


def presentity_of(uri):
    """``sip:user@domain`` of a Request-URI (a URI object), with the domain in
    lower case, or None when it has no user part (a presentity is a user)."""
    if not uri.is_sip or not uri.user:
        return None
    return f"sip:{uri.user}@{uri.host.lower()}"


def split_presentity(presentity):
    """``(user, domain)`` of ``sip:user@domain``."""
    user, _, domain = presentity[4:].partition("@")
    return user, domain


class Subscription:
    """One subscription dialog; we are its notifier (the UAS of the SUBSCRIBE).

    ``call_id``, ``from_tag`` (the watcher's) and ``to_tag`` (ours) name the
    dialog; ``watcher`` is the watcher's From URI, ``presentity`` the
    resource; ``contact`` the remote target and ``route_set`` the
    Record-Route of the SUBSCRIBE in order (RFC 3261 12.1.1); ``local_cseq``
    the CSeq of the last NOTIFY sent, ``remote_cseq`` of the last SUBSCRIBE;
    ``expires`` when it ends (absolute); ``conn`` the stream connection the
    SUBSCRIBE came on (None: UDP, or after a restart); ``socket`` the
    listener it came on (``proto:host:port``). ``in_flight`` is the NOTIFY
    transaction not answered yet, ``dirty`` a state change waiting for it.
    """

    __slots__ = ("call_id", "from_tag", "to_tag", "event", "event_id", "presentity",
                 "watcher", "watcher_display", "contact", "route_set", "local_cseq",
                 "remote_cseq", "expires", "status", "reason", "version", "socket",
                 "local_contact", "conn", "source_host", "in_flight", "dirty", "ending",
                 "to_uri")

    def __init__(self, call_id, from_tag, to_tag, event, presentity, watcher, contact,
                 expires, event_id=None, route_set=(), local_cseq=0, remote_cseq=0,
                 status=ACTIVE, reason="", version=0, socket="", local_contact="",
                 conn=None, source_host="", watcher_display="", to_uri=None):
        self.call_id = call_id
        self.from_tag = from_tag
        self.to_tag = to_tag
        self.event = event
        self.event_id = event_id
        self.presentity = presentity
        self.watcher = watcher
        self.watcher_display = watcher_display
        self.contact = contact
        self.route_set = list(route_set)
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.expires = expires
        self.status = status
        self.reason = reason
        self.version = version
        self.socket = socket
        self.local_contact = local_contact
        self.conn = conn
        self.source_host = source_host
        self.in_flight = None
        self.dirty = False
        #: the reason of the final NOTIFY once the subscription is ending
        self.ending = None
        self.to_uri = to_uri or presentity

    @property
    def key(self):
        """The dialog's identity: ``(Call-ID, our tag, the watcher's tag)``."""
        return (self.call_id, self.to_tag, self.from_tag)

    def state_header(self, now, reason=None):
        """The Subscription-State value (RFC 6665 section 8.2.3)."""
        if reason is not None:
            return f"terminated;reason={reason}"
        left = max(0, int(self.expires - now + 0.5))
        return f"{self.status};expires={left}"

    def next_hop_uri(self):
        """The URI the next NOTIFY is sent towards: the first route of a loose
        route set, else the remote target (RFC 3261 12.2.1.1)."""
        if self.route_set:
            return _uri_of(self.route_set[0])
        return parse_uri(self.contact)

    def notify(self, via, now, content_type, body, reason=None, user_agent=""):
        """The next NOTIFY of this dialog (its CSeq one more than the last);
        ``via`` the top Via value, ``reason`` set for the final one."""
        self.local_cseq += 1
        cseq = self.local_cseq
        route = self.route_set
        first = _uri_of(route[0]) if route else None
        if first is not None and first.param("lr") is None:
            # a strict router: it becomes the Request-URI, the target goes last
            uri = first
            route = route[1:] + [f"<{self.contact}>"]
        else:
            uri = parse_uri(self.contact)
        request = Request("NOTIFY", uri)
        request.call_id = self.call_id
        request.cseq = cseq
        request.cseq_method = "NOTIFY"
        request.from_tag = self.to_tag
        request.to_tag = self.from_tag
        display = f'"{self.watcher_display}" ' if self.watcher_display else ""
        event = self.event if self.event_id is None else f"{self.event};id={self.event_id}"
        headers = [("via", "Via", via), ("max-forwards", "Max-Forwards", "70")]
        headers += [("route", "Route", r) for r in route]
        headers += [("from", "From", f"<{self.to_uri}>;tag={self.to_tag}"),
                    ("to", "To", f"{display}<{self.watcher}>;tag={self.from_tag}"),
                    ("call-id", "Call-ID", self.call_id),
                    ("cseq", "CSeq", f"{cseq} NOTIFY"),
                    ("contact", "Contact", f"<{self.local_contact}>"),
                    ("event", "Event", event),
                    ("subscription-state", "Subscription-State",
                     self.state_header(now, reason))]
        if user_agent:
            headers.append(("user-agent", "User-Agent", user_agent))
        if body is not None:
            headers.append(("content-type", "Content-Type", content_type))
        else:
            body = b""
        headers.append(("content-length", "Content-Length", str(len(body))))
        request.headers = headers
        request.body = body
        return request


def _uri_of(route):
    """The URI inside one Route / Record-Route value."""
    text = route.strip()
    if "<" in text:
        text = text[text.index("<") + 1:text.index(">")]
    return parse_uri(text)


def route_set_of(request):
    """The Record-Route values of a SUBSCRIBE, one per entry, in order (the
    UAS's route set, RFC 3261 12.1.1); raises SipParseError for a bad one."""
    out = []
    for value in request.values("record-route"):
        _uri_of(value)  # it must parse, or the NOTIFY could not be routed
        out.append(value.strip())
    return out


__all__ = ["Subscription", "parse_event", "presentity_of", "route_set_of",
           "split_presentity", "ACTIVE", "PENDING", "TERMINATED", "SipParseError"]
