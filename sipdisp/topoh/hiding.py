"""Topology hiding, sans-IO (OpenSIPS ``topology_hiding``, Kamailio ``topoh``).

A hidden call is a dialog (the dialog module's) marked with the dialog
variable :data:`FLAGS_VAR`. Each side of it sees the proxy as the other end:

* a request the proxy forwards carries only the proxy's Via (the received
  ones stay with the server transaction and are put back on the replies),
  no Record-Route and no Route of the sender, and a Contact naming the
  proxy with the dialog id in a URI parameter (``did`` by default);
* a reply going back carries the received Vias again, no Record-Route of
  the other side, and the proxy's Contact with the dialog id;
* an in-dialog request comes back to that Contact: :func:`match` finds the
  dialog from the id and turns the request towards the other side (its real
  Contact, its route set, its connection), and the same rewriting applies.

Everything a later request needs lives in the dialog: both Contacts, both
route sets, both parties' addresses (the dialog module keeps them and
refreshes Contacts on re-INVITE and UPDATE; the caller's route set, which
the 2xx does not echo, is set when the dialog is confirmed) and the flags
as a dialog variable; so ``dialog.db_mode`` 1 or 2 keeps hidden calls
across a restart like any other, and the BYEs and keepalives the dialog
module sends itself follow the same routes. The dialog id is signed with
the node secret (``proxy.secret``), which survives restarts too.

The per-request state is a :class:`Hiding` put in ``ctx.hiding``; the proxy
core calls its ``request`` on every copy of the request it sends and its
``reply`` on every reply it relays upstream (sipdisp/proxy/relay.py,
core.py ``forward_response``).
"""

import hmac
from functools import partial

from ..logs import Logger, RepeatLimiter
from ..sip.address import parse_address
from ..sip.uri import parse_uri

#: dialog variable marking a hidden call; its value is the flags ("" or "U")
FLAGS_VAR = "th_flags"
#: ``ctx.vars`` key of the caller's route set (the INVITE's Record-Route, in
#: order) until the 2xx confirms the dialog, which then keeps it as its
#: ``caller_routes`` (the ``caller_route_set`` column)
CALLER_ROUTES = "_th_crs_"
#: dialog variable of a hidden call not answered yet: the early dialog of the
#: latest 1xx with a To tag, ``(to_tag, contact, routes, addr)``,
#: so PRACK and UPDATE find their way before the 2xx (dropped when it comes)
EARLY_VAR = "_th_early"
#: flags of topology_hiding: U keeps the Contact's username on the other side
FLAG_USER = "U"
KNOWN_FLAGS = frozenset(FLAG_USER)
#: longest caller route set the dialog table's caller_route_set column keeps
MAX_ROUTE_SET = 512


def parse_flags(text):
    """``"U"`` -> ``"U"``; ValueError naming a flag sipdisp does not know."""
    flags = "".join(sorted(set(str(text or ""))))
    unknown = set(flags) - KNOWN_FLAGS
    if unknown:
        raise ValueError(f"unknown topology_hiding flag(s) {''.join(sorted(unknown))!r} "
                         "(known: U keep the Contact username)")
    return flags


def dialog_id(core, dlg):
    """The opaque, signed id of ``dlg`` put in the proxy's Contacts:
    ``<hash_entry>.<hash_id>.<signature>``, the signature keyed with the
    node secret over the Call-ID, the caller's tag and the two numbers."""
    ident = f"{dlg.h_entry}.{dlg.h_id}"
    return f"{ident}.{core.rr_signature(dlg.callid, dlg.from_tag, 'th=' + ident)}"


def dialog_of(core, dialogs, did, call_id):
    """The hidden dialog ``did`` names, when its signature holds and it is
    the dialog of ``call_id``; else None."""
    parts = did.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    dlg = dialogs.get((int(parts[0]), int(parts[1])))
    if dlg is None or dlg.callid != call_id or FLAGS_VAR not in dlg.vars:
        return None
    expected = core.rr_signature(dlg.callid, dlg.from_tag, f"th={parts[0]}.{parts[1]}")
    if not hmac.compare_digest(parts[2], expected):
        return None
    return dlg


def proxy_contact(listener, did, param, user=None):
    """``<sip:[user@]host:port[;transport=..];param=did>``: the Contact the
    proxy gives one side in place of the other side's."""
    uri = listener.rr_uri[:-3]  # "sip:host:port[;transport=x]" without ";lr"
    if user:
        uri = f"sip:{user}@{uri[4:]}"
    return f"<{uri};{param}={did}>"


class Hiding:
    """What the proxy core needs to hide one request's topology: the Vias
    it arrived with (``vias``), the listener it arrived on (replies name it
    in their Contact), the dialog id, the Contact parameter name and the
    ``U`` flag. Plain data: no reference back to the request or the dialog,
    so it adds no reference cycle however long a transaction lingers."""

    __slots__ = ("vias", "ingress", "did", "param", "keep_user")

    def __init__(self, vias, ingress, did, param, keep_user):
        self.vias = vias
        self.ingress = ingress
        self.did = did
        self.param = param
        self.keep_user = keep_user

    def request(self, fwd, listener):
        """Strip ``fwd`` (a copy of the request about to get the proxy's Via)
        of the Vias and Record-Routes of the sender's side and put the
        proxy's Contact, on the egress ``listener``, in place of its own."""
        replaced = False
        kept = []
        for header in fwd.headers:
            key = header[0]
            if key == "via" or key == "record-route":
                continue
            if key == "contact":
                if replaced:  # one Contact: ours
                    continue
                replaced = True
                user = _user_of(header[2]) if self.keep_user else None
                header = (key, header[1], proxy_contact(listener, self.did, self.param, user))
            kept.append(header)
        fwd.headers = kept

    def reply(self, response):
        """A copy of ``response`` (received with the proxy's Via on top) to
        send upstream: the Vias the request came with, no Record-Route, the
        proxy's Contact in place of the answering side's."""
        out = response.copy()
        headers = []
        vias_done = False
        replaced = False
        for header in response.headers:
            key = header[0]
            if key == "via":
                if not vias_done:
                    vias_done = True
                    headers.extend(("via", "Via", value) for value in self.vias)
                continue
            if key == "record-route":
                continue
            if key == "contact":
                if replaced or self.ingress is None:
                    continue
                replaced = True
                user = _user_of(header[2]) if self.keep_user else None
                header = (key, header[1], proxy_contact(self.ingress, self.did, self.param, user))
            headers.append(header)
        if not vias_done:
            headers[0:0] = [("via", "Via", value) for value in self.vias]
        out.headers = headers
        return out


def _user_of(value):
    """The username of a Contact value (flag U), None without one."""
    if not value or value.strip() == "*":
        return None
    try:
        return parse_address(value.split(",")[0], "Contact").uri.user or None
    except ValueError:  # SipParseError: a Contact we cannot read keeps no user
        return None


log = Logger(namespace="sipdisp.topoh")
#: lines a stranger can trigger (a forged dialog id), rate-limited
_limited = RepeatLimiter(log)


def hide(ctx, dialogs, flags="", param="did"):
    """``topology_hiding``: make the initial INVITE of ``ctx`` a hidden
    call. Creates its dialog (``create_dialog``, or the one the route
    already created), marks it and stores the caller's route set, drops the
    caller's Route headers and sets ``ctx.hiding`` so the core rewrites the
    forwarded copies and the replies. False (nothing changed) for any other
    request, or when the caller's route set is too long to persist."""
    req = ctx.request
    if req.method != "INVITE" or req.to_tag is not None:
        return False
    stats = ctx.core.stats
    dlg = dialogs.create(ctx)
    if dlg is None:
        return False
    routes = req.values("record-route") if req.has("record-route") else []
    route_text = ",".join(routes)  # as the dialog row stores it
    if len(route_text) > MAX_ROUTE_SET:
        stats["topoh_route_set_too_long"] += 1
        _limited.warn("topoh.route_set", "topology_hiding: the caller's route set of "
                      "{call_id} has {n} characters, more than the {max} a dialog "
                      "row keeps: the call is not hidden", call_id=req.call_id, n=len(route_text),
                      max=MAX_ROUTE_SET)
        return False
    dialogs.set_var(dlg, FLAGS_VAR, flags)
    ctx.vars[CALLER_ROUTES] = routes
    dlg.caller_routes = list(routes)  # for requests of the early dialog
    confirmed = dialogs.callbacks["confirmed"]
    if _confirmed not in confirmed:
        confirmed.append(_confirmed)
    ctx.add_reply_hook(partial(_early_reply, dlg))
    # the caller's preloaded Route set (the entry naming us is gone already,
    # remove_preloaded_route): the callee must not see it
    req.remove("route")
    ctx.do_record_route = False  # our Contact brings in-dialog requests back
    ctx.hiding = Hiding(req.values("via"), ctx.source.listener if ctx.source else None,
                        dialog_id(ctx.core, dlg), param, FLAG_USER in flags)
    stats["topoh_hidden"] += 1
    return True


def _early_reply(dlg, ctx, response, now):
    """Reply hook of a hidden INVITE: a 1xx with a To tag opens an early
    dialog; keep where its requests (PRACK, UPDATE) go until the 2xx."""
    status = response.status
    if status >= 200 or not response.to_tag or dlg.to_tag is not None:
        return
    contacts = response.addresses("contact") if response.has("contact") else []
    if not contacts:
        return
    addr = None
    txn = ctx.proxy_txn
    branch_id = response.via.branch if response.via is not None else None
    for branch in (txn.branches if txn is not None else ()):
        if branch.branch == branch_id:
            t = branch.target
            addr = (t.proto, t.host, t.port, t.conn)
            break
    routes = list(reversed(response.values("record-route")))
    dlg.vars[EARLY_VAR] = (response.to_tag, str(contacts[0].uri), routes, addr)


def _confirmed(dlg, ctx, now):
    """The dialog table's ``confirmed`` callback: a hidden call's route set
    towards the caller is the INVITE's Record-Route, which the callee never
    saw (so the 2xx does not echo it); the dialog keeps it for
    ``topology_hiding_match`` and for the BYEs and keepalives it sends itself."""
    dlg.vars.pop(EARLY_VAR, None)  # in memory only: never a dialog_vars row
    routes = ctx.vars.get(CALLER_ROUTES) if ctx is not None else None
    if routes is not None and FLAGS_VAR in dlg.vars:
        dlg.caller_routes = list(routes)


def match(ctx, dialogs, param="did"):
    """``topology_hiding_match``: for an in-dialog request sent to the
    proxy's Contact of a hidden call, turn it towards the other party (its
    Contact as Request-URI, its route set, the connection it uses) and set
    ``ctx.hiding``; the route then relays it. False when the request names
    no hidden call of ours (counted ``topoh_unmatched``)."""
    req = ctx.request
    did = req.uri.param(param)
    if not did or req.to_tag is None:
        return False
    core = ctx.core
    dlg = dialog_of(core, dialogs.dialogs, did, req.call_id) if core.is_myself(req.uri) else None
    found = _side(dlg, req) if dlg is not None else None
    if found is None:
        core.stats["topoh_unmatched"] += 1
        src = ctx.source
        _limited.info("topoh.unmatched", "topology_hiding_match: {method} from {host}:{port} "
                      "names no hidden call of ours", method=req.method,
                      host=src.host if src else "?", port=src.port if src else "?")
        return False
    contact, routes, addr = found
    req.uri = parse_uri(contact)
    req.remove("route")
    for value in routes:
        req.add("route", value, "Route")
    if not routes and addr is not None:
        proto, host, port, conn = addr
        if conn is not None and core.flow_target(conn) is not None:
            ctx.flow = conn  # the connection that party uses (TCP, WebSocket)
        elif proto == "udp":
            # where that party really is (behind NAT its Contact may not say)
            ctx.set_dst(f"sip:[{host}]:{port}" if ":" in host else f"sip:{host}:{port}")
    ctx.hiding = Hiding(req.values("via"), ctx.source.listener if ctx.source else None,
                        did, param, FLAG_USER in (dlg.vars.get(FLAGS_VAR) or ""))
    core.stats["topoh_matched"] += 1
    return True


def _side(dlg, req):
    """``(contact, routes, addr)`` of the party ``req`` goes to, from its
    tags: the callee's for the caller's requests and the other way round,
    in the confirmed dialog or, before the 2xx, the early one; None when
    the tags are not this dialog's."""
    ft, tt = req.from_tag, req.to_tag
    callee_tag = dlg.to_tag
    early = None
    if callee_tag is None:
        early = dlg.vars.get(EARLY_VAR)
        if early is None:
            return None
        callee_tag = early[0]
    if ft == dlg.from_tag and tt == callee_tag:
        if early is not None:
            return early[1], list(early[2]), early[3]
        return dlg.callee_contact, list(dlg.callee_routes), dlg.callee_addr
    if ft == callee_tag and tt == dlg.from_tag:
        return dlg.caller_contact, list(dlg.caller_routes), dlg.caller_addr
    return None
