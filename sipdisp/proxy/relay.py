"""Forwarding a request (RFC 3261 16.5 - 16.6): one branch per call of
``relay``, parallel forking over the branches a route function chose,
stateless forwarding of ACKs, and the choice of the next hop."""

import hashlib

from sipdisp.logs import Logger, msg_prefix

from ..sip.address import parse_address
from ..sip.headers import split_commas
from ..sip.message import make_response
from ..sip.uri import DEFAULT_PORTS
from .failover import NamedHop, is_numeric, relay_named
from .response_context import ProxyTransaction
from .target import Target

# methods counted by name in ``stats[("rcv_request", method)]`` and
# ``("snd_request", method)``; any other method is counted as "OTHER" so a
# peer inventing methods cannot grow the counters (or metric labels) forever.
COUNTED_METHODS = frozenset((
    "INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "INFO", "UPDATE", "PRACK",
    "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH"))

log = Logger()


class Relay:
    """The forwarding half of the proxy core; ``core`` is the
    :class:`~sipdisp.proxy.core.ProxyCore` it belongs to."""

    __slots__ = ("core", "identity", "routeset", "loops", "layer", "stats", "stateless_prefix")

    def __init__(self, core, stateless_prefix):
        self.core = core
        self.identity = core.identity
        self.routeset = core.routeset
        self.loops = core.loops
        self.layer = core.layer
        self.stats = core.stats
        self.stateless_prefix = stateless_prefix

    def relay(self, ctx):
        """Forward ``ctx.request`` to its next hop (16.5 - 16.6); to every
        branch a route function left in ``ctx.branches`` (forking)."""
        if ctx.branches is not None:
            branches, ctx.branches = ctx.branches, None
            return self.relay_branches(ctx, branches)
        req = ctx.request
        if req.method == "ACK":
            return self._relay_stateless(ctx)
        core = self.core
        proxy_txn = ctx.proxy_txn
        if proxy_txn is None:
            proxy_txn = ProxyTransaction(core, ctx)
            server = ctx.server
            if req.method == "INVITE" and server is not None and server.last_response is None:
                # 100 Trying once the INVITE is relayed (as Kamailio's t_relay):
                # a request the route answers itself (a challenge, a 404) gets
                # just that answer, no 100 before it
                core.respond(server, make_response(req, 100, "Trying"), ctx.now)
        if proxy_txn.canceled:
            return False
        fwd = req.copy()
        index = len(proxy_txn.branches)
        mf = fwd.get("max-forwards")
        if mf is None:
            fwd.prepend("max-forwards", str(core.max_forwards))
        else:
            fwd.set("max-forwards", str(int(mf) - 1))
        branch_route = ctx.branch_route
        if branch_route is None:
            target = self.next_hop(ctx, fwd)
        else:
            # t_on_branch: the route sees and changes this branch's copy; its
            # $du and branch flags are the branch's, not the request's
            dst, bflags = ctx.dst_uri, ctx.bflags
            if not self._branch_route(ctx, branch_route, fwd):
                ctx.dst_uri, ctx.bflags = dst, bflags
                self.stats["branches_dropped"] += 1
                return False
            target = self.next_hop(ctx, fwd)
            branch_flags = ctx.bflags
            ctx.dst_uri, ctx.bflags = dst, bflags
        if target is None:
            if not proxy_txn.branches and not proxy_txn.final_sent:
                ctx.reply(503, "No Transport For Next Hop")
            return False
        flags = ctx.bflags if branch_route is None else branch_flags
        if target.__class__ is NamedHop:  # a name: held for DNS, or failover (failover.py)
            return relay_named(self, ctx, proxy_txn, fwd, target, index, flags, ctx.now)
        return self.send_branch(ctx, proxy_txn, fwd, target, index, flags, ctx.now)

    def send_branch(self, ctx, proxy_txn, fwd, target, index, flags, now, owner=None):
        """Send ``fwd`` to ``target`` as branch ``index`` of ``proxy_txn``
        (a new client transaction whose events go to ``owner``, the
        response context by default); False when it cannot go out."""
        core = self.core
        if target.conn is None and self.identity.is_own_address(target.host, target.port):
            # to itself: at best a wasted round trip, at worst (a Route or
            # R-URI naming the proxy again and again) an amplifier
            self.stats["loops_refused"] += 1
            if not proxy_txn.branches and not proxy_txn.final_sent:
                ctx.reply(482, "Loop Detected")
            return False
        listener = target.listener
        if ctx.do_record_route and core.record_route:  # proxy.record_route: false adds none
            self.routeset.add_record_route(ctx, fwd, listener, target.conn)
        if ctx.hiding is not None:  # topology hiding: strip Via/Record-Route, our Contact
            ctx.hiding.request(fwd, listener)
        branch = f"{core.new_branch()}.{self.loops.loop_hash(fwd)}"
        fwd.prepend("via", listener.via_prefix + branch, "Via")
        data = fwd.to_bytes()
        client = self.layer.new_client(fwd, data, target, target.reliable, branch,
                                       ctx.fr_timeout, ctx.fr_inv_timeout,
                                       owner or proxy_txn, index)
        client.dst = target
        if flags:  # the branch's flags, for its reply route
            proxy_txn.set_branch_flags(index, flags)
        proxy_txn.branches.append(client)
        proxy_txn.pending += 1
        self.stats["fwd_requests"] += 1
        method = fwd.method
        self.stats["snd_request", method if method in COUNTED_METHODS else "OTHER"] += 1
        client.start(now)
        return True

    def _branch_route(self, ctx, route, fwd):
        """Run the branch route ``route`` on ``fwd`` (the branch's copy of the
        request, as ``ctx.request`` meanwhile); False when it dropped the branch.
        A route that raises is logged and the branch goes out as it stands."""
        req = ctx.request
        ctx.request = fwd
        ctx.dropped = False
        try:
            route(ctx)
        except Exception:
            self.stats["route_errors"] += 1
            log.failure("{prefix} branch route raised", prefix=msg_prefix(req))
        finally:
            ctx.request = req
        return not ctx.dropped

    def relay_branches(self, ctx, branches):
        """Parallel forking (RFC 3261 16.6): relay once per branch, each an
        object with ``uri`` (the new Request-URI), ``dst`` ($du or None),
        ``flow`` (a connection id or None) and ``routes`` (Route values to
        put first, such as a registered Path), and optionally ``bflags``
        (the branch flags a registered contact was saved with; the first
        branch keeps the request's, which lookup set from it and the route
        may have changed since). True if any branch went out."""
        req = ctx.request
        headers, dst, flow, bflags = req.headers, ctx.dst_uri, ctx.flow, ctx.bflags
        socket = ctx.send_socket
        sent = False
        try:
            for i, branch in enumerate(branches):
                req.uri = branch.uri
                ctx.dst_uri = branch.dst
                ctx.flow = branch.flow
                ctx.send_socket = getattr(branch, "socket", None) or socket
                if i:
                    flags = getattr(branch, "bflags", None)
                    ctx.bflags = bflags if flags is None else flags
                if branch.routes:
                    req.headers = list(headers)
                    for value in reversed(branch.routes):
                        req.prepend("route", value, "Route")
                if self.relay(ctx):
                    sent = True
                req.headers = headers
        finally:
            req.headers = headers
            if branches:
                req.uri = branches[0].uri
            ctx.dst_uri, ctx.flow, ctx.bflags = dst, flow, bflags
            ctx.send_socket = socket
        return sent

    def _relay_stateless(self, ctx):
        req = ctx.request
        fwd = req.copy()
        mf = fwd.get("max-forwards")
        if mf is not None and mf.isdigit():
            fwd.set("max-forwards", str(max(int(mf) - 1, 0)))
        target = self.next_hop(ctx, fwd)
        if target.__class__ is NamedHop:
            target = self._stateless_named(ctx, target)
        if target is None:
            return False
        if target.conn is None and self.identity.is_own_address(target.host, target.port):
            self.stats["loops_refused"] += 1
            return False
        if ctx.do_record_route and self.core.record_route:
            self.routeset.add_record_route(ctx, fwd, target.listener, target.conn)
        if ctx.hiding is not None:  # topology hiding: an ACK for a 2xx too
            ctx.hiding.request(fwd, target.listener)
        digest = hashlib.blake2s((req.via.branch or req.call_id).encode("utf-8", "surrogateescape"),
                                 digest_size=8).hexdigest()
        fwd.prepend("via", f"{target.listener.via_prefix}{self.stateless_prefix}{digest}", "Via")
        self.layer.send(fwd.to_bytes(), target)
        self.stats["fwd_requests_stateless"] += 1
        self.stats["snd_request", req.method if req.method in COUNTED_METHODS else "OTHER"] += 1
        return True

    def _stateless_named(self, ctx, hop):
        """The first target of a name for a stateless relay (an ACK); on a
        cache miss the ACK is relayed again once the answer is there."""
        if not hop.resolution.done:
            hop.resolution.wait(lambda now: self._relay_stateless(ctx))
            return None
        targets = hop.targets(self)
        return targets[0] if targets else None

    def next_hop(self, ctx, fwd):
        """Target for ``fwd``: $du, else the top Route (strict or loose), else
        the R-URI. A name becomes a :class:`~.failover.NamedHop` when the core
        has a resolver (RFC 3263: its targets, or the DNS answer pending)."""
        uri = ctx.dst_uri
        if uri is None:
            route = fwd.get("route")
            if route is not None:
                first = parse_address(split_commas(route)[0], "Route")
                uri = first.uri
                if uri.param("lr") is None:
                    # strict router next (16.6 step 6): it wants the R-URI slot.
                    fwd.pop_first("route")
                    fwd.add("route", f"<{fwd.uri}>")
                    fwd.uri = uri
            else:
                uri = fwd.uri
        if not uri.is_sip:
            return None
        proto = uri.transport
        host = uri.param("maddr") or uri.host
        port = uri.port
        if port is None:
            port = 5061 if uri.scheme == "sips" else DEFAULT_PORTS.get(proto, 5060)
        if ctx.flow is not None:
            conn_target = self.core.flow_target(ctx.flow)
            if conn_target is not None:
                return conn_target
        resolver = self.core.resolver
        if resolver is not None and not is_numeric(host):
            explicit = uri.param("transport")
            hop = NamedHop(uri.scheme, explicit.lower() if explicit else None, host, uri.port, None)
            hop.resolve(self, ctx.now)
            return hop
        listener = ctx.send_socket
        if listener is None or listener.proto != proto:
            listener = self.identity.listener_for(proto, host)
            if listener is None:
                return None
        return Target(proto, host, port, None, listener)
