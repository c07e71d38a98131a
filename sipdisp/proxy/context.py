"""The route API: what a route (YAML-declared or Python) can do with a request.

Names follow Kamailio's so that operators' habits carry over: ``reply``
(sl_send_reply), ``record_route``, ``loose_route``, ``set_dst`` ($du),
``t_set_fr``, ``t_on_failure``, ``t_relay``, and in a failure route
``t_is_canceled``, ``t_check_status``, ``t_branch_timeout``,
``t_branch_replied``.
"""

from ..sip.uri import parse_uri


class RequestContext:
    """One request as the route sees it, plus the decisions taken on it."""

    __slots__ = ("core", "request", "source", "server", "now", "dst_uri",
                 "fr_timeout", "fr_inv_timeout", "failure_route", "do_record_route",
                 "handled", "flow", "proxy_txn", "failed_branch", "flags", "vars",
                 "reply_hooks", "branches", "auth_user", "received", "reply_route",
                 "branch_route", "bflags", "avps", "rr_params", "route_params", "dropped",
                 "rport_forced", "tape", "tape_pos", "send_socket", "hiding",
                 "final_sent")

    def __init__(self, core, request, source, server, now):
        self.core = core
        self.request = request
        self.source = source
        self.server = server
        self.now = now
        self.dst_uri = None
        self.fr_timeout = core.fr_timer
        self.fr_inv_timeout = core.fr_inv_timer
        self.failure_route = None
        self.do_record_route = False
        self.handled = False
        # a final response went out for this request (core.reply): a second
        # one is refused, whether the transaction still holds it or not
        self.final_sent = False
        self.flow = None
        self.proxy_txn = None
        self.failed_branch = None
        self.flags = set()
        self.vars = {}
        # hook(ctx, response, now) for each reply (dialogs, accounting); None: none
        self.reply_hooks = None
        # the branches the next t_relay forks to (RFC 3261 16.6), each with
        # ``uri``, ``dst``, ``flow`` and ``routes``: the registrar's lookup sets them
        self.branches = None
        # the username the request authenticated as (auth), for the registrar
        self.auth_user = None
        # where the request really came from as a URI (nat fix_nated_register)
        self.received = None
        # force_rport: replies go to the source port whatever the Via says
        self.rport_forced = False
        # the listener to send from (force_send_socket, a dispatcher
        # destination's socket); None: the one the next hop's family picks
        self.send_socket = None
        # what each step and condition of the YAML request route returned, in
        # order, and how far a resumed run has replayed it: a request whose
        # route was suspended (RouteSuspended) runs again from the top, and
        # the steps before the suspension point return what they returned
        # the first time instead of acting twice (Kamailio's t_continue goes
        # on from the suspension point)
        self.tape = []
        self.tape_pos = 0
        # t_on_reply / t_on_branch: routes run per reply / per outgoing branch
        self.reply_route = None
        self.branch_route = None
        # branch flags of the branch being built (setbflag; lookup restores a
        # contact's, save stores them as its cflags): a bit mask
        self.bflags = 0
        # $avp(name): name -> [values], newest last; made on first assignment
        self.avps = None
        # add_rr_param: ";name=value" added (and signed) in our Record-Route
        self.rr_params = None
        # the URI of our Route entry loose_route followed, whose parameters
        # check_route_param reads (formatted only when a route asks)
        self.route_params = None
        # ``dropped`` is set by ``drop`` in a branch route, read only after one ran
        # topology hiding (sipdisp.topoh): an object with ``request(fwd, listener)``,
        # applied to each copy of the request just before the proxy's Via goes
        # on, and ``reply(response)``, returning the reply to send upstream in
        # place of a received one; None (every call without topology_hiding)
        self.hiding = None

    # -- reading the request ------------------------------------------------
    @property
    def method(self):
        """The request method."""
        return self.request.method

    @property
    def ruri(self):
        """The Request-URI (a URI object)."""
        return self.request.uri

    @property
    def has_totag(self):
        """True for in-dialog requests (To has a tag)."""
        return self.request.to_tag is not None

    def is_method(self, *methods):
        """True if the method is one of ``methods`` (``is_method("INVITE|SUBSCRIBE")`` works too)."""
        method = self.request.method
        for m in methods:
            if method in m.split("|"):
                return True
        return False

    def uri_is_myself(self):
        """True if the Request-URI points at this proxy (Kamailio's ``uri == myself``)."""
        return self.core.is_myself(self.request.uri)

    # -- decisions -----------------------------------------------------------
    def reply(self, status, reason, headers=()):
        """Answer the request (statefully when it has a transaction)."""
        self.handled = True
        self.core.reply(self, status, reason, headers)

    def reply_stateless(self, status, reason, headers=()):
        """Answer once, without a transaction (Kamailio's ``sl_send_reply``):
        the reply is never retransmitted and nothing is kept, so a
        retransmitted request runs the route again. Used for challenges, as
        Kamailio sends them, so an unauthenticated INVITE draws one reply and
        holds no memory. Once the request was relayed (a failure route) the
        reply stays stateful."""
        server = self.server
        if server is not None and self.proxy_txn is None:
            self.core.layer.remove_server(server)
            self.server = None
        self.reply(status, reason, headers)

    def record_route(self):
        """Insert Record-Route when the request is relayed (two entries when the
        ingress and egress sockets differ, RFC 5658)."""
        self.do_record_route = True

    def force_rport(self):
        """Kamailio ``force_rport``: answer to the packet's source port as if
        the top Via had ``;rport`` (RFC 3581)."""
        self.core.force_rport(self)

    def loose_route(self):
        """Process Route headers of an in-dialog request (RFC 3261 16.4);
        True when a route set was followed and the request should be relayed."""
        return self.core.loose_route(self)

    def remove_preloaded_route(self):
        """For initial requests: drop Route headers pointing at us; False (and
        the caller should answer 403) when the first one points elsewhere."""
        return self.core.remove_preloaded_route(self)

    def set_dst(self, uri):
        """Send to ``uri`` without changing the Request-URI (Kamailio's ``$du``)."""
        self.dst_uri = parse_uri(uri) if isinstance(uri, str) else uri

    def set_ruri(self, uri):
        """Replace the Request-URI."""
        self.request.uri = parse_uri(uri) if isinstance(uri, str) else uri

    def t_set_fr(self, fr_inv_ms, fr_ms=0):
        """Per-branch final-response timers in milliseconds (0 keeps the default)."""
        if fr_inv_ms:
            self.fr_inv_timeout = fr_inv_ms / 1000.0
        if fr_ms:
            self.fr_timeout = fr_ms / 1000.0

    def t_on_failure(self, route):
        """Run ``route(ctx)`` when every branch failed (no 2xx), before replying."""
        self.failure_route = route

    def t_on_reply(self, route):
        """Run ``route(reply_ctx)`` (a :class:`ReplyContext`) for every reply a
        branch receives, before it is relayed upstream."""
        self.reply_route = route

    def t_on_branch(self, route):
        """Run ``route(ctx)`` once per branch just before it is sent, with
        ``ctx.request`` that branch's copy of the request."""
        self.branch_route = route

    def t_relay(self):
        """Forward the request statefully (statelessly for ACK); True on success."""
        self.handled = True
        return self.core.relay(self)

    relay = t_relay

    # -- failure route helpers ---------------------------------------------
    def t_is_canceled(self):
        """True if the caller CANCELled the transaction."""
        return self.proxy_txn is not None and self.proxy_txn.canceled

    def t_check_status(self, *codes):
        """True if the failed branch's status matches one of ``codes``
        (ints, or strings such as ``"500"`` or ``"5[0-9][0-9]"`` style prefixes ``"5"``)."""
        status = self.failed_status
        if status is None:
            return False
        text = str(status)
        for code in codes:
            code = str(code)
            if text == code or (len(code) < 3 and text.startswith(code)):
                return True
        return False

    @property
    def failed_status(self):
        """Status of the best final reply so far (408 for a local timeout)."""
        txn = self.proxy_txn
        return None if txn is None or txn.best is None else txn.best.status

    def t_branch_timeout(self):
        """True if the failed branch timed out (no final reply in time)."""
        branch = self.failed_branch
        return branch is not None and branch.local_reply

    def t_branch_replied(self):
        """True if the failed branch received any reply at all."""
        branch = self.failed_branch
        return branch is not None and (branch.provisional or not branch.local_reply)

    def add_reply_hook(self, hook):
        """Call ``hook(ctx, response, now)`` for every reply a branch receives
        (status > 100) and for the route's own final reply when nothing was
        relayed (the dialog and accounting modules use it)."""
        hooks = self.reply_hooks
        if hooks is None:
            self.reply_hooks = [hook]
        elif hook not in hooks:
            hooks.append(hook)

    def __repr__(self):
        return f"<RequestContext {self.request.method} {self.request.uri}>"


class ReplyContext:
    """One reply received on a branch, as a reply route (``t_on_reply``) sees
    it: the current message (``request``, named so that the route functions
    that act on "the message" act on the reply, as Kamailio's do) is the
    reply; ``source`` is where it came from, the branch's destination (a
    client transaction's replies come back over the NAT binding or the
    connection its request went out on); ``branch`` the client transaction;
    ``bflags`` that branch's flags. Flags, ``$var`` and ``$avp`` are the
    transaction's, shared with the request route. ``drop`` sets ``dropped``:
    a provisional reply is then not relayed."""

    __slots__ = ("ctx", "request", "source", "branch", "bflags", "now", "dropped", "tape",
                 "tape_pos", "results", "held", "holder")

    def __init__(self, ctx, reply, branch, bflags, now):
        self.ctx = ctx
        # a reply route that waits (Suspender.fetch_reply) is run again on the
        # same reply: its steps replay from the tape as a request route's do,
        # ``results`` holds what it waited for, ``held`` says it is waiting
        # and ``holder`` is the transaction holding the reply meanwhile
        self.tape = []
        self.tape_pos = 0
        self.results = None
        self.held = False
        self.holder = None
        self.request = reply
        self.branch = branch
        self.source = branch.dst if branch.dst is not None else branch.target
        self.bflags = bflags
        self.now = now
        self.dropped = False

    @property
    def reply(self):
        """The reply (the same object as ``request``)."""
        return self.request

    @property
    def core(self):
        """The proxy core."""
        return self.ctx.core

    @property
    def proxy_txn(self):
        """The response context the reply belongs to."""
        return self.ctx.proxy_txn

    @property
    def vars(self):
        """The transaction's ``$var`` values."""
        return self.ctx.vars

    @property
    def flags(self):
        """The transaction's flags (setflag)."""
        return self.ctx.flags

    @property
    def avps(self):
        """The transaction's ``$avp`` lists."""
        return self.ctx.avps

    @avps.setter
    def avps(self, value):
        self.ctx.avps = value

    @property
    def auth_user(self):
        """What the request authenticated as."""
        return self.ctx.auth_user

    @property
    def dst_uri(self):
        """None: a reply has no destination URI (Kamailio's ``$du`` is null here)."""
        return None

    @property
    def failure_route(self):
        """The transaction's failure route (``t_on_failure`` may change it here)."""
        return self.ctx.failure_route

    @failure_route.setter
    def failure_route(self, route):
        self.ctx.failure_route = route

    @property
    def reply_route(self):
        """The transaction's reply route (``t_on_reply`` may change it here)."""
        return self.ctx.reply_route

    @reply_route.setter
    def reply_route(self, route):
        self.ctx.reply_route = route

    @property
    def failed_branch(self):
        """None: no branch has failed while a reply route runs."""
        return None

    def __repr__(self):
        return f"<ReplyContext {self.request.status} {self.request.cseq_method}>"
