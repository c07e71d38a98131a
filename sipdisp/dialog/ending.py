"""The requests sipdisp itself sends inside a dialog: the BYEs that hang up a
call (its timeout, ``dlg.end``, a lost keepalive) and the OPTIONS keepalives
of flags ``P`` and ``p``.

Each is a client transaction of the core, built from the dialog's stored
route sets, contacts and CSeqs, and :class:`InDialogClient` owns them: a
BYE's reply is only logged (when not 2xx); a keepalive's reply counts the
party alive, unless it is a 408 or 481, which (like no reply at all) counts
a failure. A party that fails too often is reported to the caller of the
keepalive round, which hangs the call up.
"""

from ..proxy.target import Target
from .dialog import (CALLEE, CALLER, FLAG_PING_CALLEE, FLAG_PING_CALLER, SIDES, next_hop,
                     request_towards)
from .states import CONFIRMED

#: replies to a keepalive that mean the party lost the dialog (else: alive)
KEEPALIVE_FAILURES = (408, 481)


class InDialogClient:
    """Sends BYEs and keepalives as client transactions of ``core`` (a
    ProxyCore; None: nothing is sent) and acts on their replies. Counts
    ``byes_sent``, ``keepalives_sent`` and ``keepalives_failed`` in ``stats``."""

    def __init__(self, core, stats, log, *, keepalive_timeout=4.0, keepalive_failed_limit=1):
        self.core = core
        self.stats = stats
        self.log = log
        self.keepalive_timeout = keepalive_timeout
        self.keepalive_failed_limit = max(1, keepalive_failed_limit)
        # client transaction -> (dialog, side, method, on_lost); the callback
        # travels with the request so this object keeps no reference to the table
        self._inflight = {}

    @property
    def in_flight(self):
        """How many of our requests still wait for a final reply."""
        return len(self._inflight)

    def send_byes(self, dlg, now):
        """Send a BYE to each party, each in the CSeq space of the other one."""
        for side in SIDES:
            if side == CALLER:
                dlg.callee_cseq += 1
                cseq = dlg.callee_cseq
            else:
                dlg.caller_cseq += 1
                cseq = dlg.caller_cseq
            if self._send(dlg, side, "BYE", cseq, now, None):
                self.stats["byes_sent"] += 1

    def keepalive_round(self, dialogs, now, on_lost):
        """Send an in-dialog OPTIONS to each pinged party (flags P and p) of
        every confirmed dialog in ``dialogs``, one at a time per party; a party
        that stops answering is reported as ``on_lost(dialog, side, now)``.
        Returns how many were sent."""
        sent = 0
        for dlg in list(dialogs):
            if dlg.state != CONFIRMED:
                continue
            for side, flag in ((CALLER, FLAG_PING_CALLER), (CALLEE, FLAG_PING_CALLEE)):
                if flag in dlg.flags and side not in dlg.ka_pending:
                    # the CSeq last seen from the other side, unchanged: an equal
                    # CSeq is not out of order (RFC 3261 12.2.2), and the parties'
                    # own later requests still fit
                    cseq = dlg.callee_cseq if side == CALLER else dlg.caller_cseq
                    if self._send(dlg, side, "OPTIONS", max(cseq, 1), now, on_lost):
                        dlg.ka_pending.add(side)
                        self.stats["keepalives_sent"] += 1
                        sent += 1
        return sent

    def _send(self, dlg, side, method, cseq, now, on_lost):
        """One in-dialog request to ``side``; False if there is no way to send it."""
        core = self.core
        if core is None:
            return False
        try:
            proto, host, port, conn = next_hop(dlg, side)
            listener = core.listener_for(proto, host)
            if listener is None:
                self.log.warn("dialog {id}: no {proto} listener to send {method} to the {side}",
                              id=dlg.id, proto=proto, method=method, side=side)
                return False
            branch = core.new_branch()
            request = request_towards(dlg, side, method, cseq, branch, listener,
                                      core.server_header)
        except Exception:
            self.log.failure("dialog {id}: cannot build {method} to the {side}", id=dlg.id,
                             method=method, side=side)
            return False
        if conn is not None and core.flow_target(conn) is None:
            conn = None  # that connection is gone: a new one (TCP/TLS) or none (WS)
        target = Target(proto, host, port, conn, listener)
        timeout = self.keepalive_timeout if method == "OPTIONS" else core.fr_timer
        client = core.start_client(request, target, branch, self, timeout, now)
        self._inflight[client] = (dlg, side, method, on_lost)
        return True

    # ClientTransaction owner protocol
    def on_branch_response(self, txn, response, now):
        """A final reply to a BYE (logged when not 2xx) or a keepalive (408/481: lost)."""
        if response.status < 200:
            return
        entry = self._inflight.pop(txn, None)
        if entry is None:
            return
        dlg, side, method, on_lost = entry
        if method == "OPTIONS":
            self._keepalive_result(dlg, side, response.status not in KEEPALIVE_FAILURES, now,
                                   on_lost)
        elif response.status >= 300:
            self.log.info("dialog {id}: the {side} answered our BYE {status} {reason}",
                          id=dlg.id, side=side, status=response.status, reason=response.reason)

    def on_branch_timeout(self, txn, now):
        """No final reply to a BYE or keepalive in time."""
        entry = self._inflight.pop(txn, None)
        if entry is None:
            return
        dlg, side, method, on_lost = entry
        if method == "OPTIONS":
            self._keepalive_result(dlg, side, False, now, on_lost)
        else:
            self.log.info("dialog {id}: no reply from the {side} to our BYE", id=dlg.id, side=side)

    def _keepalive_result(self, dlg, side, alive, now, on_lost):
        dlg.ka_pending.discard(side)
        if dlg.state != CONFIRMED:
            return
        if alive:
            dlg.ka_failures[side] = 0
            return
        dlg.ka_failures[side] += 1
        self.stats["keepalives_failed"] += 1
        if dlg.ka_failures[side] >= self.keepalive_failed_limit:
            self.log.info("dialog {id}: the {side} does not answer keepalives; ending the call",
                          id=dlg.id, side=side)
            on_lost(dlg, side, now)
