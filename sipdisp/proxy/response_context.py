"""The response context of a proxied request (RFC 3261 16.7): one server
transaction, its branches, the best final so far, the failure route and
CANCEL; and the reply hooks subsystems attach to a request."""

from sipdisp.logs import Logger, msg_prefix

from ..sip.message import make_response
from .context import ReplyContext
from .suspend import RouteSuspended

log = Logger()


def call_reply_hooks(ctx, response, now):
    """Run ``ctx.reply_hooks`` (see RequestContext.add_reply_hook), each fenced."""
    for hook in ctx.reply_hooks:
        try:
            hook(ctx, response, now)
        except Exception:
            log.failure("reply hook raised for {call_id}", call_id=ctx.request.call_id)


class ProxyTransaction:
    """A response context (RFC 3261 16.7): one server transaction and its branches."""

    __slots__ = ("core", "ctx", "server", "request", "branches", "best", "canceled",
                 "final_sent", "pending", "last_reply", "final_reply", "ended", "branch_flags",
                 "held", "rewritten", "hiding")

    def __init__(self, core, ctx):
        self.core = core
        self.ctx = ctx
        self.server = ctx.server
        self.request = ctx.request
        self.branches = []
        self.best = None
        self.canceled = False
        self.final_sent = False
        self.pending = 0
        self.last_reply = None  # the final that ended the latest failed branch
        self.final_reply = None  # the final sent upstream, once the transaction ended
        self.ended = False  # txn_end_hooks ran
        self.branch_flags = None  # branch index -> its branch flags, when not 0
        self.held = None  # replies whose reply route waits (rtpengine): [ReplyContext]
        # 2xx bodies the reply route changed: To tag -> (received, relayed), so
        # a retransmission after the release is relayed as the first copy was
        self.rewritten = None
        # topology hiding (ctx.hiding), kept past _release for a late 2xx
        self.hiding = ctx.hiding
        ctx.proxy_txn = self
        if self.server is not None:
            self.server.owner = self

    # -- events from client transactions -------------------------------------
    def on_branch_response(self, branch, response, now, rctx=None):
        """A response on one branch (16.7): forward 1xx/2xx, collect the rest.
        ``rctx`` is the reply route's context of a held reply going on
        (:meth:`continue_reply`)."""
        status = response.status
        ctx = self.ctx
        if ctx is None:
            # released (see _release): only a late 2xx (another fork's, or one
            # that crossed our CANCEL) still has somewhere to go
            if 200 <= status < 300:
                rewritten = self.rewritten
                if rewritten is not None:
                    seen = rewritten.get(response.to_tag)
                    if seen is not None and seen[0] == response.body:
                        response.body = seen[1]
                self.core.forward_response(self, response, now)
            return
        if rctx is None and self.held is not None and status >= 200 and self._holds_final(branch):
            # a retransmission of the final this branch's reply route is
            # still working on: that one goes upstream when it is done
            self.core.stats["replies_absorbed_held"] += 1
            return
        if ctx.reply_route is not None:
            body = response.body  # a held reply's too: it changes when its route goes on
            if self._reply_route(ctx, branch, response, now, rctx):
                return  # a provisional reply the reply route dropped, or a reply held
            if response.body is not body and 200 <= status < 300:
                if self.rewritten is None:
                    self.rewritten = {}
                self.rewritten[response.to_tag] = (body, response.body)
        if status > 100 and ctx.reply_hooks is not None:
            call_reply_hooks(ctx, response, now)
        if status < 200:
            if status > 100 and not self.final_sent:
                self.core.forward_response(self, response, now)
            return
        if status < 300:
            first = not self.final_sent
            self.final_sent = True
            self.core.forward_response(self, response, now)
            self._branch_done(branch)
            self._cancel_others(branch, now)
            if first:
                self.final_reply = response
                self._ended(status, now)
        else:
            self.last_reply = response
            self._consider(response)
            self._branch_done(branch)
            if status >= 600:
                # a 6xx ends the search: CANCEL the branches still pending (16.7 step 5)
                self._cancel_others(branch, now)
            self._maybe_finish(branch, now)
        if self.final_sent and not self.pending:
            self._release()

    def on_branch_timeout(self, branch, now):
        """A branch got no final reply in time: a local 408 (16.8)."""
        if self.ctx is None:
            return
        self.last_reply = make_response(self.request, 408, "Request Timeout",
                                        to_tag=self.core.local_tag(self.request))
        self._consider(self.last_reply)
        self._branch_done(branch)
        self._maybe_finish(branch, now)
        if self.final_sent and not self.pending:
            self._release()

    def on_server_timeout(self, server, now):
        """Timer H: the upstream never ACKed our final; nothing more to do."""

    def on_server_terminated(self, server):
        """The server transaction ended: let go of everything (see _release),
        unless it ended inside the sending of the final (a reliable non-INVITE
        ends at once), before the end hooks ran: the caller releases then."""
        if self.ended or not self.branches:
            self._release()

    def _release(self):
        """The request is answered and every branch has its final (or the
        server transaction ended): drop the request context, the request,
        the replies and the branches. That breaks the references that tie
        them into cycles, so the call is freed by reference counting (a cycle
        waits for a full collection, which stalls a loaded proxy), and what
        lingers for Timers J, L and M is a few small objects instead of the
        whole call (fewer objects for the collector to walk). Branches still
        alive keep this object as their owner and can still report a late
        2xx to it."""
        ctx = self.ctx
        if ctx is None:
            return
        self.ctx = None
        ctx.proxy_txn = None
        ctx.failed_branch = None
        ctx.server = None
        self.request = self.best = self.last_reply = self.final_reply = None
        self.branches = []

    # -- reply routes and branch flags ----------------------------------------------
    def set_branch_flags(self, index, flags):
        """Remember the branch flags branch ``index`` was sent with."""
        if self.branch_flags is None:
            self.branch_flags = {}
        self.branch_flags[index] = flags

    def _reply_route(self, ctx, branch, response, now, rctx=None):
        """Run the reply route (``t_on_reply``) on ``response`` before it is
        relayed; True when the route dropped it (``drop``, provisional replies
        only: a final reply cannot be dropped, as in Kamailio) or holds it
        while it waits (:meth:`~sipdisp.proxy.suspend.Suspender.fetch_reply`:
        :meth:`continue_reply` goes on). A route that raises is logged and
        the reply goes on."""
        if rctx is None:
            flags = self.branch_flags
            rctx = ReplyContext(ctx, response, branch,
                                flags.get(branch.index, 0) if flags else 0, now)
        try:
            ctx.reply_route(rctx)
        except RouteSuspended:
            if not rctx.held:
                return False  # stop_route in a reply route: the reply goes on
            rctx.holder = self
            if self.held is None:
                self.held = []
            self.held.append(rctx)
            self.core.stats["replies_held"] += 1
            return True
        except Exception:
            self.core.stats["route_errors"] += 1
            log.failure("{prefix} reply route raised", prefix=msg_prefix(response))
            return False
        if not rctx.dropped:
            return False
        if response.status >= 200:
            self.core.stats["reply_drop_ignored"] += 1
            log.debug("{prefix} drop of a final reply in a reply route ignored",
                      prefix=msg_prefix(response))
            return False
        self.core.stats["replies_dropped"] += 1
        return True

    def continue_reply(self, rctx, now):
        """A held reply's reply route has what it waited for: run it again
        (its earlier steps replay) and go on with the reply as
        :meth:`on_branch_response` would have."""
        held = self.held
        if held is not None and rctx in held:
            held.remove(rctx)
            if not held:
                self.held = None
        rctx.held = False
        rctx.holder = None
        rctx.tape_pos = 0
        rctx.now = now
        self.on_branch_response(rctx.branch, rctx.request, now, rctx)

    def _holds_final(self, branch):
        for rctx in self.held:
            if rctx.branch is branch and rctx.request.status >= 200:
                return True
        return False

    # -- helpers --------------------------------------------------------------
    def _branch_done(self, branch):
        if not branch.done:  # 2xx retransmissions arrive on a finished branch
            branch.done = True
            self.pending -= 1

    def _consider(self, response):
        """Keep the best final so far (16.7 step 6): 6xx wins, then the lowest class."""
        best = self.best
        if best is None:
            self.best = response
            return
        s, b = response.status, best.status
        if b >= 600:
            return
        if s >= 600 or s // 100 < b // 100:
            self.best = response

    def _cancel_others(self, winner, now):
        for branch in self.branches:
            if branch is not winner and branch.is_invite:
                branch.cancel(now)

    def _maybe_finish(self, branch, now):
        if self.pending > 0 or self.final_sent:
            return
        ctx = self.ctx
        route = ctx.failure_route
        if route is not None:
            ctx.failure_route = None
            ctx.failed_branch = branch
            ctx.handled = False
            ctx.now = now  # new branches time out from now, not from the request's arrival
            try:
                route(ctx)
            except Exception:
                log.failure("{prefix} failure route raised", prefix=msg_prefix(self.request))
            if self.pending > 0 or self.final_sent:
                return
        best = self.best
        if best is None:
            best = make_response(self.request, 500, "Server Internal Error")
        if self.canceled and best.status == 408:
            best = make_response(self.request, 487, "Request Terminated",
                                 to_tag=self.core.local_tag(self.request))
        self.final_sent = True
        self.final_reply = best
        if best.via is self.request.via:  # made by make_response here, not received
            self.core.respond(self.server, best, now)
        else:
            self.core.forward_response(self, best, now)
        self._ended(best.status, now)

    def _ended(self, status, now):
        """The final reply went upstream: tell ``core.txn_end_hooks`` (the
        dispatcher releases call load there), each fenced from the others."""
        self.ended = True
        for hook in self.core.txn_end_hooks:
            try:
                hook(self, status, now)
            except Exception:
                log.failure("transaction end hook raised for {call_id}",
                            call_id=self.request.call_id)

    def cancel(self, now):
        """The caller CANCELled (RFC 3261 16.10): cancel every pending branch."""
        if self.ctx is None:
            return  # released: answered and done
        self.canceled = True
        for branch in self.branches:
            branch.cancel(now)
        if not self.branches and not self.final_sent:
            self.final_sent = True
            self.final_reply = make_response(self.request, 487, "Request Terminated",
                                             to_tag=self.core.local_tag(self.request))
            self.core.respond(self.server, self.final_reply, now)
            self._ended(487, now)
            self._release()
