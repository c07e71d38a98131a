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
                 "reply_hooks", "branches", "auth_user", "received")

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
