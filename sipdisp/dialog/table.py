"""The dialog table, sans-IO: OpenSIPS/Kamailio dialog tracking for the
INVITEs whose route calls ``create_dialog``. It is the dialog module's public
face: the index of dialogs by ``(hash_entry, hash_id)`` and Call-ID, their
creation, matching requests to them, their states and profiles.

It never reads a clock. Events reach it three ways, all from the core:

* the route (``create``, ``match``, ``validate``) with ``ctx.now``;
* the request's reply hook (provisional replies make a dialog early; the
  route's own final reply, when nothing was relayed, deletes it) and the
  core's transaction-end hook (a 2xx confirms it, a failed INVITE deletes
  it, a BYE ends it, other in-dialog requests update CSeqs and targets);
* its timers in the core's heap: one for the earliest dialog deadline (the
  timeout, or the expiry of an unanswered INVITE, kept in a
  :class:`~.deadlines.DeadlineQueue`), one for keepalive rounds and one for
  the delayed database writes of ``db_mode`` 2.

It composes the rest: :class:`~.ending.InDialogClient` sends the BYEs (flag
``B`` or ``bye_on_timeout`` at the timeout, ``dlg.end``, a lost keepalive)
and keepalives, :class:`~.persistence.DialogWriter` writes confirmed dialogs
to the ``dialog`` and ``dialog_vars`` tables. Other modules follow dialogs
through ``callbacks["early"]`` ``(dialog, now)`` (the first provisional
reply with a To tag), ``callbacks["confirmed"]`` ``(dialog, ctx, now)`` and
``callbacks["ended"]`` ``(dialog, now)``; accounting writes its CDR there,
the presence dialog feed drives the busy lamps from all three.
"""

import random
import zlib
from collections import Counter

from ..logs import Logger, RepeatLimiter
from ..proxy.suspend import stop_route
from .deadlines import DeadlineQueue
from .dialog import FLAG_BYE, Dialog, split_route_set
from .ending import InDialogClient
from .persistence import DialogWriter, restored_dialogs
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
#: Retry-After of the 503 a full dialog table answers (RFC 3261 21.5.4)
BUSY_RETRY_AFTER = "5"


class DialogTable:
    """Every tracked dialog, indexed by ``(hash_entry, hash_id)`` and Call-ID.

    ``core`` (a ProxyCore) is needed for timers and for the BYEs and
    keepalives (``requests``); ``storage`` (the storage API) for ``db_mode``
    1 and 2 (``writer``). ``max_dialogs`` (``dialog.max_dialogs``, 0: no
    limit) bounds the table: ``create`` answers 503 past it.
    """

    def __init__(self, core=None, *, default_timeout=21600.0, early_timeout=300.0,
                 bye_on_timeout=True, keepalive_interval=0.0, keepalive_timeout=4.0,
                 keepalive_failed_limit=1, db_mode=0, db_update_period=60.0, storage=None,
                 profiles=None, unmatched_reply=None, rng=None, log=None, max_dialogs=0):
        self.stats = Counter()
        self.log = log or Logger(namespace="sipdisp.dialog")
        self.max_dialogs = max_dialogs
        # a full table is tripped by every new INVITE: one line a minute
        self.limit_log = RepeatLimiter(self.log, limit=1, interval=60.0)
        self.writer = DialogWriter(storage, db_mode, self.stats, self.log)
        self.requests = InDialogClient(None, self.stats, self.log,
                                       keepalive_timeout=keepalive_timeout,
                                       keepalive_failed_limit=keepalive_failed_limit)
        self.default_timeout = default_timeout
        self.early_timeout = early_timeout
        self.bye_on_timeout = bye_on_timeout
        self.keepalive_interval = keepalive_interval
        self.db_mode = db_mode
        self.db_update_period = db_update_period
        self.profiles = profiles if profiles is not None else Profiles()
        self.unmatched_reply = unmatched_reply  # (status, reason) or None
        self.dialogs = {}
        self.by_callid = {}
        self.deadlines = DeadlineQueue()
        self.timers = {}  # the core's TimerHeap keeps our timers here
        self.callbacks = {"early": [], "confirmed": [], "ended": []}
        self._rng = rng or random.SystemRandom()
        self._next_id = self._rng.getrandbits(30) + 1
        self._armed = None
        # this node's cluster.node_id (set by the cluster service): written
        # with every dialog, and a row of another node is not restored here
        self.node_id = None
        # nodes owning rows restore() left alone: the cluster's takeover
        # checks whether they are alive
        self.foreign_owners = set()
        self.core = None
        if core is not None:
            self.attach(core)

    # -- wiring ----------------------------------------------------------------
    def attach(self, core):
        """Register with ``core``: the
        transaction-end hook that confirms, fails and ends dialogs."""
        self.core = core
        self.requests.core = core
        if self.on_txn_end not in core.txn_end_hooks:
            core.txn_end_hooks.append(self.on_txn_end)

    def start(self, now):
        """Arm the keepalive round and the delayed writes (``db_mode`` 2)."""
        if self.core is None:
            return
        if self.keepalive_interval > 0:
            self._arm("keepalive", now + self.keepalive_interval)
        if self.db_mode == 2:
            self._arm("db", now + self.db_update_period)
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
        if self.max_dialogs and len(self.dialogs) >= self.max_dialogs:
            self._refuse_full(ctx)
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
        dlg.owner = self.node_id
        self._index(dlg)
        ctx.vars[DLG] = dlg
        ctx.add_reply_hook(self.on_reply)
        self.stats["created"] += 1
        self._schedule(dlg, ctx.now + self.early_timeout)
        return dlg

    def _refuse_full(self, ctx):
        """``dialog.max_dialogs`` reached: answer the INVITE 503 with
        Retry-After and end the route, so an untracked call is not relayed."""
        self.stats["refused_full"] += 1
        src = ctx.source
        self.limit_log.warn("dialog.full", "dialog table full ({max} dialogs, "
                            "dialog.max_dialogs): 503 to an INVITE from {host}:{port}",
                            max=self.max_dialogs, host=src.host, port=src.port)
        ctx.reply(503, "Server Busy", (("retry-after", BUSY_RETRY_AFTER),))
        stop_route()

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
            self.writer.persist(dlg)

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
            # once per dialog, at its first early state (a later 18x, even of
            # another fork, finds it early already); the presence dialog feed
            # lights the busy lamp here
            self._run_callbacks("early", dlg, now)

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
        self.writer.persist(dlg)

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
        self.writer.persist(dlg)

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
            self.writer.persist(dlg)
        return True

    def end(self, dlg, now, reason="end"):
        """Hang up a confirmed call (``dlg.end``, a failed keepalive): BYE to
        both parties, then the dialog ends. ValueError if it is not confirmed."""
        if dlg.state != CONFIRMED:
            raise ValueError(f"dialog {dlg.id} is {dlg.state_name}, not confirmed")
        dlg.vars.setdefault("end_by", reason)
        self.requests.send_byes(dlg, now)
        self._finish(dlg, "end", now)

    def _keepalive_lost(self, dlg, side, now):
        """A party stopped answering keepalives: hang the call up."""
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
            self._arm("deadline", nxt)
            self._armed = nxt

    def _arm(self, name, when):
        """The one place the table arms its timers in the core's heap."""
        self.core.timer(self, name).arm(when)

    def on_timer(self, name, now):
        """The core's heap fired one of ours; each dialog is handled on its own."""
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
                self.requests.keepalive_round(self.dialogs.values(), now, self._keepalive_lost)
            finally:
                if self.keepalive_interval > 0:
                    self._arm("keepalive", now + self.keepalive_interval)
        elif name == "db":
            try:
                self.flush()
            finally:
                self._arm("db", now + self.db_update_period)

    def _expire(self, dlg, now):
        if dlg.state == CONFIRMED:
            bye = self.bye_on_timeout or FLAG_BYE in dlg.flags
            self.log.info("dialog {id} ({callid}) timed out after {secs:g} s{bye}",
                          id=dlg.id, callid=dlg.callid, secs=dlg.lifetime,
                          bye="; BYE to both parties" if bye else "")
            if bye:
                self.requests.send_byes(dlg, now)
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
    def flush(self):
        """Write every dialog changed since the last flush (db_mode 2); returns how many."""
        return self.writer.flush()

    def restore(self, rows, var_rows=(), now=0.0):
        """Rebuild confirmed dialogs from ``dialog`` (and ``dialog_vars``) rows
        after a restart; their deadlines and profiles come back with them.
        In a cluster (``node_id`` set) a row another node owns is left to it
        (its owner goes to ``foreign_owners``; ``foreign_skipped`` counts
        them): a node that was taken over finds its rows re-owned and does
        not act on them again. Returns how many were restored."""
        count = 0
        for dlg, pairs in restored_dialogs(rows, var_rows, self.log):
            if dlg.key in self.dialogs:
                continue
            if self.node_id is not None and dlg.owner not in (None, self.node_id):
                self.foreign_owners.add(dlg.owner)
                self.stats["foreign_skipped"] += 1
                continue
            self._adopt(dlg, pairs)
            count += 1
        self.stats["restored"] += count
        return count

    def take_over(self, rows, var_rows, owner, now=0.0):
        """Take the confirmed dialogs of node ``owner`` (a dead cluster node)
        from ``dialog`` and ``dialog_vars`` rows: each is re-owned by this
        node and written at once, then tracked here with its remaining
        timeout, profiles and variables (accounting's among them). Returns
        the dialogs taken (``taken_over`` counts them)."""
        taken = []
        for dlg, pairs in restored_dialogs(rows, var_rows, self.log):
            if dlg.owner != owner or owner is None:
                continue
            if dlg.key in self.dialogs:
                self.log.warn("dialog {id} of node {node} has the id of one of ours; "
                              "not taken over", id=dlg.id, node=owner)
                continue
            dlg.owner = self.node_id
            self.writer.write_now(dlg)
            self._adopt(dlg, pairs)
            taken.append(dlg)
        self.stats["taken_over"] += len(taken)
        return taken

    def _adopt(self, dlg, pairs):
        self._index(dlg)
        self.profiles.restore(dlg, pairs)
        self._schedule(dlg, dlg.answered + dlg.lifetime)

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
        yield ("sipdisp_dialogs_refused_total", "counter",
               "INVITEs answered 503 because the table held dialog.max_dialogs dialogs.",
               self.stats["refused_full"])
        yield ("sipdisp_dialog_requests_sent_total", "counter",
               "In-dialog requests sipdisp sent itself, by kind.",
               [({"kind": "bye"}, self.stats["byes_sent"]),
                ({"kind": "keepalive"}, self.stats["keepalives_sent"])])


def _contact_of(message):
    if message is None or not message.has("contact"):
        return None
    contacts = message.addresses("contact")
    return str(contacts[0].uri) if contacts else None


def _sock(listener):
    if listener is None:
        return ""
    return f"{listener.proto}:{listener.host}:{listener.port}"

