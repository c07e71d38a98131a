"""The route functions' side of rtpengine, sans-IO: ``offer``, ``answer``,
``delete``, ``manage`` and ``query`` on the current message (a request in
the request route, a reply in a reply route), and the bookkeeping that
makes the media session follow the call.

The ng command goes to the call's instance (:class:`~.ng.NgClient`); the
route waits for its answer without blocking the proxy: a request's route is
suspended and run again by the :class:`~sipdisp.proxy.suspend.Suspender`
(the steps before replay their results), a reply is held by its
transaction and its reply route run again when the answer is there. The
SDP rtpengine returns replaces the message's (plain or a multipart part).

Every call with a session is remembered (Call-ID -> instance and From tag)
until something ends it: ``delete`` (BYE, CANCEL), a final failure of the
initial INVITE transaction (:meth:`Rtpengine.on_txn_end`, once no branch
is pending), or the dialog's end (:meth:`Rtpengine.on_dialog_ended`: a
timeout, a BYE the proxy sent), so no rtpengine session outlives its call.
"""

from collections import Counter, OrderedDict

from twisted.python.failure import Failure

from ..logs import Logger, RepeatLimiter
from ..proxy.suspend import FetchFailed
from .flags import Flags
from .ng import NgError
from .sdp import sdp_span, set_sdp

log = Logger(namespace="sipdisp.rtpengine")

#: counters in the core's stats (/metrics): ng commands that failed (every
#: instance down, or an error reply), sessions forgotten over max_sessions
FAILED_STAT = "rtpengine_failed"
EVICTED_STAT = "rtpengine_sessions_evicted"


class Session:
    """What the proxy keeps of one call's rtpengine session."""

    __slots__ = ("instance", "from_tag", "answer_in", "answer_out")

    def __init__(self, instance, from_tag):
        self.instance = instance
        self.from_tag = from_tag
        # the last answer, so a retransmitted 2xx is rewritten without a round trip
        self.answer_in = None
        self.answer_out = None


def _is_reply(ctx):
    return not ctx.request.is_request


class Rtpengine:
    """rtpengine control for one proxy core.

    ``client`` is the :class:`~.ng.NgClient`, ``suspender`` the
    :class:`~sipdisp.proxy.suspend.Suspender` that holds requests and replies
    while a command is out; ``max_sessions`` bounds the calls remembered.
    """

    def __init__(self, client, suspender, core=None, max_sessions=100000, clock=None):
        self.client = client
        self.suspender = suspender
        self.core = core
        self.max_sessions = max_sessions
        self.clock = clock
        self.sessions = OrderedDict()  # call_id -> Session, oldest first
        self.stats = Counter()
        self.fail_log = RepeatLimiter(log, limit=1, interval=60.0)
        if core is not None and self.on_txn_end not in core.txn_end_hooks:
            core.txn_end_hooks.append(self.on_txn_end)

    # -- the route functions ----------------------------------------------------
    def offer(self, ctx, flags):
        """rtpengine_offer: the message's SDP through rtpengine; True when rewritten."""
        return self._offer_answer(ctx, "answer" if flags.force_answer else "offer", flags)

    def answer(self, ctx, flags):
        """rtpengine_answer: the message's SDP through rtpengine; True when rewritten."""
        return self._offer_answer(ctx, "answer", flags)

    def manage(self, ctx, flags):
        """rtpengine_manage, as Kamailio's decides: delete on BYE and CANCEL;
        an SDP in an INVITE, UPDATE or PRACK is an offer, in an ACK an answer;
        an SDP in a reply is the answer when its request carried one (else an
        offer); a failure reply leaves the session to the transaction's end."""
        msg = ctx.request
        if msg.is_request:
            method = msg.method
            if method in ("BYE", "CANCEL"):
                return self.delete(ctx, flags)
            if sdp_span(msg) is None:
                return True  # nothing to do, as Kamailio's manage returns
            if method == "ACK":
                return self._offer_answer(ctx, "answer", flags)
            if method in ("INVITE", "UPDATE", "PRACK"):
                return self._offer_answer(ctx, "offer", flags)
            return True
        if msg.status >= 300 or sdp_span(msg) is None:
            return True
        if msg.cseq_method not in ("INVITE", "UPDATE", "PRACK"):
            return True
        request = ctx.ctx.request if ctx.ctx is not None else None
        offered = request is not None and sdp_span(request) is not None
        return self._offer_answer(ctx, "answer" if offered else "offer", flags)

    def delete(self, ctx, flags):
        """rtpengine_delete: end the call's session (the command is sent, not
        waited for); False when no instance is up to send it to."""
        msg = ctx.request
        call_id = flags.call_id or msg.call_id
        from_tag = flags.from_tag or msg.from_tag
        session = self.sessions.pop(call_id, None)
        command = {"command": "delete", "call-id": call_id, "from-tag": from_tag or ""}
        command.update(flags.entries("delete"))
        if session is not None:
            command["from-tag"] = session.from_tag  # the offerer's: rtpengine deletes the call
        return self._send_delete(command, session, ctx.now)

    def query(self, ctx, flags):
        """rtpengine_query: the call's session as rtpengine reports it (a dict,
        kept in ``ctx.vars["rtpengine_query"]``); None when it failed."""
        msg = ctx.request
        call_id = flags.call_id or msg.call_id
        command = {"command": "query", "call-id": call_id}
        if msg.from_tag:
            command["from-tag"] = flags.from_tag or msg.from_tag
        session = self.sessions.get(call_id)
        result = self._run(ctx, "query", command, session)
        if result is None:
            return None
        ctx.vars["rtpengine_query"] = result[1]
        return result[1]

    # -- the work ----------------------------------------------------------------
    def _offer_answer(self, ctx, op, flags):
        msg = ctx.request
        span = sdp_span(msg)
        if span is None:
            return False
        sdp = msg.body[span[0]:span[1]]
        call_id = flags.call_id or msg.call_id
        session = self.sessions.get(call_id)
        reply = not msg.is_request
        if (op == "answer" and reply and session is not None
                and session.answer_in == (msg.to_tag, sdp)):
            set_sdp(msg, session.answer_out, span)  # a retransmitted 2xx
            return True
        command = build_command(op, msg, flags, sdp)
        result = self._run(ctx, op, command, session)
        if result is None:
            return False
        instance, answer = result
        new = answer.get("sdp")
        if not isinstance(new, str):
            self.stats["no_sdp"] += 1
            return False
        new = new.encode("utf-8", "surrogateescape")
        if op == "offer" and session is None:
            self._remember(call_id, Session(instance, command["from-tag"]))
        elif op == "answer" and reply and session is not None:
            session.answer_in, session.answer_out = (msg.to_tag, sdp), new
        # the body may have been replaced meanwhile only by us: find the span again
        set_sdp(msg, new)
        self.stats[op] += 1
        return True

    def _run(self, ctx, op, command, session):
        """``(instance, reply)`` of ``command`` for the message of ``ctx``,
        suspending its route (or holding its reply) until it is there; None
        when it failed (logged once a minute, counted)."""
        key = f"_rtpe_{op}_{ctx.tape_pos}"
        instance = session.instance if session is not None else None
        call_id = command.get("call-id")

        def start():
            return self.client.request(command, call_id, ctx.now, instance)

        try:
            if _is_reply(ctx):
                return self.suspender.fetch_reply(ctx, key, start)
            if ctx.proxy_txn is not None:
                # a failure or branch route: the request left already, nothing
                # can wait here; only an answer already in is used
                cached = ctx.vars.get(key)
                if cached is None or isinstance(cached, Failure):
                    self._failed(op, "rtpengine commands cannot wait in a failure or branch route")
                    return None
                return cached
            return self.suspender.fetch(ctx, key, start)
        except FetchFailed as exc:
            self._failed(op, str(exc))
            return None

    def _failed(self, op, reason):
        self.stats["failed"] += 1
        if self.core is not None:
            self.core.stats[FAILED_STAT] += 1
        self.fail_log.warn("rtpengine-" + op, "rtpengine {op} failed: {reason}",
                           op=op, reason=reason)

    def _send_delete(self, command, session, now):
        instance = session.instance if session is not None else None
        if instance is None and self.client.select(command["call-id"]) is None:
            self._failed("delete", "no rtpengine instance is up")
            return False
        d = self.client.request(command, command["call-id"], now, instance)
        self.stats["delete"] += 1

        def failed(f):
            f.trap(NgError)
            # rtpengine forgot the call already (its own timeout): nothing to undo
            if f.value.instance is None:
                self._failed("delete", f.value.reason)
            return None

        d.addErrback(failed)
        d.addErrback(lambda f: log.failure("rtpengine delete", f))
        return True

    def _remember(self, call_id, session):
        sessions = self.sessions
        sessions[call_id] = session
        while len(sessions) > self.max_sessions:
            old, _ = sessions.popitem(last=False)
            self.stats["evicted"] += 1
            if self.core is not None:
                self.core.stats[EVICTED_STAT] += 1
            self.fail_log.warn("rtpengine-evict",
                               "rtpengine: over rtpengine.max_sessions ({n}): call {cid} forgotten",
                               n=self.max_sessions, cid=old)

    # -- the call's end ------------------------------------------------------------
    def on_txn_end(self, proxy_txn, status, now):
        """A transaction's final went upstream: an initial INVITE that failed
        (>= 300, every branch done: CANCEL's 487, a 486, a timeout) ends the
        call's session."""
        request = proxy_txn.request
        if (status < 300 or request is None or request.method != "INVITE"
                or request.to_tag is not None):
            return
        session = self.sessions.pop(request.call_id, None)
        if session is None:
            return
        self.stats["deleted_failed"] += 1
        self._send_delete({"command": "delete", "call-id": request.call_id,
                           "from-tag": session.from_tag}, session, now)

    def on_dialog_ended(self, dialog, now):
        """The dialog module ended a call (BYE, timeout, a BYE it sent): end
        its session if the route did not."""
        call_id = getattr(dialog, "callid", None)
        session = self.sessions.pop(call_id, None) if call_id else None
        if session is None:
            return
        self.stats["deleted_dialog"] += 1
        self._send_delete({"command": "delete", "call-id": call_id,
                           "from-tag": session.from_tag}, session, now)

    def snapshot(self):
        """Counters, the calls remembered and the retransmission settings (``rtpengine.stats``)."""
        out = dict(self.stats)
        out["sessions"] = len(self.sessions)
        out["pending"] = self.client.pending
        out["timeout"] = self.client.timeout
        out["retries"] = self.client.retries
        return out

    def metrics(self):
        """Prometheus families per instance: commands, errors, timeouts, state."""
        insts = self.client.instances
        yield ("sipdisp_rtpengine_requests_total", "counter", "ng commands sent, by instance.",
               [({"instance": i.url}, i.requests) for i in insts])
        yield ("sipdisp_rtpengine_errors_total", "counter",
               "ng error replies and unreadable replies, by instance.",
               [({"instance": i.url}, i.errors) for i in insts])
        yield ("sipdisp_rtpengine_timeouts_total", "counter",
               "ng commands and pings left unanswered, by instance.",
               [({"instance": i.url}, i.timeouts) for i in insts])
        yield ("sipdisp_rtpengine_up", "gauge",
               "1 when the instance is chosen for new calls (answers, not disabled).",
               [({"instance": i.url}, 1 if i.usable else 0) for i in insts])
        yield ("sipdisp_rtpengine_sessions", "gauge",
               "Calls with an rtpengine session the proxy will delete.", len(self.sessions))


def build_command(op, msg, flags, sdp=None):
    """The ng dictionary of ``op`` for ``msg`` as Kamailio builds it: its
    Call-ID and tags (the offerer's tag is ``from-tag``: swapped for an
    offer in a reply and an answer in a request such as an ACK), the Via
    branch asked for, the flags' entries and the SDP."""
    if not isinstance(flags, Flags):
        raise TypeError("flags must be parsed Flags")
    command = {"command": op}
    command.update(flags.entries(op))
    from_tag, to_tag = msg.from_tag, msg.to_tag
    reply = not msg.is_request
    if (op == "offer" and reply) or (op == "answer" and not reply):
        from_tag, to_tag = to_tag, from_tag
    if flags.from_tag:
        from_tag = flags.from_tag
    if flags.to_tag:
        to_tag = flags.to_tag
    command["call-id"] = flags.call_id or msg.call_id or ""
    command["from-tag"] = from_tag or ""
    if to_tag and (op != "offer" or flags.to):
        command["to-tag"] = to_tag
    if flags.via:
        branch = via_branch(msg, flags.via)
        if branch:
            command["via-branch"] = branch
    if sdp is not None:
        command["sdp"] = sdp
    return command


def via_branch(msg, which):
    """The branch of Via 1 or 2 (3: the first in a request, the second in a reply)."""
    if which == 3:
        which = 1 if msg.is_request else 2
    if which == 1 and msg.via is not None:
        return msg.via.param("branch")
    vias = msg.vias()
    if len(vias) >= which:
        return vias[which - 1].param("branch")
    return None


__all__ = ["Rtpengine", "Session", "build_command", "via_branch"]
