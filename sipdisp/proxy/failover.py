"""Next hops given as names (RFC 3263), on the proxy core's side: the
branch held while DNS answers, and failover between the targets of one
name (section 4.3).

The core never blocks on DNS. ``core.resolver`` (injected by the service,
like ``flows``; None: names go to the edge as they are) answers
``resolve(scheme, transport, host, port, now, protos)`` with a resolution:
``done`` and ``targets`` ``[(transport, address, port)]`` from its cache,
or not done, with ``wait(callback)``. On a miss only that branch is held
(:class:`HeldBranch`), not the route: the route has run once, its side
effects (dialogs, accounting, $avp) stay single, and the request's
transaction stays open, absorbing retransmissions and CANCEL, its other
branches going on. When the answer is cached the resolver calls back and
the branch goes out; a name that does not resolve ends the branch with a
local 503 the failure route sees, and ``fr_timeout`` bounds the wait as it
bounds any branch (a local 408).

A name with several targets sends to the first and keeps the rest
(:class:`FailoverOwner`, the branch's owner in place of the response
context): a 503 from the target, a timeout of the branch (no reply before
``fr_timeout`` or Timer B) or a transport error sends the same request to
the next target, within the same transaction and before the failure route
sees anything; only the last target's failure reaches the response context.
"""

import ipaddress

from ..sip.message import make_response
from .target import Target


def is_numeric(host):
    """True for an IPv4 or IPv6 address: no DNS needed."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class NamedHop:
    """The question about a name (scheme, transport, host, port as the URI
    gives them) and the resolver's answer to it."""

    __slots__ = ("scheme", "transport", "host", "port", "resolution")

    def __init__(self, scheme, transport, host, port, resolution):
        self.scheme = scheme
        self.transport = transport
        self.host = host
        self.port = port
        self.resolution = resolution

    def resolve(self, relay, now):
        """Ask the resolver again (after it said an answer came)."""
        self.resolution = relay.core.resolver.resolve(
            self.scheme, self.transport, self.host, self.port, now,
            {lst.proto for lst in relay.identity.listeners})
        return self.resolution

    def targets(self, relay):
        """The resolved targets this proxy has a listener for, in order."""
        out = []
        listener_for = relay.identity.listener_for
        for proto, address, port in self.resolution.targets:
            listener = listener_for(proto, address)
            if listener is not None and listener.proto == proto:
                out.append(Target(proto, address, port, None, listener))
        return out

    def __repr__(self):
        return f"<NamedHop {self.scheme}:{self.host} {self.transport} {self.port}>"


def relay_named(relay, ctx, proxy_txn, fwd, hop, index, flags, now):
    """Send branch ``index`` to the name ``hop`` (a :class:`NamedHop`): at
    once when its targets are cached, else hold it until they are."""
    if not hop.resolution.done:
        HeldBranch(relay, ctx, proxy_txn, fwd, hop, index, flags, now)
        return True
    targets = hop.targets(relay)
    if not targets:
        relay.stats["dns_unresolvable"] += 1
        if not proxy_txn.branches and not proxy_txn.final_sent:
            ctx.reply(503, "Unresolvable Destination")
        return False
    return send_first(relay, ctx, proxy_txn, fwd, targets, index, flags, now)


def send_first(relay, ctx, proxy_txn, fwd, targets, index, flags, now):
    """Send to ``targets[0]``; with more targets, keep a pristine copy of the
    request and the rest for failover."""
    owner = None
    if len(targets) > 1:
        owner = FailoverOwner(relay, ctx, proxy_txn, fwd.copy(), targets[1:], index, flags)
    return relay.send_branch(ctx, proxy_txn, fwd, targets[0], index, flags, now, owner)


class HeldBranch:
    """A branch waiting for the DNS answer about its next hop. It counts as
    pending in the response context (the transaction does not end without
    it) and owns timer ``dns`` in the core's heap, armed at the branch's
    final-response timeout."""

    __slots__ = ("relay", "ctx", "proxy_txn", "fwd", "hop", "index", "flags", "done", "timers",
                 "dst", "target", "provisional", "final_status", "local_reply")

    def __init__(self, relay, ctx, proxy_txn, fwd, hop, index, flags, now):
        self.relay = relay
        self.ctx = ctx
        self.proxy_txn = proxy_txn
        self.fwd = fwd
        self.hop = hop
        self.index = index
        self.flags = flags
        self.done = False
        self.timers = {}
        self.dst = self.target = None
        # what a failure route asks of the branch that failed (t_check_status ...)
        self.provisional = False
        self.final_status = None
        self.local_reply = False
        proxy_txn.pending += 1
        relay.stats["dns_held_branches"] += 1
        relay.core.timer(self, "dns").arm(now + ctx.fr_timeout)
        hop.resolution.wait(self.resume)

    def resume(self, now):
        """The resolver has an answer (or a failure) cached: go on."""
        if self.done:
            return
        proxy_txn = self.proxy_txn
        if proxy_txn.ctx is None:  # released meanwhile (answered, CANCELled with no branch)
            self._finish()
            return
        if proxy_txn.canceled or proxy_txn.final_sent:
            self._finish()
            self.final_status, self.local_reply = 408, True
            proxy_txn.on_branch_timeout(self, now)
            return
        resolution = self.hop.resolve(self.relay, now)
        if not resolution.done:
            resolution.wait(self.resume)
            return
        targets = self.hop.targets(self.relay)
        if not targets:
            self.relay.stats["dns_unresolvable"] += 1
            self._finish()
            self.final_status = 503
            fail_branch(proxy_txn, self, 503, "Unresolvable Destination", now)
            return
        self._finish()
        self.done = True
        proxy_txn.pending -= 1  # the branch sent takes this one's place
        send_first(self.relay, self.ctx, proxy_txn, self.fwd, targets, self.index, self.flags, now)

    def on_timer(self, name, now):
        """The branch's final-response timeout passed with no DNS answer: a local 408."""
        if not self.done:
            self.relay.stats["dns_held_timeouts"] += 1
            self.final_status, self.local_reply = 408, True
            self.proxy_txn.on_branch_timeout(self, now)

    def cancel(self, now):
        """Nothing sent, nothing to CANCEL."""

    def _finish(self):
        self.relay.core.timer(self, "dns").cancel()

    @property
    def is_invite(self):
        """Never CANCELled as an INVITE branch: nothing went out."""
        return False


def fail_branch(proxy_txn, branch, status, reason, now):
    """End ``branch`` with a locally made final ``status`` (as a timeout ends
    one with a 408, RFC 3261 16.8): the failure route sees it."""
    if proxy_txn.ctx is None:
        return
    request = proxy_txn.request
    reply = make_response(request, status, reason, to_tag=proxy_txn.core.local_tag(request))
    proxy_txn.last_reply = reply
    proxy_txn._consider(reply)
    proxy_txn._branch_done(branch)
    proxy_txn._maybe_finish(branch, now)
    if proxy_txn.final_sent and not proxy_txn.pending:
        proxy_txn._release()


class FailoverOwner:
    """The owner of a branch sent to one target of a name with more: a 503,
    a timeout or a transport error moves the branch to the next target
    (RFC 3263 4.3); everything else goes to the response context."""

    __slots__ = ("relay", "ctx", "proxy_txn", "fwd", "targets", "index", "flags")

    def __init__(self, relay, ctx, proxy_txn, fwd, targets, index, flags):
        self.relay = relay
        self.ctx = ctx
        self.proxy_txn = proxy_txn
        self.fwd = fwd
        self.targets = targets
        self.index = index
        self.flags = flags

    def on_branch_response(self, branch, response, now):
        """A 503 before any provisional fails over; the rest is the response context's."""
        if response.status == 503 and not branch.provisional and self._next(branch, now):
            return
        self.proxy_txn.on_branch_response(branch, response, now)

    def on_branch_timeout(self, branch, now):
        """No final in time from a target that never answered: the next target."""
        if not branch.provisional and self._next(branch, now):
            return
        self.proxy_txn.on_branch_timeout(branch, now)

    def on_transport_error(self, branch, now):
        """The request could not be sent (a refused connection): the next target."""
        if branch.final_status is None and self._next(branch, now):
            branch.final_status = 503
            branch._terminate()  # nothing will come back on it: its timers go too

    def _next(self, branch, now):
        proxy_txn = self.proxy_txn
        if (not self.targets or proxy_txn.ctx is None or proxy_txn.canceled
                or proxy_txn.final_sent or branch.done):
            return False
        branch.done = True  # its place in ``pending`` passes to the next target's branch
        proxy_txn.pending -= 1
        target, rest = self.targets[0], self.targets[1:]
        owner = None
        if rest:
            owner = FailoverOwner(self.relay, self.ctx, proxy_txn, self.fwd.copy(), rest,
                                  self.index, self.flags)
        if not self.relay.send_branch(self.ctx, proxy_txn, self.fwd, target, self.index,
                                      self.flags, now, owner):
            branch.done = False  # not sent (a loop to ourselves): the failure stands
            proxy_txn.pending += 1
            return False
        self.relay.stats["dns_failovers"] += 1
        return True
