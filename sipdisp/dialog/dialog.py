"""One dialog as a record-routing proxy sees it (RFC 3261 section 12), and
the in-dialog requests sipdisp builds from it: the BYEs that end a call at
its timeout or from the console, and the OPTIONS keepalives.

Sides are named from the INVITE: the *caller* sent it, the *callee*
answered it. A request sipdisp sends *to the caller* speaks for the callee
(From is the callee's To with its tag, CSeq is in the callee's space) and
vice versa (RFC 3261 12.2.1.1).
"""

from ..sip.address import parse_address
from ..sip.message import Request
from ..sip.uri import DEFAULT_PORTS, parse_uri
from .states import STATE_NAMES, UNCONFIRMED

CALLER = "caller"
CALLEE = "callee"
SIDES = (CALLER, CALLEE)

# create_dialog flags (OpenSIPS): B send BYE at timeout, P ping the caller,
# p ping the callee (OPTIONS keepalives)
FLAG_BYE = "B"
FLAG_PING_CALLER = "P"
FLAG_PING_CALLEE = "p"
KNOWN_FLAGS = frozenset((FLAG_BYE, FLAG_PING_CALLER, FLAG_PING_CALLEE))
#: sflags bits stored in the dialog table for the flags above
FLAG_BITS = {FLAG_BYE: 1, FLAG_PING_CALLER: 2, FLAG_PING_CALLEE: 4}


def parse_flags(text):
    """``"Bp"`` -> ``frozenset({"B", "p"})``; ValueError for a flag sipdisp does not know."""
    flags = frozenset(str(text or ""))
    unknown = flags - KNOWN_FLAGS
    if unknown:
        raise ValueError(f"unknown dialog flag(s) {''.join(sorted(unknown))!r} "
                         "(known: B bye on timeout, P ping caller, p ping callee)")
    return flags


def flags_to_bits(flags):
    """The ``sflags`` column value of a flag set."""
    return sum(bit for flag, bit in FLAG_BITS.items() if flag in flags)


def bits_to_flags(bits):
    """The flag set of an ``sflags`` column value."""
    return frozenset(flag for flag, bit in FLAG_BITS.items() if int(bits or 0) & bit)


class Dialog:
    """The state of one call: identity, both parties' targets, route sets and
    CSeqs, times, profiles and module variables (``vars``, strings, stored
    in ``dialog_vars``)."""

    __slots__ = ("h_entry", "h_id", "callid", "from_uri", "from_tag", "to_uri", "to_tag",
                 "req_uri", "caller_cseq", "callee_cseq", "caller_contact", "callee_contact",
                 "caller_routes", "callee_routes", "caller_addr", "callee_addr",
                 "caller_sock", "callee_sock", "state", "created", "answered", "ended",
                 "lifetime", "flags", "profiles", "vars", "end_reason", "ka_failures",
                 "ka_pending", "stored", "vars_stored", "answer_code", "answer_reason", "owner")

    def __init__(self, h_entry, h_id, callid, from_uri, from_tag, to_uri, req_uri,
                 caller_cseq, caller_contact, caller_addr, caller_sock, created,
                 lifetime, flags=frozenset()):
        self.h_entry = h_entry
        self.h_id = h_id
        self.callid = callid
        self.from_uri = from_uri
        self.from_tag = from_tag
        self.to_uri = to_uri
        self.to_tag = None
        self.req_uri = req_uri
        self.caller_cseq = caller_cseq
        self.callee_cseq = 0
        self.caller_contact = caller_contact
        self.callee_contact = None
        self.caller_routes = []
        self.callee_routes = []
        self.caller_addr = caller_addr   # (proto, host, port, conn) the caller used
        self.callee_addr = None          # (proto, host, port, conn) the INVITE went to
        self.caller_sock = caller_sock   # our socket towards each side, "udp:host:port"
        self.callee_sock = ""
        self.state = UNCONFIRMED
        self.created = created
        self.answered = None
        self.ended = None
        self.lifetime = lifetime
        self.flags = flags
        self.profiles = []
        self.vars = {}
        self.end_reason = None
        self.ka_failures = {CALLER: 0, CALLEE: 0}
        self.ka_pending = set()
        self.stored = False
        self.vars_stored = False
        self.answer_code = None
        self.answer_reason = None
        # the cluster node that acts on this dialog (cluster.node_id; None
        # without a cluster): stored with it, changed when a node takes it over
        self.owner = None

    @property
    def key(self):
        """The identity in the table and the database: ``(hash_entry, hash_id)``."""
        return (self.h_entry, self.h_id)

    @property
    def id(self):
        """``"hash_entry:hash_id"``, as ``dlg.list`` shows it and ``dlg.end`` takes it."""
        return f"{self.h_entry}:{self.h_id}"

    @property
    def state_name(self):
        """``unconfirmed``, ``early``, ``confirmed`` or ``deleted``."""
        return STATE_NAMES[self.state]

    def describe(self, now):
        """A JSON-friendly record for ``dlg.list`` (Kamailio's field names)."""
        out = {
            "h_entry": self.h_entry, "h_id": self.h_id, "id": self.id,
            "call-id": self.callid, "from_uri": self.from_uri, "to_uri": self.to_uri,
            "state": self.state, "state_name": self.state_name, "req_uri": self.req_uri,
            "created": self.created, "start_ts": self.answered,
            "lifetime": self.lifetime, "flags": "".join(sorted(self.flags)),
            "caller": {"tag": self.from_tag, "contact": self.caller_contact,
                       "cseq": self.caller_cseq, "route_set": list(self.caller_routes),
                       "socket": self.caller_sock},
            "callee": {"tag": self.to_tag, "contact": self.callee_contact,
                       "cseq": self.callee_cseq, "route_set": list(self.callee_routes),
                       "socket": self.callee_sock},
            "profiles": [f"{n}={v}" if v else n for n, v in self.profiles],
            "variables": dict(self.vars),
        }
        if self.answered is not None:
            out["duration"] = round(now - self.answered, 3)
            out["timeout_in"] = round(self.answered + self.lifetime - now, 3)
        return out

    def __repr__(self):
        return f"<Dialog {self.id} {self.callid} {self.state_name}>"


def split_route_set(record_routes, is_myself):
    """The route sets towards each side from a 2xx's Record-Route values:
    ``(towards_caller, towards_callee)``. Entries below ours (added by
    proxies nearer the caller) lead to the caller in order; entries above
    ours lead to the callee in reverse order. Without an entry of ours
    (no record_route), everything leads to the callee."""
    ours = [i for i, value in enumerate(record_routes)
            if is_myself(parse_address(value, "Record-Route").uri)]
    if not ours:
        return [], list(reversed(record_routes))
    first, last = ours[0], ours[-1]
    return list(record_routes[last + 1:]), list(reversed(record_routes[:first]))


def request_towards(dialog, side, method, cseq, branch, listener, user_agent=None):
    """An in-dialog ``method`` request to ``side`` of ``dialog`` (RFC 3261
    12.2.1.1): Request-URI the side's Contact, its route set as Route, From,
    To and Call-ID of the dialog in that direction, Via of ``listener``."""
    if side == CALLER:
        ruri, routes = dialog.caller_contact, dialog.caller_routes
        from_value = f"<{dialog.to_uri}>;tag={dialog.to_tag}"
        to_value = f"<{dialog.from_uri}>;tag={dialog.from_tag}"
    else:
        ruri, routes = dialog.callee_contact, dialog.callee_routes
        from_value = f"<{dialog.from_uri}>;tag={dialog.from_tag}"
        to_value = f"<{dialog.to_uri}>;tag={dialog.to_tag}"
    request = Request(method, parse_uri(ruri))
    request.call_id = dialog.callid
    request.cseq = cseq
    request.cseq_method = method
    request.from_tag = dialog.to_tag if side == CALLER else dialog.from_tag
    request.to_tag = dialog.from_tag if side == CALLER else dialog.to_tag
    headers = [("via", "Via", listener.via_prefix + branch)]
    for value in routes:
        headers.append(("route", "Route", value))
    headers += [
        ("max-forwards", "Max-Forwards", "70"),
        ("from", "From", from_value),
        ("to", "To", to_value),
        ("call-id", "Call-ID", dialog.callid),
        ("cseq", "CSeq", f"{cseq} {method}"),
    ]
    if user_agent:
        headers.append(("user-agent", "User-Agent", user_agent))
    headers.append(("content-length", "Content-Length", "0"))
    request.headers = headers
    return request


def next_hop(dialog, side):
    """``(proto, host, port, conn)`` to send a request for ``side`` to: the
    first Route of its route set, else the address that party used (so a
    caller behind NAT is reached where it really is), else its Contact."""
    routes = dialog.caller_routes if side == CALLER else dialog.callee_routes
    if routes:
        return _uri_addr(parse_address(routes[0], "Route").uri)
    addr = dialog.caller_addr if side == CALLER else dialog.callee_addr
    if addr is not None:
        return addr
    contact = dialog.caller_contact if side == CALLER else dialog.callee_contact
    return _uri_addr(parse_uri(contact))


def _uri_addr(uri):
    proto = uri.transport
    host = uri.param("maddr") or uri.host
    port = uri.port
    if port is None:
        port = 5061 if uri.scheme == "sips" else DEFAULT_PORTS.get(proto, 5060)
    return (proto, host, port, None)
