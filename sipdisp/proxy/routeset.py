"""The route set this proxy writes and follows (RFC 3261 16.4, 16.6 step 4,
16.12; RFC 5658 double Record-Route), signed so that only dialogs it
record-routed itself are relayed in-dialog.

Every Record-Route entry carries RR_SIGNATURE, a keyed hash of the Call-ID
and the caller's tag; an in-dialog request is relayed only when the entry
of ours it brings back (in Route, or as a strict-routed Request-URI) has a
valid one. A stranger writing the proxy's address into Route gets nothing
relayed.
"""

import hashlib
import hmac
import os

from ..sip.address import parse_address

#: Record-Route parameter carrying the dialog's signature
RR_SIGNATURE = "sdsig"
#: user part of a Record-Route entry that names a connection (a registered
#: flow): in-dialog requests go back over that connection
FLOW_PREFIX = "sdf-"
#: Route parameter naming a stream connection of the node that wrote it, so
#: another node of a cluster can reach a user registered over that
#: connection (issue 16: ``<sip:A;transport=udp;lr;ob;flow=TOKEN>``, RFC 5626
#: style): see :meth:`RouteSet.flow_token` and :meth:`RouteSet.take_flow_route`
FLOW_PARAM = "flow"
#: what take_flow_route answers for a Route of ours whose token is not valid here
FLOW_INVALID = -1
#: the URI parameters this proxy writes in its Record-Route itself; any other
#: parameter of an entry (``add_rr_param``) is covered by the signature
OWN_RR_PARAMS = frozenset(("lr", "r2", RR_SIGNATURE, "transport"))
#: names ``add_rr_param`` may not use
RESERVED_RR_PARAMS = OWN_RR_PARAMS | {"maddr"}


def signed_params(params):
    """The canonical text of the parameters the signature covers: every URI
    parameter but :data:`OWN_RR_PARAMS`, sorted, as ``name=value;name``
    (empty when there are none, which signs as before they existed)."""
    extra = sorted((n.lower(), v) for n, v in params if n.lower() not in OWN_RR_PARAMS)
    return ";".join(n if v is None else f"{n}={v}" for n, v in extra)


def _params_of(text):
    """``[(name, value)]`` of ``";a=b;c"`` (add_rr_param's checked text)."""
    out = []
    for part in text.split(";"):
        if part:
            name, eq, value = part.partition("=")
            out.append((name, value if eq else None))
    return out


class RouteSet:
    """Signs, writes and follows this proxy's Record-Route entries."""

    __slots__ = ("identity", "stats", "_key", "_boot", "holds_dialog")

    def __init__(self, identity, key, stats):
        self.identity = identity
        self.stats = stats
        self._key = key
        # ``holds_dialog(request)``: True when this node tracks the dialog of
        # an in-dialog request (set by the cluster's dialog takeover); an
        # entry of a node it took over counts as ours only for those
        self.holds_dialog = None
        # connection ids restart at 1 with every run: a token names this run,
        # so one written before a restart never reaches somebody else's connection
        self._boot = os.urandom(4).hex()

    # -- flow tokens (a registered stream connection, relayed by another node) --------
    def flow_token(self, conn):
        """The token naming this run's connection ``conn``: ``BOOT.CONN.SIG``,
        signed with the node secret so that nobody can forge one for another
        connection (the nodes of a cluster share the secret)."""
        data = f"flow\x00{self._boot}\x00{conn}".encode("ascii")
        sig = hashlib.blake2s(data, key=self._key, digest_size=8).hexdigest()
        return f"{self._boot}.{conn}.{sig}"

    def flow_of_token(self, token):
        """The connection id a token of this run names, else None (another
        run's, forged, or malformed)."""
        boot, _, rest = (token or "").partition(".")
        conn, _, sig = rest.partition(".")
        if boot != self._boot or not conn.isdigit() or not sig:
            return None
        expected = self.flow_token(int(conn)).rpartition(".")[2]
        return int(conn) if hmac.compare_digest(sig, expected) else None

    def take_flow_route(self, ctx):
        """When the top Route names this proxy with a :data:`FLOW_PARAM`
        (another node relays a request to a user registered here over a
        stream connection), remove it and return the connection id it names,
        or :data:`FLOW_INVALID` when the token is not a valid one of this
        run; None (nothing removed) for any other request."""
        req = ctx.request
        # most Routes are Record-Route entries coming back, with no flow
        # token: refuse them on the text before parsing anything
        if ";" + FLOW_PARAM + "=" not in req.get("route", ""):
            return None
        uri = req.addresses("route")[0].uri
        token = uri.param(FLOW_PARAM)
        if token is None or not self.identity.is_myself(uri):
            return None
        req.pop_first("route")
        conn = self.flow_of_token(token)
        return FLOW_INVALID if conn is None else conn

    def signature(self, call_id, tag, params=""):
        """The RR_SIGNATURE value for the dialog of ``call_id`` and one party's
        ``tag``, covering the entry's extra parameters ``params`` (the text of
        :func:`signed_params`) so that a peer can neither add nor change one."""
        data = f"{call_id}\x00{tag or ''}"
        if params:
            data = f"{data}\x00{params}"
        return hashlib.blake2s(data.encode("utf-8", "surrogateescape"), key=self._key,
                               digest_size=9).hexdigest()

    def signed_by_us(self, uri, request):
        """True if ``uri`` (one of our Record-Route entries, as sent back in
        Route or a strict-routed Request-URI) carries a valid signature for
        ``request``'s dialog. The caller's tag is in From on requests from
        the caller and in To on requests from the callee: either may match."""
        sig = uri.param(RR_SIGNATURE)
        if not sig:
            return False
        call_id = request.call_id
        params = signed_params(uri.params) if len(uri.params) > 2 else ""
        return (hmac.compare_digest(sig, self.signature(call_id, request.from_tag, params))
                or hmac.compare_digest(sig, self.signature(call_id, request.to_tag, params)))

    def loose_route(self, ctx):
        """RFC 3261 16.4 and 16.12 for an in-dialog request: True when it
        follows a route set this proxy record-routed (and should be relayed).

        Every consecutive Route entry naming this proxy (or, for a dialog it
        tracks, a cluster node whose dialogs it took over:
        ``Identity.is_adopted`` and :attr:`holds_dialog`) is removed (as
        Kamailio does for double Record-Route), so a request listing the proxy many
        times is not bounced through it once per entry. Only a request whose
        removed entry (or strict-routed Request-URI) carries a valid
        RR_SIGNATURE for its dialog is followed: anything else is refused
        (False, counted as ``route_unsigned``), so a stranger cannot make the
        proxy relay a request by writing its address into Route."""
        req = ctx.request
        if not req.has("route"):
            return False
        is_myself = self.identity.is_myself
        signed = None  # an entry of ours whose signature proves the dialog
        last = None  # the last entry of ours: its flow token (if any) leads on
        if is_myself(req.uri) and req.uri.param(RR_SIGNATURE) is not None:
            # the previous hop was a strict router: R-URI is our RR entry,
            # the real target is the last Route (16.4).
            last = req.uri
            if self.signed_by_us(last, req):
                signed = last
            routes = req.values("route")
            req.uri = parse_address(routes[-1], "Route").uri
            req.remove("route")
            for value in routes[:-1]:
                req.add("route", value)
        routes = req.addresses("route") if req.has("route") else []
        # a dead cluster node's entries count as ours for the dialogs taken
        # over from it here (issue 16): they are signed with the shared
        # secret; the requests of its other dialogs stay its own
        is_adopted = self.identity.is_adopted
        holds = self.holds_dialog
        while routes and (is_myself(routes[0].uri) or (
                is_adopted(routes[0].uri) and holds is not None and holds(req))):
            last = routes.pop(0).uri
            req.pop_first("route")
            if signed is None and self.signed_by_us(last, req):
                signed = last
        if signed is None:
            self.stats["route_unsigned"] += 1
            return False
        # check_route_param reads the parameters of the entry that proved the dialog
        ctx.route_params = signed
        user = last.user
        if user and user.startswith(FLOW_PREFIX):
            flow = user[len(FLOW_PREFIX):]
            if flow.isdigit() and int(flow) != ctx.source.conn:
                ctx.flow = int(flow)
        return True

    def remove_preloaded_route(self, ctx):
        """Drop preloaded Route headers of an initial request when the first is ours."""
        req = ctx.request
        if not req.has("route"):
            return True
        first = req.addresses("route")[0]
        if not self.identity.is_myself(first.uri):
            return False
        req.remove("route")
        return True

    def add_record_route(self, ctx, fwd, egress, egress_conn=None):
        """Record-Route: one entry, or two when ingress and egress differ (RFC 5658);
        an egress on a connection (a registered flow) carries its flow token too.
        Each entry is signed for the dialog and for the parameters
        ``add_rr_param`` added (``ctx.rr_params``, see loose_route)."""
        req = ctx.request
        extra = ctx.rr_params
        if extra is None:
            sig = f";{RR_SIGNATURE}={self.signature(req.call_id, req.from_tag)}>"
        else:
            sig = f"{extra};{RR_SIGNATURE}=" \
                  f"{self.signature(req.call_id, req.from_tag, signed_params(_params_of(extra)))}>"
        ingress = ctx.source.listener
        # two sockets advertising one address (a worker's shared and own
        # ports, sipdisp/workers) need one entry, as one socket does
        if ingress is None or ((ingress is egress or ingress.rr_uri == egress.rr_uri)
                               and egress_conn in (None, ctx.source.conn)):
            uri = egress.rr_uri
            if ctx.source.conn is not None:
                uri = f"sip:{FLOW_PREFIX}{ctx.source.conn}@{uri[4:]}"
            fwd.prepend("record-route", f"<{uri}{sig}", "Record-Route")
            return
        in_uri = ingress.rr_uri
        if ctx.source.conn is not None:
            in_uri = f"sip:{FLOW_PREFIX}{ctx.source.conn}@{in_uri[4:]}"
        out_uri = egress.rr_uri
        if egress_conn is not None:
            out_uri = f"sip:{FLOW_PREFIX}{egress_conn}@{out_uri[4:]}"
        fwd.prepend("record-route", f"<{in_uri};r2=on{sig}", "Record-Route")
        fwd.prepend("record-route", f"<{out_uri};r2=on{sig}", "Record-Route")
