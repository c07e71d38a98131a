"""Forwarding a request (RFC 3261 16.5 - 16.6): one branch per call of
``relay``, parallel forking over the branches a route function chose,
stateless forwarding of ACKs, and the choice of the next hop."""

import hashlib

from ..sip.address import parse_address
from ..sip.headers import split_commas
from ..sip.message import make_response
from ..sip.uri import DEFAULT_PORTS
from .response_context import ProxyTransaction
from .target import Target

# methods counted by name in ``stats[("rcv_request", method)]`` and
# ``("snd_request", method)``; any other method is counted as "OTHER" so a
# peer inventing methods cannot grow the counters (or metric labels) forever.
COUNTED_METHODS = frozenset((
    "INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "INFO", "UPDATE", "PRACK",
    "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH"))


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
        target = self.next_hop(ctx, fwd)
        if target is None:
            if not proxy_txn.branches and not proxy_txn.final_sent:
                ctx.reply(503, "No Transport For Next Hop")
            return False
        if target.conn is None and self.identity.is_own_address(target.host, target.port):
            # to itself: at best a wasted round trip, at worst (a Route or
            # R-URI naming the proxy again and again) an amplifier
            self.stats["loops_refused"] += 1
            if not proxy_txn.branches and not proxy_txn.final_sent:
                ctx.reply(482, "Loop Detected")
            return False
        listener = target.listener
        if ctx.do_record_route:
            self.routeset.add_record_route(ctx, fwd, listener, target.conn)
        branch = f"{core.new_branch()}.{self.loops.loop_hash(fwd)}"
        fwd.prepend("via", listener.via_prefix + branch, "Via")
        data = fwd.to_bytes()
        client = self.layer.new_client(fwd, data, target, target.reliable, branch,
                                       ctx.fr_timeout, ctx.fr_inv_timeout, proxy_txn, index)
        client.dst = target
        proxy_txn.branches.append(client)
        proxy_txn.pending += 1
        self.stats["fwd_requests"] += 1
        self.stats["snd_request", req.method if req.method in COUNTED_METHODS else "OTHER"] += 1
        client.start(ctx.now)
        return True

    def relay_branches(self, ctx, branches):
        """Parallel forking (RFC 3261 16.6): relay once per branch, each an
        object with ``uri`` (the new Request-URI), ``dst`` ($du or None),
        ``flow`` (a connection id or None) and ``routes`` (Route values to
        put first, such as a registered Path). True if any branch went out."""
        req = ctx.request
        headers, dst, flow = req.headers, ctx.dst_uri, ctx.flow
        sent = False
        try:
            for branch in branches:
                req.uri = branch.uri
                ctx.dst_uri = branch.dst
                ctx.flow = branch.flow
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
            ctx.dst_uri, ctx.flow = dst, flow
        return sent

    def _relay_stateless(self, ctx):
        req = ctx.request
        fwd = req.copy()
        mf = fwd.get("max-forwards")
        if mf is not None and mf.isdigit():
            fwd.set("max-forwards", str(max(int(mf) - 1, 0)))
        target = self.next_hop(ctx, fwd)
        if target is None:
            return False
        if target.conn is None and self.identity.is_own_address(target.host, target.port):
            self.stats["loops_refused"] += 1
            return False
        if ctx.do_record_route:
            self.routeset.add_record_route(ctx, fwd, target.listener, target.conn)
        digest = hashlib.blake2s((req.via.branch or req.call_id).encode("utf-8", "surrogateescape"),
                                 digest_size=8).hexdigest()
        fwd.prepend("via", f"{target.listener.via_prefix}{self.stateless_prefix}{digest}", "Via")
        self.layer.send(fwd.to_bytes(), target)
        self.stats["fwd_requests_stateless"] += 1
        self.stats["snd_request", req.method if req.method in COUNTED_METHODS else "OTHER"] += 1
        return True

    def next_hop(self, ctx, fwd):
        """Target for ``fwd``: $du, else the top Route (strict or loose), else the R-URI."""
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
        listener = self.identity.listener_for(proto, host)
        if listener is None:
            return None
        return Target(proto, host, port, None, listener)
