"""The stateful proxy core (RFC 3261 section 16), sans-IO.

``receive(data, source, now)`` takes one datagram or framed stream message
and returns ``[(bytes, Target)]`` to send; ``on_timers(now)`` does the same
for timers; ``next_deadline()`` says when to call it. The core never reads a
clock and never touches a socket.
"""

import hashlib
import hmac
import itertools
import random
from collections import Counter

from sipdisp.logs import Logger, RepeatLimiter, msg_prefix

from ..sip.address import parse_address
from ..sip.errors import SipParseError
from ..sip.headers import split_commas
from ..sip.message import make_response
from ..sip.parser import parse_message
from ..sip.uri import DEFAULT_PORTS
from ..sip.via import MAGIC_COOKIE, parse_via
from ..transaction import TransactionLayer
from ..transaction.server import ACCEPTED, COMPLETED, CONFIRMED
from .context import RequestContext
from .target import STREAM_PROTOS, Target

log = Logger()

SUPPORTED_SCHEMES = frozenset(("sip", "sips", "tel"))
BRANCH_PREFIX = MAGIC_COOKIE + "sd"
FRAMED_PROTOS = frozenset(("tcp", "tls"))
FLOW_PREFIX = "sdf-"
#: Record-Route parameter carrying the dialog's signature: an in-dialog
#: request is relayed only when its Route (or strict-routed Request-URI)
#: names this proxy with a valid one, i.e. the proxy record-routed the dialog
RR_SIGNATURE = "sdsig"
#: ``ctx.vars`` key where a route function (the registrar's ``lookup``)
#: leaves the branches ``relay`` forks to (RFC 3261 16.6, parallel forking)
BRANCHES = "_branches"
# methods counted by name in ``stats[("rcv_request", method)]`` and
# ``("snd_request", method)``; any other method is counted as "OTHER" so a
# peer inventing methods cannot grow the counters (or metric labels) forever.
COUNTED_METHODS = frozenset((
    "INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "INFO", "UPDATE", "PRACK",
    "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH"))


def call_reply_hooks(ctx, response, now):
    """Run ``ctx.reply_hooks`` (see RequestContext.add_reply_hook), each fenced."""
    for hook in ctx.reply_hooks:
        try:
            hook(ctx, response, now)
        except Exception:
            log.failure("reply hook raised for {call_id}", call_id=ctx.request.call_id)


class RouteSuspended(Exception):
    """Raised by a route function to stop the route quietly: the request was
    answered, or it waits for data (a database read) and the function's
    owner continues it later with :meth:`ProxyCore.resume`."""


class ProxyTransaction:
    """A response context (RFC 3261 16.7): one server transaction and its branches."""

    __slots__ = ("core", "ctx", "server", "request", "branches", "best", "canceled",
                 "final_sent", "pending", "last_reply", "final_reply", "ended")

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
        ctx.proxy_txn = self
        if self.server is not None:
            self.server.owner = self

    # -- events from client transactions -------------------------------------
    def on_branch_response(self, branch, response, now):
        """A response on one branch (16.7): forward 1xx/2xx, collect the rest."""
        status = response.status
        ctx = self.ctx
        if ctx is None:
            # released (see _release): only a late 2xx (another fork's, or one
            # that crossed our CANCEL) still has somewhere to go
            if 200 <= status < 300:
                self.core.forward_response(self, response, now)
            return
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


class ProxyCore:
    """Everything between parsed bytes and the bytes to send."""

    def __init__(self, listeners, route, *, t1=0.5, t2=4.0, t4=5.0, fr_timer=30.0,
                 fr_inv_timer=120.0, max_message_size=65535, domains=(),
                 max_forwards=10, server_header="sipdisp", rng=None, secret=None):
        self.listeners = list(listeners)
        self.route = route
        self.layer = TransactionLayer(t1, t2, t4)
        self.fr_timer = fr_timer
        self.fr_inv_timer = fr_inv_timer
        self.max_message_size = max_message_size
        self.max_forwards = max_forwards
        self.server_header = server_header
        self.domains = set(d.lower() for d in domains)
        self.stats = Counter()
        # lines a stranger can trigger per message, rate-limited (log.repeat_limit)
        self.limited_log = RepeatLimiter(log, stats=self.stats)
        self.modules = {}  # subsystems routes may call: dispatcher, registrar ...
        # hook(proxy_txn, status, now) when a proxied request's final reply is sent
        self.txn_end_hooks = []
        rng = rng or random.SystemRandom()
        self._branch_prefix = f"{BRANCH_PREFIX}{rng.getrandbits(32):08x}."
        self._branch_counter = itertools.count(1)
        self._tag_secret = f"{rng.getrandbits(64):016x}"
        # signs Record-Route (RR_SIGNATURE); shared by the nodes of a cluster
        # and kept across restarts (service.py reads it from proxy.secret /
        # proxy.secret_file), random only for a core built without one
        if secret is None:
            secret = rng.getrandbits(256).to_bytes(32, "big")
        elif isinstance(secret, str):
            secret = secret.encode("utf-8")
        self._rr_key = hashlib.blake2s(secret, digest_size=32).digest()
        self._refresh_myself()

    # -- identity ------------------------------------------------------------
    def _refresh_myself(self):
        hosts = set(self.domains)
        ports = set()
        for lst in self.listeners:
            hosts.add(lst.host.lower())
            hosts.add(lst.advertised_host.lower())
            ports.add(lst.port)
            ports.add(lst.advertised_port)
        self._my_hosts = hosts
        self._my_ports = ports
        # (host, port) pairs a request must never be sent to: the proxy itself
        addresses = set()
        for lst in self.listeners:
            for host in (lst.host, lst.advertised_host):
                host = host.lower()
                if host in ("0.0.0.0", "::"):
                    addresses.update((h, lst.port) for h in hosts)
                    addresses.update((h, lst.port) for h in ("127.0.0.1", "::1", "localhost"))
                addresses.add((host, lst.port))
                addresses.add((host, lst.advertised_port))
        self._my_addresses = addresses

    def set_listeners(self, listeners):
        """Replace the listener list (after the edge bound its sockets)."""
        self.listeners = list(listeners)
        self._refresh_myself()

    def is_myself(self, uri):
        """True if ``uri`` names this proxy (host is ours; port, if any, is ours)."""
        if not uri.is_sip:
            return False
        host = uri.host
        if host not in self._my_hosts:
            return False
        if host in self.domains and uri.port is None:
            return True
        port = uri.port
        if port is None:
            port = 5061 if uri.scheme == "sips" else 5060
        return port in self._my_ports

    def local_tag(self, request):
        """A To tag for locally generated replies, stable across retransmissions."""
        seed = f"{self._tag_secret}{request.call_id}{request.via.branch}"
        return hashlib.blake2s(seed.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()

    def rr_signature(self, call_id, tag):
        """The RR_SIGNATURE value for the dialog of ``call_id`` and one party's ``tag``."""
        data = f"{call_id}\x00{tag or ''}".encode("utf-8", "surrogateescape")
        return hashlib.blake2s(data, key=self._rr_key, digest_size=9).hexdigest()

    def _signed_by_us(self, uri, request):
        """True if ``uri`` (one of our Record-Route entries, as sent back in
        Route or a strict-routed Request-URI) carries a valid signature for
        ``request``'s dialog. The caller's tag is in From on requests from
        the caller and in To on requests from the callee: either may match."""
        sig = uri.param(RR_SIGNATURE)
        if not sig:
            return False
        call_id = request.call_id
        return (hmac.compare_digest(sig, self.rr_signature(call_id, request.from_tag))
                or hmac.compare_digest(sig, self.rr_signature(call_id, request.to_tag)))

    def new_branch(self):
        """A unique RFC 3261 branch for a new client transaction."""
        return f"{self._branch_prefix}{next(self._branch_counter):x}"

    def _loop_hash(self, request):
        """RFC 3261 16.6 step 8's loop-detection part of a relayed request's
        branch: what must differ when the request comes back to this proxy
        for it to be a spiral (a new Request-URI or route) and not a loop."""
        data = "\x00".join((str(request.uri), request.get("route") or "", request.call_id,
                            request.get("cseq") or "", request.from_tag or ""))
        return hashlib.blake2s(data.encode("utf-8", "surrogateescape"), key=self._rr_key,
                               digest_size=6).hexdigest()

    def _is_looping(self, request):
        """RFC 3261 16.3 step 4: True if a Via of ours carries the loop hash
        this request would get again, i.e. it came back unchanged."""
        prefix = self._branch_prefix
        for key, _name, value in request.headers:
            if key == "via" and prefix in value:
                break
        else:
            return False
        mine = self._loop_hash(request)
        for via in request.values("via"):
            branch = parse_via(via).branch or ""
            if branch.startswith(prefix) and branch.rpartition(".")[2] == mine:
                return True
        return False

    def _is_own_address(self, host, port):
        """True if sending to ``host``:``port`` would reach this proxy itself."""
        host = host.lower()
        return (host, port) in self._my_addresses or (host in self.domains and port in self._my_ports)

    # -- entry points ----------------------------------------------------------
    def receive(self, data, source, now):
        """Process one message from ``source``; returns what to send."""
        try:
            # a UDP datagram or a WebSocket message delimits the SIP message by
            # itself (RFC 7118 section 5); TCP/TLS frames come from StreamFramer
            msg = parse_message(data, self.max_message_size,
                                datagram=source.proto not in FRAMED_PROTOS)
        except SipParseError as exc:
            return self.reject(exc, source)
        try:
            if msg.is_request:
                self.stats["rcv_requests"] += 1
                self.stats["rcv_request", msg.method if msg.method in COUNTED_METHODS else "OTHER"] += 1
                self._on_request(msg, source, now)
            else:
                self.stats["rcv_replies"] += 1
                self.stats["rcv_reply", msg.status] += 1
                self._on_response(msg, source, now)
        except SipParseError as exc:
            self.stats["parse_errors"] += 1
            if msg.is_request and msg.method != "ACK":
                self._reply_stateless(msg, source, exc.status, exc.reason)
        except Exception:
            self.stats["internal_errors"] += 1
            log.failure("{prefix} error processing message from {src!r}",
                        prefix=msg_prefix(msg), src=source)
        return self.layer.drain()

    def on_timers(self, now):
        """Fire due timers; returns what to send."""
        try:
            self.layer.on_timers(now)
        except Exception:
            self.stats["internal_errors"] += 1
            log.failure("error in transaction timer")
        return self.layer.drain()

    def next_deadline(self):
        """When ``on_timers`` should next be called (None: nothing pending)."""
        return self.layer.next_deadline()

    # -- requests ----------------------------------------------------------------
    def reject(self, exc, source):
        """Answer a message that failed to parse or frame, when it is a request
        we can answer (responses and junk are dropped, RFC 4475 3.1.2.*)."""
        self.stats["parse_errors"] += 1
        msg = exc.message
        # the seed's REQINIT: xlog("Malformed SIP message from $si:$sp")
        self.limited_log.info("core.malformed",
                              "malformed SIP message from {proto}:{host}:{port}: {status} {reason}",
                              proto=source.proto, host=source.host, port=source.port,
                              status=exc.status, reason=exc.reason)
        # Only a Via is needed to answer: RFC 4475 3.3.1 (no Call-ID, From or
        # To) still deserves its 400.
        if msg is not None and msg.is_request and msg.method != "ACK" and msg.has("via"):
            if msg.via is None:
                # answer to the sent-by port (18.2.2) when the top Via parses
                try:
                    msg.via = parse_via(split_commas(msg.get("via"))[0])
                except SipParseError:
                    pass
            self._reply_stateless(msg, source, exc.status, exc.reason)
        return self.layer.drain()

    def _reply_stateless(self, request, source, status, reason):
        resp = make_response(request, status, reason)
        if self.server_header:
            resp.add("server", self.server_header)
        self.layer.send(resp.to_bytes(), self._response_target(request, source))
        self.stats["snd_reply", status] += 1

    def _response_target(self, request, source):
        """Where responses to ``request`` go (RFC 3261 18.2.2, RFC 3581 section 4)."""
        if source.proto in STREAM_PROTOS:
            return Target(source.proto, source.host, source.port, source.conn, source.listener)
        via = request.via
        port = source.port
        if via is not None and via.param("rport") is None:
            port = via.port or 5060
        return Target(source.proto, source.host, port, None, source.listener)

    def _on_request(self, req, source, now):
        via = req.via
        # RFC 3261 18.2.1 and RFC 3581: note where the request really came from.
        rport = via.param("rport")
        if via.host != source.host or rport is not None:
            via.set_param("received", source.host)
            if rport is not None:
                via.set_param("rport", str(source.port))
            self._replace_top_via(req, str(via))
        method = req.method
        layer = self.layer
        if method == "ACK":
            server = layer.find_server(req)
            if server is not None and server.state in (COMPLETED, CONFIRMED):
                server.on_ack(now)  # hop-by-hop ACK for our non-2xx (17.2.1)
                return
            ctx = RequestContext(self, req, source, None, now)
            self._run_route(ctx)
            return
        if method == "CANCEL":
            self._on_cancel(req, source, now)
            return
        server = layer.find_server(req)
        if server is not None:
            server.on_request(now)  # a retransmission: absorbed
            self.stats["absorbed_retransmissions"] += 1
            return
        status = self._sanity(req)
        if status is None and self._is_looping(req):
            self.stats["loops_detected"] += 1
            status = 482, "Loop Detected", ()
        server = layer.create_server(req, self._response_target(req, source), source.proto in STREAM_PROTOS)
        ctx = RequestContext(self, req, source, server, now)
        if status is not None:
            ctx.reply(*status)
            return
        self._run_route(ctx)
        if not ctx.handled:
            layer.remove_server(server)  # the route dropped the request silently

    def _sanity(self, req):
        """RFC 3261 16.3 checks not done by the parser; a (status, reason, headers) or None."""
        if req.uri.scheme not in SUPPORTED_SCHEMES:
            return 416, "Unsupported URI Scheme", ()
        mf = req.get("max-forwards")
        if mf is not None and mf.isdigit() and int(mf) == 0:
            return 483, "Too Many Hops", ()
        proxy_require = req.values("proxy-require")
        if proxy_require and any(proxy_require):
            tags = ", ".join(t for t in proxy_require if t)
            return 420, "Bad Extension", (("unsupported", tags),)
        return None

    def _run_route(self, ctx):
        try:
            self.route(ctx)
        except RouteSuspended:
            pass
        except SipParseError as exc:
            if ctx.server is not None and not ctx.handled:
                ctx.reply(exc.status, exc.reason)
        except Exception:
            self.stats["route_errors"] += 1
            log.failure("{prefix} route raised", prefix=msg_prefix(ctx.request))
            if ctx.server is not None and not ctx.handled:
                ctx.reply(500, "Server Internal Error")

    def resume(self, ctx, now):
        """Run the route again for a request a route function suspended
        (:class:`RouteSuspended`) once its data arrived; not if it was
        CANCELled meanwhile. The caller sends what the layer queued."""
        server = ctx.server
        if server is not None and getattr(server, "canceled", False):
            return
        ctx.now = now
        ctx.handled = False
        self._run_route(ctx)
        if not ctx.handled and server is not None:
            self.layer.remove_server(server)

    def _on_cancel(self, req, source, now):
        layer = self.layer
        server = layer.find_server(req)
        if server is not None:
            server.on_request(now)
            return
        invite = layer.find_invite_for_cancel(req)
        server = layer.create_server(req, self._response_target(req, source), source.proto in STREAM_PROTOS)
        if invite is None:
            self.respond(server, make_response(req, 481, "Call/Transaction Does Not Exist",
                                               to_tag=self.local_tag(req)), now)
            return
        self.respond(server, make_response(req, 200, "OK", to_tag=self.local_tag(req)), now)
        invite.canceled = True
        proxy_txn = invite.owner
        if proxy_txn is not None:
            proxy_txn.cancel(now)
        elif invite.state not in (COMPLETED, ACCEPTED):
            self.respond(invite, make_response(invite.request, 487, "Request Terminated",
                                               to_tag=self.local_tag(invite.request)), now)

    # -- responses ---------------------------------------------------------------
    def _on_response(self, resp, source, now):
        client = self.layer.find_client(resp)
        if client is not None:
            client.on_response(resp, now)
            return
        # No transaction (e.g. a 2xx retransmission after it ended): forward
        # statelessly if the top Via is ours (RFC 3261 16.7 / 18.1.2).
        branch = resp.via.branch or ""
        if not branch.startswith(BRANCH_PREFIX) or not 200 <= resp.status < 300:
            self.stats["dropped_replies"] += 1
            return
        self._pop_via(resp)
        if not resp.has("via"):
            return
        self.layer.send(resp.to_bytes(), self._via_target(resp))
        self.stats["fwd_replies_stateless"] += 1
        self.stats["snd_reply", resp.status] += 1

    def _via_target(self, resp):
        """Next hop of a response: the (new) top Via (18.2.2)."""
        via = parse_via(resp.values("via")[0])
        proto = via.transport.lower()
        host, port = via.response_address()
        return Target(proto, host, port)

    def forward_response(self, proxy_txn, resp, now):
        """Send a downstream response upstream through the server transaction."""
        self._pop_via(resp)
        server = proxy_txn.server
        data = resp.to_bytes()
        if server is None or not server.respond(data, resp.status, now):
            if 200 <= resp.status < 300 and server is not None:
                self.layer.send(data, server.source)  # 2xx after the txn moved on
        self.stats["fwd_replies"] += 1
        self.stats["snd_reply", resp.status] += 1

    def respond(self, server, resp, now):
        """Send a locally generated response through ``server``."""
        if self.server_header and resp.status > 100:
            resp.add("server", self.server_header)
        server.respond(resp.to_bytes(), resp.status, now)
        self.stats["snd_reply", resp.status] += 1

    def reply(self, ctx, status, reason, headers=()):
        """The route's reply (Kamailio sl_send_reply / t_reply)."""
        req = ctx.request
        if req.method == "ACK":
            return
        resp = make_response(req, status, reason, to_tag=self.local_tag(req), extra=headers)
        if ctx.server is not None:
            self.respond(ctx.server, resp, ctx.now)
        else:  # stateless: no transaction (sl_send_reply, challenges)
            if self.server_header:
                resp.add("server", self.server_header)
            self.layer.send(resp.to_bytes(), self._response_target(req, ctx.source))
            self.stats["snd_reply", status] += 1
        if status >= 200 and getattr(ctx, "reply_hooks", None) is not None:
            txn = ctx.proxy_txn
            if txn is None or not txn.branches:  # no transaction end will follow
                call_reply_hooks(ctx, resp, ctx.now)

    @staticmethod
    def _pop_via(msg):
        msg.pop_first("via")

    @staticmethod
    def _replace_top_via(msg, text):
        headers = msg.headers
        for i, (key, name, value) in enumerate(headers):
            if key == "via":
                if "," in value:
                    rest = split_commas(value)[1:]
                    headers[i] = (key, name, ", ".join([text] + rest))
                else:
                    headers[i] = (key, name, text)
                return

    # -- routing helpers -----------------------------------------------------------
    def loose_route(self, ctx):
        """RFC 3261 16.4 and 16.12 for an in-dialog request: True when it
        follows a route set this proxy record-routed (and should be relayed).

        Every consecutive Route entry naming this proxy is removed (as Kamailio
        does for double Record-Route), so a request listing the proxy many
        times is not bounced through it once per entry. Only a request whose
        removed entry (or strict-routed Request-URI) carries a valid
        RR_SIGNATURE for its dialog is followed: anything else is refused
        (False, counted as ``route_unsigned``), so a stranger cannot make the
        proxy relay a request by writing its address into Route."""
        req = ctx.request
        if not req.has("route"):
            return False
        signed = None  # an entry of ours whose signature proves the dialog
        last = None  # the last entry of ours: its flow token (if any) leads on
        if self.is_myself(req.uri) and req.uri.param(RR_SIGNATURE) is not None:
            # the previous hop was a strict router: R-URI is our RR entry,
            # the real target is the last Route (16.4).
            last = req.uri
            if self._signed_by_us(last, req):
                signed = last
            routes = req.values("route")
            req.uri = parse_address(routes[-1], "Route").uri
            req.remove("route")
            for value in routes[:-1]:
                req.add("route", value)
        routes = req.addresses("route") if req.has("route") else []
        while routes and self.is_myself(routes[0].uri):
            last = routes.pop(0).uri
            req.pop_first("route")
            if signed is None and self._signed_by_us(last, req):
                signed = last
        if signed is None:
            self.stats["route_unsigned"] += 1
            return False
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
        if not self.is_myself(first.uri):
            return False
        req.remove("route")
        return True

    # -- relaying ------------------------------------------------------------------
    def relay(self, ctx):
        """Forward ``ctx.request`` to its next hop (16.5 - 16.6); to every
        branch a route function left in ``ctx.vars[BRANCHES]`` (forking)."""
        if BRANCHES in ctx.vars:
            return self.relay_branches(ctx, ctx.vars.pop(BRANCHES))
        req = ctx.request
        if req.method == "ACK":
            return self._relay_stateless(ctx)
        proxy_txn = ctx.proxy_txn
        if proxy_txn is None:
            proxy_txn = ProxyTransaction(self, ctx)
            server = ctx.server
            if req.method == "INVITE" and server is not None and server.last_response is None:
                # 100 Trying once the INVITE is relayed (as Kamailio's t_relay):
                # a request the route answers itself (a challenge, a 404) gets
                # just that answer, no 100 before it
                self.respond(server, make_response(req, 100, "Trying"), ctx.now)
        if proxy_txn.canceled:
            return False
        fwd = req.copy()
        index = len(proxy_txn.branches)
        mf = fwd.get("max-forwards")
        if mf is None:
            fwd.prepend("max-forwards", str(self.max_forwards))
        else:
            fwd.set("max-forwards", str(int(mf) - 1))
        target = self._next_hop(ctx, fwd)
        if target is None:
            if not proxy_txn.branches and not proxy_txn.final_sent:
                ctx.reply(503, "No Transport For Next Hop")
            return False
        if target.conn is None and self._is_own_address(target.host, target.port):
            # to itself: at best a wasted round trip, at worst (a Route or
            # R-URI naming the proxy again and again) an amplifier
            self.stats["loops_refused"] += 1
            if not proxy_txn.branches and not proxy_txn.final_sent:
                ctx.reply(482, "Loop Detected")
            return False
        listener = target.listener
        if ctx.do_record_route:
            self._add_record_route(ctx, fwd, listener, target.conn)
        branch = f"{self.new_branch()}.{self._loop_hash(fwd)}"
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
        target = self._next_hop(ctx, fwd)
        if target is None:
            return False
        if target.conn is None and self._is_own_address(target.host, target.port):
            self.stats["loops_refused"] += 1
            return False
        if ctx.do_record_route:
            self._add_record_route(ctx, fwd, target.listener, target.conn)
        digest = hashlib.blake2s((req.via.branch or req.call_id).encode("utf-8", "surrogateescape"),
                                 digest_size=8).hexdigest()
        fwd.prepend("via", f"{target.listener.via_prefix}{BRANCH_PREFIX}a{digest}", "Via")
        self.layer.send(fwd.to_bytes(), target)
        self.stats["fwd_requests_stateless"] += 1
        self.stats["snd_request", req.method if req.method in COUNTED_METHODS else "OTHER"] += 1
        return True

    def _next_hop(self, ctx, fwd):
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
            conn_target = self.flow_target(ctx.flow)
            if conn_target is not None:
                return conn_target
        listener = self.listener_for(proto, host)
        if listener is None:
            return None
        return Target(proto, host, port, None, listener)

    def flow_target(self, conn_id):
        """A Target for an existing connection; the edge sets ``connections``."""
        lookup = getattr(self, "connections", None)
        if lookup is None:
            return None
        return lookup(conn_id)

    def listener_for(self, proto, host):
        """A listener of ``proto`` in the address family of ``host`` (any of ``proto`` else)."""
        v6 = ":" in host
        fallback = None
        for lst in self.listeners:
            if lst.proto == proto:
                if (":" in lst.host) == v6:
                    return lst
                fallback = fallback or lst
        return fallback

    def _add_record_route(self, ctx, fwd, egress, egress_conn=None):
        """Record-Route: one entry, or two when ingress and egress differ (RFC 5658);
        an egress on a connection (a registered flow) carries its flow token too.
        Each entry is signed for the dialog (RR_SIGNATURE, see loose_route)."""
        req = ctx.request
        sig = f";{RR_SIGNATURE}={self.rr_signature(req.call_id, req.from_tag)}>"
        ingress = ctx.source.listener
        if ingress is None or (ingress is egress and egress_conn in (None, ctx.source.conn)):
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
