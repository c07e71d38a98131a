"""The stateful proxy core (RFC 3261 section 16), sans-IO.

``receive(data, source, now)`` takes one datagram or framed stream message
and returns ``[(bytes, Target)]`` to send; ``on_timers(now)`` does the same
for timers; ``next_deadline()`` says when to call it. The core never reads a
clock and never touches a socket.

This module parses and dispatches (requests, ACK, CANCEL, responses) and
answers; the rest of the core sits beside it: :mod:`.identity` (who the
proxy is), :mod:`.checks` (sanity, loops), :mod:`.routeset` (signed
Record-Route, loose routing), :mod:`.relay` (forwarding, forking, next hop),
:mod:`.response_context` (a proxied request's branches) and :mod:`.suspend`
(suspend and continue). Subsystems use it through :mod:`.interface`.
"""

import hashlib
import itertools
import random
from collections import Counter

from sipdisp.logs import Logger, RepeatLimiter, msg_prefix

from ..sip.errors import SipParseError
from ..sip.headers import split_commas
from ..sip.message import make_response
from ..sip.parser import parse_message
from ..sip.via import MAGIC_COOKIE, parse_via
from ..transaction import TransactionLayer
from ..transaction.server import ACCEPTED, COMPLETED, CONFIRMED
from .checks import LoopDetector, sanity
from .context import RequestContext
from .identity import Identity
from .interface import Timer
from .relay import COUNTED_METHODS, Relay
from .response_context import call_reply_hooks
from .routeset import RouteSet
from .suspend import RouteSuspended
from .target import STREAM_PROTOS, Flows, Target

log = Logger()

BRANCH_PREFIX = MAGIC_COOKIE + "sd"
FRAMED_PROTOS = frozenset(("tcp", "tls"))
#: Retry-After of the 503 a full transaction table answers (RFC 3261 21.5.4)
BUSY_RETRY_AFTER = "5"


class ProxyCore:
    """Everything between parsed bytes and the bytes to send.

    ``flows`` is the table of open stream connections (:class:`Flows`),
    which the edge fills; a new empty one by default. ``resolver`` answers
    for next hops given as names (:mod:`.failover`). ``modules`` is opaque
    to the core: the subsystems routes may call
    (:class:`sipdisp.routing.plugin.Modules`), where the Python route API
    finds them as ``ctx.core.modules``."""

    def __init__(self, listeners, route, *, t1=0.5, t2=4.0, t4=5.0, fr_timer=30.0,
                 fr_inv_timer=120.0, max_message_size=65535, domains=(),
                 max_forwards=10, server_header="sipdisp", rng=None, secret=None,
                 flows=None, modules=None, record_route=True, resolver=None,
                 max_transactions=0, max_via_headers=70, max_route_headers=30):
        self.route = route
        # proxy.record_route: false makes the route's record_route add nothing
        self.record_route = record_route
        # sip.max_transactions: past it new requests get 503 (_refuse_busy)
        self.layer = TransactionLayer(t1, t2, t4, max_transactions)
        self.fr_timer = fr_timer
        self.fr_inv_timer = fr_inv_timer
        self.max_message_size = max_message_size
        # sip.max_via_headers / sip.max_route_headers: the parser refuses more
        self.max_via_headers = max_via_headers
        self.max_route_headers = max_route_headers
        self.max_forwards = max_forwards
        self.server_header = server_header
        self.modules = modules
        self.flows = flows if flows is not None else Flows()
        # next hops given as names (RFC 3263): sipdisp.dns.NextHops, injected
        # by the service; None sends names to the edge as they are (failover.py)
        self.resolver = resolver
        self.flow_target = self.flows.target
        self.stats = Counter()
        # lines a stranger can trigger per message, rate-limited (log.repeat_limit)
        self.limited_log = RepeatLimiter(log, stats=self.stats)
        # hook(proxy_txn, status, now) when a proxied request's final reply is sent
        self.txn_end_hooks = []
        rng = rng or random.SystemRandom()
        branch_prefix = f"{BRANCH_PREFIX}{rng.getrandbits(32):08x}."
        self._branch_prefix = branch_prefix
        self._branch_counter = itertools.count(1)
        self._tag_secret = f"{rng.getrandbits(64):016x}"
        # signs Record-Route (routeset.RR_SIGNATURE); shared by the nodes of a
        # cluster and kept across restarts (service.py reads it from
        # proxy.secret / proxy.secret_file), random only for a core built without one
        if secret is None:
            secret = rng.getrandbits(256).to_bytes(32, "big")
        elif isinstance(secret, str):
            secret = secret.encode("utf-8")
        key = hashlib.blake2s(secret, digest_size=32).digest()
        self.identity = Identity(listeners, domains)
        self.routeset = RouteSet(self.identity, key, self.stats)
        self.loops = LoopDetector(key, branch_prefix)
        relay = Relay(self, BRANCH_PREFIX + "a")
        self.relay = relay.relay
        self.relay_branches = relay.relay_branches
        self.next_hop = relay.next_hop
        self.is_myself = self.identity.is_myself
        self.listener_for = self.identity.listener_for
        self.listener_named = self.identity.listener_named
        self.loose_route = self.routeset.loose_route
        self.remove_preloaded_route = self.routeset.remove_preloaded_route
        self.rr_signature = self.routeset.signature
        self.flow_token = self.routeset.flow_token

    # -- identity ------------------------------------------------------------
    @property
    def listeners(self):
        """The listeners the proxy sends and receives on."""
        return self.identity.listeners

    @property
    def domains(self):
        """The domains (besides the listen addresses) that name this proxy."""
        return self.identity.domains

    def set_listeners(self, listeners):
        """Replace the listener list (after the edge bound its sockets)."""
        self.identity.set_listeners(listeners)

    # -- what subsystems use (interface.Core) ------------------------------------
    def timer(self, owner, name):
        """A handle on ``owner``'s timer ``name`` in the transaction layer's heap."""
        return Timer(self.layer.timers, owner, name)

    def start_client(self, request, target, branch, owner, timeout, now, index=0):
        """Send ``request`` as a new client transaction owned by ``owner``."""
        client = self.layer.new_client(request, request.to_bytes(), target, target.reliable,
                                       branch, timeout, timeout, owner, index)
        client.start(now)
        return client

    def send(self, data, target):
        """Send ``data`` to ``target`` outside any transaction."""
        self.layer.send(data, target)

    def has_transaction(self, request):
        """True if a CANCEL's or ACK's INVITE transaction is live."""
        if request.method == "CANCEL":
            return self.layer.find_invite_for_cancel(request) is not None
        return self.layer.find_server(request) is not None

    def local_tag(self, request):
        """A To tag for locally generated replies, stable across retransmissions."""
        seed = f"{self._tag_secret}{request.call_id}{request.via.branch}"
        return hashlib.blake2s(seed.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()

    def new_branch(self):
        """A unique RFC 3261 branch for a new client transaction."""
        return f"{self._branch_prefix}{next(self._branch_counter):x}"

    # -- entry points ----------------------------------------------------------
    def receive(self, data, source, now):
        """Process one message from ``source``; returns what to send."""
        try:
            # a UDP datagram or a WebSocket message delimits the SIP message by
            # itself (RFC 7118 section 5); TCP/TLS frames come from StreamFramer
            msg = parse_message(data, self.max_message_size,
                                datagram=source.proto not in FRAMED_PROTOS,
                                max_via=self.max_via_headers, max_route=self.max_route_headers)
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

    def transport_failed(self, target, now):
        """A connection to ``target`` could not be opened: the branches sent
        there whose owner fails over (a name's next target, RFC 3263 4.3)
        move on at once; returns what to send."""
        for client in list(self.layer.clients.values()):
            if client.final_status is None and client.target == target:
                handler = getattr(client.owner, "on_transport_error", None)
                if handler is not None:
                    handler(client, now)
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
        if exc.limit is not None:
            # sip.max_via_headers ...: counted apart as refused_<key>
            self.stats["refused_" + exc.limit.rpartition(".")[2]] += 1
            self.limited_log.warn("core.limit." + exc.limit,
                                  "{setting} reached: {reason} from {proto}:{host}:{port}",
                                  setting=exc.limit, reason=exc.reason, proto=source.proto,
                                  host=source.host, port=source.port)
        else:
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

    def _response_target(self, request, source, force_rport=False):
        """Where responses to ``request`` go (RFC 3261 18.2.2, RFC 3581 section 4);
        ``force_rport``: to the source port even without ``;rport`` in the Via."""
        if source.proto in STREAM_PROTOS:
            return Target(source.proto, source.host, source.port, source.conn, source.listener)
        via = request.via
        port = source.port
        if not force_rport and via is not None and via.param("rport") is None:
            port = via.port or 5060
        return Target(source.proto, source.host, port, None, source.listener)

    def force_rport(self, ctx):
        """Kamailio ``force_rport``: treat the request as if its top Via had
        ``;rport`` (RFC 3581 section 4): the Via gets ``received`` and
        ``rport=<source port>``, and every reply, stateful or not, goes to the
        packet's source address and port instead of the Via's sent-by."""
        ctx.rport_forced = True
        req, source = ctx.request, ctx.source
        via = req.via
        if via is not None:
            via.set_param("received", source.host)
            via.set_param("rport", str(source.port))
            self._replace_top_via(req, str(via))
        server = ctx.server
        if server is not None:
            target = server.source
            # the Via's port is often the source port already: keep that target
            if (target.port != source.port or target.host != source.host
                    or target.listener is not source.listener):
                server.source = self._response_target(req, source, True)

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
        if layer.full:
            self._refuse_busy(req, source)
            return
        status = sanity(req)
        if status is None and self.loops.is_looping(req):
            self.stats["loops_detected"] += 1
            status = 482, "Loop Detected", ()
        server = layer.create_server(req, self._response_target(req, source), source.proto in STREAM_PROTOS)
        ctx = RequestContext(self, req, source, server, now)
        if status is not None:
            ctx.reply(*status)
            return
        if req.has("route") and self._relay_to_flow(ctx):
            return
        self._run_route(ctx)
        if not ctx.handled:
            layer.remove_server(server)  # the route dropped the request silently

    def _relay_to_flow(self, ctx):
        """Another node of a cluster relays a request to a user registered
        here over a stream connection: its top Route is ours with a signed
        flow token (routeset.FLOW_PARAM, written by the registrar's shared
        location, issue 16). Relay it over that connection, record-routed so
        in-dialog requests take the same way, without running the route (the
        node that looked the user up ran it); 430 Flow Failed (RFC 5626) when
        the connection is gone, 403 for a token that is not ours. False for
        every other request (the route runs)."""
        conn = self.routeset.take_flow_route(ctx)
        if conn is None:
            return False
        if conn < 0:
            self.stats["flow_token_invalid"] += 1
            self.limited_log.warn("core.flow_token_invalid",
                                  "a Route with a flow token that is not ours from {host}:{port}: 403",
                                  host=ctx.source.host, port=ctx.source.port)
            ctx.reply(403, "Invalid Flow Token")
            return True
        mf = ctx.request.get("max-forwards")
        if mf is not None and mf.strip() in ("0", ""):
            ctx.reply(483, "Too Many Hops")  # the route's REQINIT check, which does not run
            return True
        if self.flow_target(conn) is None:
            self.stats["flow_failed"] += 1
            ctx.reply(430, "Flow Failed")
            return True
        ctx.flow = conn
        ctx.do_record_route = self.record_route
        if ctx.t_relay():
            self.stats["flow_relayed"] += 1
        else:  # a final reply the relay already sent wins (the transaction refuses a second)
            self.stats["flow_failed"] += 1
            ctx.reply(430, "Flow Failed")
        return True

    def _refuse_busy(self, req, source):
        """The transaction table is full (``sip.max_transactions``): answer
        503 statelessly, keeping nothing, rather than growing without end."""
        self.stats["transactions_refused_full"] += 1
        self.limited_log.warn("core.transactions_full",
                              "transaction table full ({max} transactions, "
                              "sip.max_transactions): 503 to {method} from {host}:{port}",
                              max=self.layer.max_transactions, method=req.method,
                              host=source.host, port=source.port)
        resp = make_response(req, 503, "Server Busy", to_tag=self.local_tag(req),
                             extra=(("retry-after", BUSY_RETRY_AFTER),))
        if self.server_header:
            resp.add("server", self.server_header)
        self.layer.send(resp.to_bytes(), self._response_target(req, source))
        self.stats["snd_reply", 503] += 1

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
        ctx.tape_pos = 0  # replay the steps before the suspension point
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
        hiding = proxy_txn.hiding
        if hiding is None:
            self._pop_via(resp)
        else:
            # topology hiding (sipdisp.topoh): a copy with the Vias the request
            # came with, no Record-Route, our Contact; the received reply stays
            # as it is for the dialog module and accounting
            resp = hiding.reply(resp)
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
        if status >= 200:
            if ctx.final_sent:
                # RFC 3261: one final per request. A reliable transaction ends
                # at its final and lets go of the context, so without this a
                # later sl_reply_error would answer again, statelessly
                self.stats["second_final_refused"] += 1
                return
            ctx.final_sent = True
        resp = make_response(req, status, reason, to_tag=self.local_tag(req), extra=headers)
        if ctx.server is not None:
            self.respond(ctx.server, resp, ctx.now)
        else:  # stateless: no transaction (sl_send_reply, challenges)
            if self.server_header:
                resp.add("server", self.server_header)
            forced = getattr(ctx, "rport_forced", False)
            self.layer.send(resp.to_bytes(), self._response_target(req, ctx.source, forced))
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
