"""The dialog table, sans-IO: OpenSIPS/Kamailio dialog tracking for the
INVITEs whose route calls ``create_dialog``.

It never reads a clock. Events reach it three ways, all from the core:

* the route (``create``, ``match``, ``validate``) with ``ctx.now``;
* the request's reply hook (provisional replies make a dialog early; the
  route's own final reply, when nothing was relayed, deletes it) and the
  core's transaction-end hook (a 2xx confirms it, a failed INVITE deletes
  it, a BYE ends it, other in-dialog requests update CSeqs and targets);
* its timers in the core's heap: one for the earliest dialog deadline (the
  timeout, or the expiry of an unanswered INVITE), one for keepalive rounds
  and one for the delayed database writes of ``db_mode`` 2.

A dialog whose timeout passes gets a BYE to both parties (flag ``B``, or
``bye_on_timeout``), sent as the core's own client transactions, built from
the stored route sets, contacts and CSeqs. Other modules follow dialogs
through ``callbacks["confirmed"]`` ``(dialog, ctx, now)`` and
``callbacks["ended"]`` ``(dialog, now)``; accounting writes its CDR there.

Persistence (``db_mode`` 1 at once, 2 every ``db_update_period``) goes
through the storage API to Kamailio's ``dialog`` and ``dialog_vars`` tables:
confirmed dialogs only, so calls that never answer cost no database write.
"""

import json
import random
import zlib
from collections import Counter

from ..logs import Logger
from ..proxy.target import Target
from .deadlines import DeadlineQueue
from .dialog import (CALLEE, CALLER, FLAG_BYE, FLAG_PING_CALLEE, FLAG_PING_CALLER, SIDES,
                     Dialog, bits_to_flags, flags_to_bits, next_hop, request_towards,
                     split_route_set)
from .profiles import Profiles
from .states import (CONFIRMED, DELETED, EARLY, STATE_NAMES, UNCONFIRMED, DialogStateError,
                     transition)

#: ``ctx.vars`` key of the dialog ``create_dialog`` made for this INVITE
DLG = "_dlg_"
#: ``ctx.vars`` key caching the match of an in-dialog request: (dialog, direction) or None
MATCHED = "_dlgmatch_"

DOWNSTREAM = "downstream"  # from the caller towards the callee
UPSTREAM = "upstream"      # from the callee towards the caller

HASH_SIZE = 4096
#: replies to a keepalive that mean the party lost the dialog (else: alive)
KEEPALIVE_FAILURES = (408, 481)
#: columns of the dialog table that are strings of a bounded size
_SIZES = {"callid": 255, "from_uri": 255, "from_tag": 128, "to_uri": 255, "to_tag": 128,
          "caller_route_set": 512, "callee_route_set": 512, "caller_contact": 255,
          "callee_contact": 255, "caller_sock": 64, "callee_sock": 64, "req_uri": 255,
          "xdata": 512}


class DialogTable:
    """Every tracked dialog, indexed by ``(hash_entry, hash_id)`` and Call-ID.

    ``core`` (a ProxyCore) is needed for timers and for the BYEs and
    keepalives; ``storage`` (the storage API) for ``db_mode`` 1 and 2.
    """

    def __init__(self, core=None, *, default_timeout=21600.0, early_timeout=300.0,
                 bye_on_timeout=True, keepalive_interval=0.0, keepalive_timeout=4.0,
                 keepalive_failed_limit=1, db_mode=0, db_update_period=60.0, storage=None,
                 profiles=None, unmatched_reply=None, rng=None, log=None):
        if db_mode not in (0, 1, 2):
            raise ValueError(f"db_mode must be 0, 1 or 2, got {db_mode!r}")
        self.default_timeout = default_timeout
        self.early_timeout = early_timeout
        self.bye_on_timeout = bye_on_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.keepalive_failed_limit = max(1, keepalive_failed_limit)
        self.db_mode = db_mode
        self.db_update_period = db_update_period
        self.storage = storage
        self.profiles = profiles if profiles is not None else Profiles()
        self.unmatched_reply = unmatched_reply  # (status, reason) or None
        self.dialogs = {}
        self.by_callid = {}
        self.deadlines = DeadlineQueue()
        self.timers = {}  # the core's TimerHeap keeps our deadlines here
        self.callbacks = {"confirmed": [], "ended": []}
        self.stats = Counter()
        self.log = log or Logger(namespace="sipdisp.dialog")
        self._rng = rng or random.SystemRandom()
        self._next_id = self._rng.getrandbits(30) + 1
        self._armed = None
        self._inflight = {}
        self._dirty = {}
        self.core = None
        if core is not None:
            self.attach(core)

    # -- wiring ----------------------------------------------------------------
    def attach(self, core):
        """Register with ``core``: ``core.modules["dialog"]`` and the
        transaction-end hook that confirms, fails and ends dialogs."""
        self.core = core
        core.modules["dialog"] = self
        if self.on_txn_end not in core.txn_end_hooks:
            core.txn_end_hooks.append(self.on_txn_end)

    def start(self, now):
        """Arm the keepalive round and the delayed writes (``db_mode`` 2)."""
        if self.core is None:
            return
        heap = self.core.layer.timers
        if self.keepalive_interval > 0:
            heap.arm(self, "keepalive", now + self.keepalive_interval)
        if self.db_mode == 2:
            heap.arm(self, "db", now + self.db_update_period)
        self._rearm()

    def stop(self):
        """Disarm every timer (the core's heap forgets cancelled names)."""
        self.timers.clear()
        self._armed = None

    # -- creating and finding ------------------------------------------------
    def create(self, ctx, flags=frozenset(), timeout=None):
        """``create_dialog``: track the initial INVITE of ``ctx`` (once; the
        same dialog on a second call). None for any other request."""
        dlg = ctx.vars.get(DLG)
        if dlg is not None:
            return dlg
        req = ctx.request
        if req.method != "INVITE" or req.to_tag is not None:
            return None
        from_addr = req.address("from")
        to_addr = req.address("to")
        contacts = req.addresses("contact") if req.has("contact") else []
        contact = str(contacts[0].uri) if contacts else str(from_addr.uri)
        src = ctx.source
        listener = src.listener
        h_entry = zlib.crc32(req.call_id.encode("utf-8", "surrogateescape")) % HASH_SIZE
        h_id = self._next_id
        self._next_id = self._next_id % 0x7FFFFFFF + 1
        dlg = Dialog(h_entry, h_id, req.call_id, str(from_addr.uri), req.from_tag,
                     str(to_addr.uri), str(req.uri), req.cseq, contact,
                     (src.proto, src.host, src.port, src.conn), _sock(listener), ctx.now,
                     self.default_timeout if timeout is None else timeout, frozenset(flags))
        self._index(dlg)
        ctx.vars[DLG] = dlg
        ctx.add_reply_hook(self.on_reply)
        self.stats["created"] += 1
        self._schedule(dlg, ctx.now + self.early_timeout)
        return dlg

    def _index(self, dlg):
        self.dialogs[dlg.key] = dlg
        self.by_callid.setdefault(dlg.callid, []).append(dlg)

    def _unindex(self, dlg):
        self.dialogs.pop(dlg.key, None)
        same = self.by_callid.get(dlg.callid)
        if same is not None:
            same[:] = [d for d in same if d is not dlg]
            if not same:
                del self.by_callid[dlg.callid]

    def match(self, request):
        """The dialog of an in-dialog request and its direction
        (``downstream`` from the caller, ``upstream`` from the callee), or None."""
        same = self.by_callid.get(request.call_id)
        if not same:
            return None
        ft, tt = request.from_tag, request.to_tag
        for dlg in same:
            if dlg.to_tag is None:
                continue
            if dlg.from_tag == ft and dlg.to_tag == tt:
                return dlg, DOWNSTREAM
            if dlg.from_tag == tt and dlg.to_tag == ft:
                return dlg, UPSTREAM
        return None

    def match_ctx(self, ctx):
        """``match`` for the request of ``ctx``, cached in ``ctx.vars``; the
        dialog ``create_dialog`` made when the request is its INVITE."""
        vars = ctx.vars
        if MATCHED in vars:
            return vars[MATCHED]
        own = vars.get(DLG)
        found = (own, DOWNSTREAM) if own is not None else (
            self.match(ctx.request) if ctx.request.to_tag is not None else None)
        vars[MATCHED] = found
        return found

    def validate(self, ctx):
        """``validate_dialog``: True if the in-dialog request of ``ctx``
        belongs to a live dialog and its CSeq is not older than the last one
        seen in its direction (RFC 3261 12.2.2; an ACK may repeat it)."""
        found = self.match_ctx(ctx)
        if found is None:
            self.stats["unmatched"] += 1
            return False
        dlg, direction = found
        if dlg.state not in (EARLY, CONFIRMED):
            return False
        req = ctx.request
        if req.method in ("ACK", "CANCEL"):
            return True
        last = dlg.caller_cseq if direction == DOWNSTREAM else dlg.callee_cseq
        if req.cseq is not None and req.cseq < last:
            self.stats["invalid_cseq"] += 1
            return False
        return True

    def find(self, ident):
        """Dialogs by ``"hash_entry:hash_id"`` (as dlg.list shows) or by Call-ID."""
        head, sep, tail = str(ident).partition(":")
        if sep and head.isdigit() and tail.isdigit():
            dlg = self.dialogs.get((int(head), int(tail)))
            if dlg is not None:
                return [dlg]
        return list(self.by_callid.get(ident, ()))

    def set_var(self, dlg, name, value):
        """Set a dialog variable (a string, stored in ``dialog_vars`` with the dialog)."""
        dlg.vars[name] = "" if value is None else str(value)
        if dlg.stored:
            dlg.vars_stored = False
            self._persist(dlg)

    # -- events from the core ----------------------------------------------------
    def on_reply(self, ctx, response, now):
        """Reply hook of a dialog's INVITE: a provisional reply with a To tag
        makes it early; the route's own final reply (nothing relayed) ends it."""
        dlg = ctx.vars.get(DLG)
        if dlg is None or dlg.state == DELETED:
            return
        status = response.status
        txn = ctx.proxy_txn
        if txn is None or not txn.branches:
            if status >= 200:  # answered by the route itself: no call to track
                self._finish(dlg, "failure", now)
            return
        if status < 200 and response.to_tag and dlg.state == UNCONFIRMED:
            dlg.state = transition(dlg.state, "provisional")

    def on_txn_end(self, proxy_txn, status, now):
        """The core's hook: the INVITE's final confirms or fails its dialog;
        an in-dialog request updates or (BYE) ends the dialog it belongs to."""
        request = proxy_txn.request
        ctx = proxy_txn.ctx
        if request.to_tag is None:
            dlg = ctx.vars.get(DLG)
            if dlg is None or dlg.state == DELETED:
                return
            if 200 <= status < 300:
                self._confirm(dlg, proxy_txn, ctx, now)
            else:
                self._finish(dlg, "failure", now)
            return
        if not self.by_callid:
            return
        found = self.match(request)
        if found is None:
            return
        dlg, direction = found
        method = request.method
        if method == "BYE":
            self._finish(dlg, "bye", ctx.now)  # ends when the BYE arrived
            return
        if method in ("ACK", "CANCEL") or request.cseq is None:
            return
        if direction == DOWNSTREAM:
            dlg.caller_cseq = max(dlg.caller_cseq, request.cseq)
        else:
            dlg.callee_cseq = max(dlg.callee_cseq, request.cseq)
        if method in ("INVITE", "UPDATE") and 200 <= status < 300:
            self._refresh_targets(dlg, direction, request, proxy_txn.final_reply)
        self._persist(dlg)

    def _refresh_targets(self, dlg, direction, request, reply):
        """A target refresh (RFC 3261 12.2): new Contacts of both parties."""
        sender = _contact_of(request)
        answerer = _contact_of(reply) if reply is not None else None
        if direction == DOWNSTREAM:
            dlg.caller_contact = sender or dlg.caller_contact
            dlg.callee_contact = answerer or dlg.callee_contact
        else:
            dlg.callee_contact = sender or dlg.callee_contact
            dlg.caller_contact = answerer or dlg.caller_contact

    def _confirm(self, dlg, proxy_txn, ctx, now):
        reply = proxy_txn.final_reply
        try:
            dlg.state = transition(dlg.state, "answer")
        except DialogStateError as exc:
            self.log.warn("dialog {id}: {err}", id=dlg.id, err=exc)
            return
        dlg.answered = now
        dlg.to_tag = reply.to_tag if reply is not None else None
        if reply is not None:
            dlg.answer_code, dlg.answer_reason = reply.status, reply.reason
            dlg.callee_contact = _contact_of(reply)
            rr = reply.values("record-route") if reply.has("record-route") else []
            is_myself = self.core.is_myself if self.core is not None else (lambda uri: False)
            dlg.caller_routes, dlg.callee_routes = split_route_set(rr, is_myself)
            branch_id = reply.via.branch if reply.via is not None else None
            for branch in proxy_txn.branches:
                if branch.branch == branch_id:
                    t = branch.target
                    dlg.callee_addr = (t.proto, t.host, t.port, t.conn)
                    dlg.callee_sock = _sock(t.listener)
                    if dlg.callee_contact is None:
                        dlg.callee_contact = str(branch.request.uri)
                    break
        if dlg.callee_contact is None:
            dlg.callee_contact = dlg.req_uri
        if dlg.to_tag is None:
            self._finish(dlg, "failure", now)  # a 2xx without To tag: nothing to track
            return
        self.stats["confirmed"] += 1
        self._schedule(dlg, now + dlg.lifetime)
        self._run_callbacks("confirmed", dlg, ctx, now)
        self._persist(dlg)

    # -- ending ------------------------------------------------------------------
    def _finish(self, dlg, event, now):
        """Apply an ending event: state deleted, out of the indexes and profiles,
        ``ended`` callbacks, database row removed. False if not allowed now."""
        try:
            new = transition(dlg.state, event)
        except DialogStateError as exc:
            self.log.debug("dialog {id}: {err}", id=dlg.id, err=exc)
            return False
        dlg.state = new
        dlg.ended = now
        dlg.end_reason = event
        self.deadlines.cancel(dlg.key)
        self._unindex(dlg)
        self.stats[f"ended_{event}"] += 1
        self._run_callbacks("ended", dlg, now)
        self.profiles.remove_all(dlg)
        if dlg.stored:
            self._persist(dlg)
        return True

    def end(self, dlg, now, reason="end"):
        """Hang up a confirmed call (``dlg.end``, a failed keepalive): BYE to
        both parties, then the dialog ends. ValueError if it is not confirmed."""
        if dlg.state != CONFIRMED:
            raise ValueError(f"dialog {dlg.id} is {dlg.state_name}, not confirmed")
        dlg.vars.setdefault("end_by", reason)
        self.send_byes(dlg, now)
        self._finish(dlg, "end", now)

    def send_byes(self, dlg, now):
        """Send a BYE to each party, each as a client transaction of the core."""
        for side in SIDES:
            if side == CALLER:
                dlg.callee_cseq += 1
                cseq = dlg.callee_cseq
            else:
                dlg.caller_cseq += 1
                cseq = dlg.caller_cseq
            if self._send(dlg, side, "BYE", cseq, now):
                self.stats["byes_sent"] += 1

    def _send(self, dlg, side, method, cseq, now):
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
        client = core.layer.new_client(request, request.to_bytes(), target, target.reliable,
                                       branch, timeout, timeout, self)
        self._inflight[client] = (dlg, side, method)
        client.start(now)
        return True

    # ClientTransaction owner protocol: replies to our BYEs and keepalives
    def on_branch_response(self, txn, response, now):
        """A final reply to a BYE (logged when not 2xx) or a keepalive (408/481: lost)."""
        if response.status < 200:
            return
        entry = self._inflight.pop(txn, None)
        if entry is None:
            return
        dlg, side, method = entry
        if method == "OPTIONS":
            self._keepalive_result(dlg, side, response.status not in KEEPALIVE_FAILURES, now)
        elif response.status >= 300:
            self.log.info("dialog {id}: the {side} answered our BYE {status} {reason}",
                          id=dlg.id, side=side, status=response.status, reason=response.reason)

    def on_branch_timeout(self, txn, now):
        """No final reply to a BYE or keepalive in time."""
        entry = self._inflight.pop(txn, None)
        if entry is None:
            return
        dlg, side, method = entry
        if method == "OPTIONS":
            self._keepalive_result(dlg, side, False, now)
        else:
            self.log.info("dialog {id}: no reply from the {side} to our BYE", id=dlg.id, side=side)

    # -- keepalives ----------------------------------------------------------------
    def keepalive_round(self, now):
        """Send an in-dialog OPTIONS to each pinged party (flags P and p) of
        every confirmed dialog, one at a time per party; returns how many."""
        sent = 0
        for dlg in list(self.dialogs.values()):
            if dlg.state != CONFIRMED:
                continue
            for side, flag in ((CALLER, FLAG_PING_CALLER), (CALLEE, FLAG_PING_CALLEE)):
                if flag in dlg.flags and side not in dlg.ka_pending:
                    # the CSeq last seen from the other side, unchanged: an equal
                    # CSeq is not out of order (RFC 3261 12.2.2), and the parties'
                    # own later requests still fit
                    cseq = dlg.callee_cseq if side == CALLER else dlg.caller_cseq
                    if self._send(dlg, side, "OPTIONS", max(cseq, 1), now):
                        dlg.ka_pending.add(side)
                        self.stats["keepalives_sent"] += 1
                        sent += 1
        return sent

    def _keepalive_result(self, dlg, side, alive, now):
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
            self.end(dlg, now, reason="keepalive")

    # -- timers --------------------------------------------------------------------
    def _schedule(self, dlg, when):
        self.deadlines.schedule(dlg.key, when)
        self._rearm()

    def _rearm(self):
        """Arm the core timer for the earliest deadline if it is earlier than the armed one."""
        if self.core is None:
            return
        nxt = self.deadlines.next()
        if nxt is None:
            return
        armed = self._armed if "deadline" in self.timers else None
        if armed is None or nxt < armed:
            self.core.layer.timers.arm(self, "deadline", nxt)
            self._armed = nxt

    def on_timer(self, name, now):
        """The core's heap fired one of ours; each dialog is handled on its own."""
        heap = self.core.layer.timers
        if name == "deadline":
            self._armed = None
            for key in self.deadlines.pop_due(now):
                dlg = self.dialogs.get(key)
                if dlg is None:
                    continue
                try:
                    self._expire(dlg, now)
                except Exception:
                    self.log.failure("dialog {id}: timeout handling failed", id=dlg.id)
            self._rearm()
        elif name == "keepalive":
            try:
                self.keepalive_round(now)
            finally:
                if self.keepalive_interval > 0:
                    heap.arm(self, "keepalive", now + self.keepalive_interval)
        elif name == "db":
            try:
                self.flush()
            finally:
                heap.arm(self, "db", now + self.db_update_period)

    def _expire(self, dlg, now):
        if dlg.state == CONFIRMED:
            bye = self.bye_on_timeout or FLAG_BYE in dlg.flags
            self.log.info("dialog {id} ({callid}) timed out after {secs:g} s{bye}",
                          id=dlg.id, callid=dlg.callid, secs=dlg.lifetime,
                          bye="; BYE to both parties" if bye else "")
            if bye:
                self.send_byes(dlg, now)
            self._finish(dlg, "timeout", now)
        else:
            self._finish(dlg, "expire", now)

    def _run_callbacks(self, kind, *args):
        for callback in self.callbacks[kind]:
            try:
                callback(*args)
            except Exception:
                self.log.failure("dialog {kind} callback raised", kind=kind)

    # -- persistence ---------------------------------------------------------------
    def _persist(self, dlg):
        """Write (or, once deleted, remove) a confirmed dialog: now (db_mode 1)
        or at the next flush (db_mode 2)."""
        if self.db_mode == 0 or self.storage is None:
            return
        if self.db_mode == 1:
            self._write(dlg)
        else:
            self._dirty[dlg.key] = dlg

    def flush(self):
        """Write every dialog changed since the last flush (db_mode 2); returns how many."""
        dirty, self._dirty = self._dirty, {}
        for dlg in dirty.values():
            self._write(dlg)
        return len(dirty)

    def _write(self, dlg):
        storage = self.storage
        where = {"hash_entry": dlg.h_entry, "hash_id": dlg.h_id}
        if dlg.state == DELETED:
            if dlg.stored:
                dlg.stored = False
                self._track(storage.delete("dialog", where=dict(where)), "delete")
                self._track(storage.delete("dialog_vars", where=dict(where)), "delete vars of")
            return
        if dlg.state != CONFIRMED:
            return
        self._track(storage.upsert("dialog", dialog_row(dlg), keys=["hash_entry", "hash_id"]),
                    "write")
        if not dlg.vars_stored:
            if dlg.stored:
                self._track(storage.delete("dialog_vars", where=dict(where)), "rewrite vars of")
            for name, value in dlg.vars.items():
                self._track(storage.insert("dialog_vars", dict(
                    where, dialog_key=name[:128], dialog_value=value[:512])), "write a var of")
            dlg.vars_stored = True
        dlg.stored = True
        self.stats["db_writes"] += 1

    def _track(self, d, what):
        def failed(f):
            self.stats["db_errors"] += 1
            self.log.warn("dialog: cannot {what} a dialog row: {err}", what=what,
                          err=f.getErrorMessage())
        d.addErrback(failed)

    def restore(self, rows, var_rows=(), now=0.0):
        """Rebuild confirmed dialogs from ``dialog`` (and ``dialog_vars``) rows
        after a restart; their deadlines and profiles come back with them.
        Returns how many were restored."""
        vars_of = {}
        for row in var_rows:
            key = (int(row["hash_entry"]), int(row["hash_id"]))
            vars_of.setdefault(key, {})[row["dialog_key"]] = row["dialog_value"] or ""
        count = 0
        for row in rows:
            try:
                dlg = dialog_from_row(row, vars_of)
            except Exception as exc:
                self.log.warn("dialog: skipping a bad row of the dialog table: {err}", err=exc)
                continue
            if dlg is None or dlg.key in self.dialogs:
                continue
            self._index(dlg)
            try:
                pairs = json.loads(row.get("xdata") or "{}").get("p") or []
            except ValueError:
                pairs = []
            self.profiles.restore(dlg, [tuple(p) for p in pairs])
            self._schedule(dlg, dlg.answered + dlg.lifetime)
            count += 1
        self.stats["restored"] += count
        return count

    # -- management ------------------------------------------------------------------
    def counts(self):
        """Dialogs in memory by state name."""
        out = {name: 0 for state, name in STATE_NAMES.items() if state != DELETED}
        for dlg in self.dialogs.values():
            out[dlg.state_name] += 1
        return out

    def snapshot(self):
        """``dlg.stats``: dialogs by state, profile sizes and counters."""
        counts = self.counts()
        return {"active": counts["confirmed"], "early": counts["early"],
                "unconfirmed": counts["unconfirmed"], "total": len(self.dialogs),
                "profiles": self.profiles.snapshot(), "counters": dict(self.stats)}

    def metrics(self):
        """Prometheus families: dialogs by state, ended dialogs by reason, BYEs and keepalives."""
        yield ("sipdisp_dialogs", "gauge", "Dialogs in memory, by state.",
               [({"state": name}, n) for name, n in self.counts().items()])
        yield ("sipdisp_dialogs_ended_total", "counter",
               "Dialogs ended, by reason (bye, timeout, end, failure, expire).",
               [({"reason": k[len("ended_"):]}, v) for k, v in sorted(self.stats.items())
                if k.startswith("ended_")])
        yield ("sipdisp_dialog_requests_sent_total", "counter",
               "In-dialog requests sipdisp sent itself, by kind.",
               [({"kind": "bye"}, self.stats["byes_sent"]),
                ({"kind": "keepalive"}, self.stats["keepalives_sent"])])


def dialog_row(dlg):
    """The ``dialog`` table row of a confirmed dialog (Kamailio's columns;
    sipdisp's own data, such as both parties' addresses, in ``xdata``)."""
    xdata = {"c": round(dlg.created, 3), "a": round(dlg.answered, 3),
             "ca": list(dlg.caller_addr[:3]) if dlg.caller_addr else None,
             "ce": list(dlg.callee_addr[:3]) if dlg.callee_addr else None,
             "p": [list(p) for p in dlg.profiles]}
    if dlg.answer_code is not None:
        xdata["r"] = [dlg.answer_code, dlg.answer_reason]
    row = {
        "hash_entry": dlg.h_entry, "hash_id": dlg.h_id, "callid": dlg.callid,
        "from_uri": dlg.from_uri, "from_tag": dlg.from_tag or "", "to_uri": dlg.to_uri,
        "to_tag": dlg.to_tag or "", "caller_cseq": str(dlg.caller_cseq),
        "callee_cseq": str(dlg.callee_cseq),
        "caller_route_set": ",".join(dlg.caller_routes) or None,
        "callee_route_set": ",".join(dlg.callee_routes) or None,
        "caller_contact": dlg.caller_contact or "", "callee_contact": dlg.callee_contact or "",
        "caller_sock": dlg.caller_sock or "", "callee_sock": dlg.callee_sock or "",
        "state": dlg.state, "start_time": int(dlg.answered),
        "timeout": int(dlg.answered + dlg.lifetime), "sflags": flags_to_bits(dlg.flags),
        "iflags": 0, "toroute_name": None, "req_uri": dlg.req_uri or "",
        "xdata": json.dumps(xdata, separators=(",", ":")),
    }
    for name, size in _SIZES.items():
        value = row.get(name)
        if isinstance(value, str) and len(value) > size:
            row[name] = value[:size]
    return row


def dialog_from_row(row, vars_of=None):
    """A confirmed Dialog from a ``dialog`` table row (None for other states)."""
    if int(row["state"]) != CONFIRMED:
        return None
    from ..sip.headers import split_commas
    xdata = json.loads(row.get("xdata") or "{}")
    answered = float(xdata.get("a", row["start_time"]))
    lifetime = float(row["timeout"]) - int(row["start_time"]) if row.get("timeout") else 0.0
    lifetime = max(lifetime, 0.0)

    def addr(value):
        return (value[0], value[1], int(value[2]), None) if value else None

    dlg = Dialog(int(row["hash_entry"]), int(row["hash_id"]), row["callid"], row["from_uri"],
                 row["from_tag"], row["to_uri"], row.get("req_uri") or "",
                 int(row.get("caller_cseq") or 0), row["caller_contact"],
                 addr(xdata.get("ca")), row.get("caller_sock") or "",
                 float(xdata.get("c", answered)), lifetime, bits_to_flags(row.get("sflags")))
    dlg.to_tag = row["to_tag"]
    dlg.callee_cseq = int(row.get("callee_cseq") or 0)
    dlg.callee_contact = row["callee_contact"]
    dlg.callee_addr = addr(xdata.get("ce"))
    dlg.callee_sock = row.get("callee_sock") or ""
    dlg.caller_routes = split_commas(row["caller_route_set"]) if row.get("caller_route_set") else []
    dlg.callee_routes = split_commas(row["callee_route_set"]) if row.get("callee_route_set") else []
    dlg.state = CONFIRMED
    dlg.answered = answered
    if xdata.get("r"):
        dlg.answer_code, dlg.answer_reason = xdata["r"][0], xdata["r"][1]
    dlg.vars = dict((vars_of or {}).get(dlg.key, {}))
    dlg.stored = True
    dlg.vars_stored = True
    return dlg


def _contact_of(message):
    if message is None or not message.has("contact"):
        return None
    contacts = message.addresses("contact")
    return str(contacts[0].uri) if contacts else None


def _sock(listener):
    if listener is None:
        return ""
    return f"{listener.proto}:{listener.host}:{listener.port}"

