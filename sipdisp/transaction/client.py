"""Client transactions (RFC 3261 section 17.1, RFC 6026), one per branch.

Besides the RFC timers (A/E retransmit, D/K/M linger) every branch has the
proxy's final-response timer ``fr``: Kamailio's fr_timer until the first
provisional reply and fr_inv_timer after it (RFC 3261 16.8 Timer C). It is
per branch, so the dispatcher can fail over after two seconds
(``t_set_fr(0, 2000)``) without touching the 32 s Timer B.
"""

from ..sip.message import Request

CALLING = "calling"
TRYING = "trying"
PROCEEDING = "proceeding"
COMPLETED = "completed"
ACCEPTED = "accepted"
TERMINATED = "terminated"


class ClientTransaction:
    """One client transaction; ``owner`` (the TU) receives its events:
    ``on_branch_response(txn, response, now)`` and ``on_branch_timeout(txn, now)``.

    Once a final response was handed to the owner, ``request`` and ``data``
    are dropped (None): the ACK for a non-2xx is built by then, and what is
    left only matches late responses for the 32 s of Timer D or M.
    """

    __slots__ = ("layer", "branch", "method", "call_id", "request", "data", "target",
                 "reliable", "is_invite", "state", "timers", "owner", "interval",
                 "fr_timeout", "fr_inv_timeout", "provisional", "final_status",
                 "cancel_pending", "canceled", "index", "ack", "dst", "local_reply", "done")

    def __init__(self, layer, request, data, target, reliable, branch,
                 fr_timeout, fr_inv_timeout, owner=None, index=0):
        self.layer = layer
        self.request = request
        self.data = data
        self.target = target
        self.reliable = reliable
        self.branch = branch
        self.method = request.method
        self.call_id = request.call_id
        self.is_invite = request.method == "INVITE"
        self.state = CALLING if self.is_invite else TRYING
        self.timers = {}
        self.owner = owner
        self.interval = layer.t1
        self.fr_timeout = fr_timeout
        self.fr_inv_timeout = fr_inv_timeout
        self.provisional = False
        self.final_status = None
        self.cancel_pending = False
        self.canceled = False
        self.index = index
        self.ack = None
        self.dst = None
        self.local_reply = False
        self.done = False

    def start(self, now):
        """Send the request and arm the retransmission and final-response timers."""
        layer = self.layer
        layer.send(self.data, self.target)
        if not self.reliable:
            layer.timers.arm(self, "A" if self.is_invite else "E", now + layer.t1)
        fr = self.fr_timeout
        if not self.is_invite:
            fr = min(fr, 64 * layer.t1)  # Timer F bounds a non-INVITE
        elif fr > 64 * layer.t1:
            # Timer B (17.1.1.2): no reply at all in 64*T1 ends the Calling
            # state even when fr is longer; any reply cancels it
            layer.timers.arm(self, "B", now + 64 * layer.t1)
        layer.timers.arm(self, "fr", now + fr)

    # -- responses -----------------------------------------------------------
    def on_response(self, response, now):
        """Feed a response whose top Via branch matched this transaction."""
        status = response.status
        state = self.state
        timers = self.layer.timers
        if self.is_invite:
            if state in (CALLING, PROCEEDING):
                if status < 200:
                    if state == CALLING:
                        self.state = PROCEEDING
                        timers.cancel(self, "A")
                        timers.cancel(self, "B")
                    if status > 100:
                        # fr_inv from every 1xx but 100, even one after a 100
                        # (Kamailio's restart_fr_on_each_reply): a ringing call
                        # must not die at t_set_fr's short fr
                        self.provisional = True
                        timers.arm(self, "fr", now + self.fr_inv_timeout)
                    elif not self.provisional:
                        self.provisional = True  # a CANCEL may now be sent
                    if self.cancel_pending:
                        self.cancel_pending = False
                        self._send_cancel(now)
                    self.owner.on_branch_response(self, response, now)
                elif status < 300:
                    self.state = ACCEPTED
                    self.final_status = status
                    timers.cancel(self, "A")
                    timers.cancel(self, "B")
                    timers.cancel(self, "fr")
                    timers.arm(self, "M", now + 64 * self.layer.t1)
                    self.owner.on_branch_response(self, response, now)
                    self.request = self.data = None
                else:
                    self.state = COMPLETED
                    self.final_status = status
                    timers.cancel(self, "A")
                    timers.cancel(self, "B")
                    timers.cancel(self, "fr")
                    self.ack = self._make_ack(response)
                    self.layer.send(self.ack, self.target)
                    if self.reliable:
                        self._terminate()
                    else:
                        timers.arm(self, "D", now + 32.0)
                    if not self.local_reply:
                        self.owner.on_branch_response(self, response, now)
                    self.request = self.data = None
            elif state == COMPLETED:
                if status >= 300 and self.ack is not None:
                    self.layer.send(self.ack, self.target)  # lost ACK: re-send
            elif state == ACCEPTED:
                if 200 <= status < 300:
                    self.owner.on_branch_response(self, response, now)
            elif state == TERMINATED and self.local_reply:
                if status >= 300:
                    # the 487 for a branch we already gave up on: ACK it, hop by hop
                    self.layer.send(self._make_ack(response), self.target)
                elif status >= 200:
                    # a 2xx that crossed our CANCEL: the owner must still forward
                    # it (16.7 step 5), else the callee is up and the caller never knows
                    self.owner.on_branch_response(self, response, now)
        else:
            if state in (TRYING, PROCEEDING):
                if status < 200:
                    self.state = PROCEEDING
                    self.provisional = True
                    self.interval = self.layer.t2
                    self.owner.on_branch_response(self, response, now)
                else:
                    self.state = COMPLETED
                    self.final_status = status
                    timers.cancel(self, "E")
                    timers.cancel(self, "fr")
                    if self.reliable:
                        self._terminate()
                    else:
                        timers.arm(self, "K", now + self.layer.t4)
                    self.owner.on_branch_response(self, response, now)
                    self.request = self.data = None

    # -- the TU cancels a pending INVITE branch ---------------------------------
    def cancel(self, now):
        """CANCEL this INVITE branch (RFC 3261 9.1: only after a provisional reply)."""
        if not self.is_invite or self.canceled or self.state not in (CALLING, PROCEEDING):
            return
        if self.provisional:
            self._send_cancel(now)
        else:
            self.cancel_pending = True

    def _send_cancel(self, now):
        self.canceled = True
        req = self.request
        cancel = Request("CANCEL", req.uri)
        via_done = False
        for key, name, value in req.headers:
            if key in ("call-id", "from", "to", "route"):
                cancel.headers.append((key, name, value))
            elif key == "via" and not via_done:  # only the top Via: our branch
                cancel.headers.append((key, name, value.split(",", 1)[0]))
                via_done = True
        cancel.headers.append(("max-forwards", "Max-Forwards", "70"))
        cancel.headers.append(("cseq", "CSeq", f"{req.cseq} CANCEL"))
        cancel.call_id = req.call_id
        cancel.cseq = req.cseq
        cancel.cseq_method = "CANCEL"
        txn = ClientTransaction(self.layer, cancel, cancel.to_bytes(), self.target,
                                self.reliable, self.branch, 64 * self.layer.t1,
                                64 * self.layer.t1, owner=_ABSORB)
        self.layer.add_client(txn)
        txn.start(now)

    def _make_ack(self, response):
        """ACK for a non-2xx final (RFC 3261 17.1.1.3): same branch, To from the reply."""
        req = self.request
        ack = Request("ACK", req.uri)
        via_done = False
        for key, name, value in req.headers:
            if key == "via":
                if not via_done:
                    ack.headers.append((key, name, value.split(",", 1)[0]))
                    via_done = True
            elif key in ("call-id", "from", "route"):
                ack.headers.append((key, name, value))
        to = response.get("to")
        ack.headers.append(("to", "To", to))
        ack.headers.append(("cseq", "CSeq", f"{req.cseq} ACK"))
        ack.headers.append(("max-forwards", "Max-Forwards", "70"))
        return ack.to_bytes()

    # -- timers -------------------------------------------------------------
    def on_timer(self, name, now):
        """A/E retransmit; fr (and B) is the branch timeout; D, K, M end the transaction."""
        layer = self.layer
        if name == "A":
            if self.state == CALLING:
                layer.send(self.data, self.target)
                layer.stats_retransmitted += 1
                self.interval *= 2
                layer.timers.arm(self, "A", now + self.interval)
        elif name == "E":
            if self.state in (TRYING, PROCEEDING):
                layer.send(self.data, self.target)
                layer.stats_retransmitted += 1
                if self.state == TRYING:
                    self.interval = min(2 * self.interval, layer.t2)
                layer.timers.arm(self, "E", now + self.interval)
        elif name == "fr" or name == "B":
            self._branch_timeout(now)
        else:  # D, K, M
            self._terminate()

    def _branch_timeout(self, now):
        """No final reply in time: behave as if a 408 arrived (RFC 3261 16.8)."""
        timers = self.layer.timers
        timers.cancel(self, "A")
        timers.cancel(self, "B")
        timers.cancel(self, "E")
        timers.cancel(self, "fr")
        self.final_status = 408
        self.local_reply = True
        if self.is_invite and self.provisional and not self.canceled:
            self._send_cancel(now)
            # linger long enough to ACK the 487 the CANCEL will provoke
            self.state = TERMINATED
            timers.arm(self, "D", now + 64 * self.layer.t1)
            self.owner.on_branch_timeout(self, now)
            return
        self.owner.on_branch_timeout(self, now)
        self._terminate()

    def _terminate(self):
        self.state = TERMINATED
        timers = self.layer.timers
        for name in list(self.timers):
            timers.cancel(self, name)
        self.layer.remove_client(self)

    def __repr__(self):
        return f"<ClientTransaction {self.method} {self.branch} {self.state}>"


class _AbsorbingOwner:
    """The TU of our own CANCELs: their replies end there (RFC 3261 16.10)."""

    def on_branch_response(self, txn, response, now):
        pass

    def on_branch_timeout(self, txn, now):
        pass


_ABSORB = _AbsorbingOwner()
