"""Offline messages, sans-IO (Kamailio's and OpenSIPS' msilo module).

``store(ctx, owner)`` keeps a MESSAGE for a user who has no contact in the
``silo`` table (Kamailio 5.x's, version 8) and answers it 202 Accepted;
``dump(ctx, owner)`` on her next REGISTER sends what is stored for her to
the contact she just registered, one MESSAGE per row as a client
transaction of the core, and deletes a row once its MESSAGE got a 2xx (a
failure or a timeout keeps it for the next REGISTER). A timer deletes the
rows whose ``exp_time`` passed every ``clean_period`` seconds.

Every storage call goes through the ordered write queue (insert, delete) or
is a read whose Deferred continues the work: ``store`` reads the owner's
count through the :class:`~sipdisp.proxy.suspend.Suspender` (the route runs
again when it is there), ``dump`` answers the REGISTER's route at once and
sends when the rows arrive. Times are the Unix seconds the core's ``now``
and ``clock()`` give (the table's ``inc_time`` and ``exp_time``).
"""

import email.utils
import itertools
import os
from collections import Counter

from twisted.internet import defer
from twisted.python.failure import Failure

from ..logs import Logger, RepeatLimiter
from ..proxy.suspend import FetchFailed, stop_route
from ..proxy.target import Target
from ..registrar.registrar import Registrar
from ..registrar.usrloc import contact_key
from ..sip.address import parse_address
from ..sip.errors import SipParseError
from ..sip.headers import header_key
from ..sip.message import Request
from ..sip.uri import parse_uri
from ..storage import gt, lt

log = Logger(namespace="sipdisp.msilo")

TABLE = "silo"
#: column sizes of the silo table (version 8) that m_store must respect
ADDR_LEN = 128
USER_LEN = 64
CTYPE_LEN = 32
CALLID_LEN = 128
#: ctx.vars key of the owner's message count read by store()
COUNT_KEY = "_msilo_count"
#: counter (core stats, /metrics) of MESSAGEs refused over msilo.max_messages
LIMIT_STAT = "msilo_limit_refused"


class SiloParams:
    """The ``msilo`` section's values as one object."""

    __slots__ = ("expire_time", "max_messages", "clean_period", "notify_offline",
                 "from_address", "offline_message")

    def __init__(self, expire_time=259200.0, max_messages=100, clean_period=600.0,
                 notify_offline=False, from_address="sip:msilo@localhost",
                 offline_message="User offline, message stored"):
        self.expire_time = expire_time
        self.max_messages = max_messages
        self.clean_period = clean_period
        self.notify_offline = notify_offline
        self.from_address = from_address
        self.offline_message = offline_message

    @classmethod
    def from_config(cls, section):
        """The parameters of ``cfg.msilo``."""
        return cls(**{name: getattr(section, name) for name in cls.__slots__})


def owner_of(uri):
    """``(username, domain)`` of an owner URI (a string or a parsed URI), or None
    when it is not a SIP URI with a user that fits the table."""
    if uri is None:
        return None
    if not hasattr(uri, "is_sip"):
        try:
            uri = parse_uri(str(uri).strip().strip("<>"))
        except SipParseError:
            return None
    if not uri.is_sip or not uri.user or len(uri.user) > USER_LEN or len(uri.host) > USER_LEN:
        return None
    return uri.user, uri.host.lower()


def _addr_uri(msg, key):
    """The URI text of header ``key`` (From, To) of ``msg``, or None."""
    try:
        addr = msg.address(key)
    except SipParseError:
        return None
    return None if addr is None else str(addr.uri)


def _content_type(msg):
    """The MESSAGE's Content-Type as the table keeps it (parameters dropped when
    it would not fit), or None when even the bare type is too long."""
    value = (msg.get("content-type") or "text/plain").strip()
    if len(value) > CTYPE_LEN:
        value = value.split(";", 1)[0].strip()
    return value if len(value) <= CTYPE_LEN else None


def bound_contacts(req):
    """The contact URIs of a REGISTER that it binds (expires not 0)."""
    default = req.get("expires")
    out = []
    for value in req.values("contact"):
        if value.strip() == "*":
            return []
        try:
            addr = parse_address(value, "Contact")
        except SipParseError:
            continue
        expires = addr.param("expires")
        if expires is None:
            expires = default
        if expires is not None and expires.strip() == "0":
            continue
        out.append(str(addr.uri))
    return out


class _Delivery:
    """One stored message on its way: the row id and who it is for."""

    __slots__ = ("row_id", "owner", "call_id")

    def __init__(self, row_id, owner, call_id):
        self.row_id = row_id
        self.owner = owner
        self.call_id = call_id


class MessageSilo:
    """The msilo module: ``store``, ``dump``, the expiry sweep, and the owner
    of the client transactions of dumped messages and offline notices.

    ``core`` is the proxy core (:class:`~sipdisp.proxy.interface.Core`),
    ``storage`` the :class:`~sipdisp.storage.Storage`, ``location`` the
    registrar's :class:`~sipdisp.registrar.usrloc.Location` (where a
    registered contact is), ``suspender`` the
    :class:`~sipdisp.proxy.suspend.Suspender` of store's count read,
    ``clock()`` the time when a read's answer arrives and ``wake()`` what
    sends the transactions started outside a receive.
    """

    def __init__(self, core, storage, location, suspender, params=None, clock=None,
                 wake=None):
        self.core = core
        self.storage = storage
        self.location = location
        self.suspender = suspender
        self.params = params or SiloParams()
        self.clock = clock
        self.wake = wake
        self.stats = Counter()
        self.timers = {}
        self._sweep_timer = None
        self._inflight = {}     # client transaction -> _Delivery
        self._sending = set()   # row ids with a MESSAGE in flight
        self._notices = set()   # client transactions of offline notices
        self._tag = os.urandom(4).hex()
        self._ids = itertools.count(1)
        self.log = RepeatLimiter(log, stats=getattr(core, "stats", None))

    # -- life cycle ----------------------------------------------------------------------
    def start(self, now):
        """Arm the expiry sweep (every ``clean_period`` seconds); ``store``
        arms it too, so the sweep runs wherever messages are stored, and a
        database another proxy fills is left to that proxy's sweep."""
        if self._sweep_timer is None:
            self._sweep_timer = self.core.timer(self, "sweep")
        if not self._sweep_timer.armed:
            self._sweep_timer.arm(now + self.params.clean_period)

    def stop(self):
        """Disarm the sweep."""
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()

    def on_timer(self, name, now):
        """The sweep is due: delete expired rows, then re-arm."""
        if name == "sweep":
            self.sweep(now)
            self._sweep_timer.arm(now + self.params.clean_period)

    def sweep(self, now):
        """Delete the messages whose ``exp_time`` passed; a Deferred firing with how many."""
        d = self.storage.delete(TABLE, {"exp_time": lt(int(now))})

        def done(n):
            n = n or 0
            if n:
                self.stats["expired"] += n
                log.info("msilo: {n} message(s) expired undelivered (msilo.expire_time)", n=n)
            return n

        def failed(f):
            self.stats["db_errors"] += 1
            log.warn("msilo: cannot delete expired messages: {err}", err=f.getErrorMessage())
            return 0
        return d.addCallbacks(done, failed)

    # -- m_store ---------------------------------------------------------------------
    def count(self, username, domain, now):
        """A Deferred firing with how many unexpired messages ``username@domain`` has."""
        d = self.storage.select(TABLE, where={"username": username, "domain": domain,
                                              "exp_time": gt(int(now))}, columns=["id"])
        return d.addCallback(len)

    def store(self, ctx, owner=None):
        """msilo ``m_store([owner])``: keep the MESSAGE for ``owner`` (default the
        Request-URI), answer it 202 Accepted and stop the route. False (the
        route goes on) for another method, a MESSAGE without body, an owner
        that is no SIP user, the owner holding ``max_messages`` already, or a
        storage that cannot take the row."""
        req = ctx.request
        if req.method != "MESSAGE":
            return False
        who = owner_of(owner if owner is not None else req.uri)
        src, dst, ctype = _addr_uri(req, "from"), _addr_uri(req, "to"), _content_type(req)
        if (who is None or not req.body or src is None or dst is None or ctype is None
                or len(src) > ADDR_LEN or len(dst) > ADDR_LEN):
            self.stats["refused"] += 1
            self.log.info("msilo.refused", "msilo: MESSAGE from {src} for {owner} not stored: "
                          "no body, or an owner, address or type the silo table cannot hold",
                          src=src, owner=owner if owner is not None else req.uri)
            return False
        username, domain = who
        try:
            count = self.suspender.fetch(ctx, COUNT_KEY,
                                         lambda: self.count(username, domain, ctx.now))
        except FetchFailed as exc:
            self.stats["db_errors"] += 1
            self.log.warn("msilo.db", "msilo: cannot count the messages of {user}@{domain}: "
                          "{err}", user=username, domain=domain, err=exc)
            return False
        limit = self.params.max_messages
        if count >= limit:
            self.stats["limit_refused"] += 1
            self.core.stats[LIMIT_STAT] += 1
            self.log.warn("msilo.limit", "msilo: {user}@{domain} has {count} stored messages "
                          "(msilo.max_messages {limit}): MESSAGE from {src} not stored",
                          user=username, domain=domain, count=count, limit=limit, src=src)
            return False
        now = int(ctx.now)
        row = {"src_addr": src, "dst_addr": dst, "username": username, "domain": domain,
               "inc_time": now, "exp_time": now + int(self.params.expire_time),
               "snd_time": 0, "ctype": ctype, "body": bytes(req.body),
               "callid": (req.call_id or "")[:CALLID_LEN], "status": 0}
        failed = []
        d = self.storage.insert(TABLE, row)
        d.addErrback(self._insert_failed, failed, username, domain)
        if failed:  # refused at once (the write queue is full, the storage closed)
            return False
        self.stats["stored"] += 1
        self.start(ctx.now)
        ctx.reply(202, "Accepted")
        if self.params.notify_offline:
            self.notify(ctx, src, ctx.now)
        stop_route()

    def _insert_failed(self, f, failed, username, domain):
        failed.append(f)
        self.stats["db_errors"] += 1
        self.log.error("msilo.db", "msilo: cannot store a message for {user}@{domain}: {err}",
                       user=username, domain=domain, err=f.getErrorMessage())

    def notify(self, ctx, sender, now):
        """msilo's offline notice: a MESSAGE from ``from_address`` to the sender,
        sent back where the stored MESSAGE came from (its connection, or
        its source address: NAT and WebSocket clients are reached so)."""
        params = self.params
        if contact_key(sender) == contact_key(params.from_address):
            return None  # a notice about a notice would loop
        src = ctx.source
        target = src
        if src.conn is not None:
            target = self.core.flow_target(src.conn)
            if target is None:
                return None
        elif target.listener is None:
            return None
        try:
            uri = parse_uri(sender)
        except SipParseError:
            return None
        n = next(self._ids)
        request = self._request(uri, target, f"<{params.from_address}>;tag={self._tag}{n:x}",
                                f"<{sender}>", f"msilo-n-{self._tag}-{n}", "text/plain",
                                params.offline_message.encode("utf-8"))
        txn = self._send(request, target, now)
        self._notices.add(txn)
        self.stats["notices_sent"] += 1
        return txn

    # -- m_dump ----------------------------------------------------------------------
    def dump(self, ctx, owner=None):
        """msilo ``m_dump([owner])`` after ``save``: send what is stored for
        ``owner`` (default the To URI) to the contact this REGISTER bound.
        True when the REGISTER bound a contact and the dump started (the
        rows are read in the background), False otherwise."""
        req = ctx.request
        if req.method != "REGISTER":
            return False
        who = owner_of(owner if owner is not None else _addr_uri(req, "to"))
        keys = {contact_key(c) for c in bound_contacts(req)}
        if who is None or not keys:
            return False
        username, domain = who
        aor = self.location.aor(username, domain)
        now = ctx.now
        self.stats["dumps"] += 1
        d = defer.maybeDeferred(self._bindings, aor, now)
        d.addCallback(self._read_rows, keys, username, domain, now)
        d.addErrback(self._dump_failed, username, domain)
        return True

    def _bindings(self, aor, now):
        if self.location.in_memory:
            return self.location.bindings(aor, now)
        return self.location.fetch(aor, now)

    def _read_rows(self, bindings, keys, username, domain, now):
        fresh = [b for b in bindings if contact_key(b.contact) in keys]
        if not fresh:
            return None
        fresh.sort(key=lambda b: (-b.q, -b.last_modified))
        d = self.storage.select(TABLE, where={"username": username, "domain": domain,
                                              "exp_time": gt(int(now))},
                                order_by=["id"], limit=self.params.max_messages)
        return d.addCallback(self.deliver, fresh[0], f"{username}@{domain}")

    def _dump_failed(self, f, username, domain):
        self.stats["db_errors"] += 1
        self.log.warn("msilo.db", "msilo: cannot read the messages of {user}@{domain}: {err}",
                      user=username, domain=domain, err=f.getErrorMessage())

    def target_for(self, binding):
        """``(Branch, Target)`` reaching a binding as lookup would (Path,
        received address, connection), or None when it cannot be reached."""
        branch = Registrar.branch(binding)
        if branch is None:
            return None
        if branch.flow is not None:
            target = self.core.flow_target(branch.flow)
            return None if target is None else (branch, target)
        hop = branch.dst or branch.uri
        proto = hop.transport
        host = hop.param("maddr") or hop.host
        port = hop.host_port[1]
        listener = self.core.listener_for(proto, host)
        if listener is None:
            return None
        return branch, Target(proto, host, port, None, listener)

    def deliver(self, rows, binding, owner, now=None):
        """Send each row not already in flight to ``binding`` as a MESSAGE;
        how many went out."""
        now = self.clock() if now is None and self.clock is not None else now
        reach = self.target_for(binding)
        if reach is None:
            self.stats["unreachable"] += 1
            return 0
        branch, target = reach
        sent = 0
        for row in rows:
            row_id = row["id"]
            if row_id in self._sending:
                continue
            n = next(self._ids)
            call_id = f"msilo-{self._tag}-{row_id}-{n}"
            body = row.get("body") or b""
            if isinstance(body, str):
                body = body.encode("utf-8")
            request = self._request(branch.uri, target,
                                    f"<{row['src_addr']}>;tag={self._tag}{n:x}",
                                    f"<{row['dst_addr']}>", call_id,
                                    row.get("ctype") or "text/plain", bytes(body),
                                    routes=branch.routes, inc_time=row.get("inc_time"),
                                    extra=row.get("extra_hdrs"))
            txn = self._send(request, target, now)
            self._inflight[txn] = _Delivery(row_id, owner, call_id)
            self._sending.add(row_id)
            sent += 1
        self.stats["sent"] += sent
        if sent and self.wake is not None:
            self.wake()
        return sent

    # -- the client transactions ----------------------------------------------------------
    def _request(self, uri, target, from_value, to_value, call_id, ctype, body, routes=(),
                 inc_time=None, extra=None):
        request = Request("MESSAGE", uri.copy() if hasattr(uri, "copy") else uri)
        request.call_id = call_id
        request.cseq = 1
        request.cseq_method = "MESSAGE"
        headers = [("via", "Via", ""),
                   ("max-forwards", "Max-Forwards", "70")]
        headers += [("route", "Route", r) for r in routes]
        headers += [("from", "From", from_value), ("to", "To", to_value),
                    ("call-id", "Call-ID", call_id), ("cseq", "CSeq", "1 MESSAGE")]
        if inc_time:
            # when it was sent to the user, not when it reaches her (RFC 3261 20.17)
            headers.append(("date", "Date", email.utils.formatdate(int(inc_time), usegmt=True)))
        for line in (extra or "").splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip():
                headers.append((header_key(name.strip()), name.strip(), value.strip()))
        if self.core.server_header:
            headers.append(("user-agent", "User-Agent", self.core.server_header))
        headers.append(("content-type", "Content-Type", ctype))
        headers.append(("content-length", "Content-Length", str(len(body))))
        request.headers = headers
        request.body = body
        return request

    def _send(self, request, target, now):
        branch = self.core.new_branch()
        request.headers[0] = ("via", "Via", target.listener.via_prefix + branch)
        return self.core.start_client(request, target, branch, self, self.core.fr_timer, now)

    def on_branch_response(self, txn, response, now):
        """A reply to a dumped MESSAGE: a 2xx deletes its row, a failure keeps it."""
        if response.status < 200:
            return
        if txn in self._notices:
            self._notices.discard(txn)
            return
        delivery = self._inflight.pop(txn, None)
        if delivery is None:
            return
        if response.status < 300:
            self.stats["delivered"] += 1
            d = self.storage.delete(TABLE, {"id": delivery.row_id})
            # the row leaves the in-flight set once it is gone, so a REGISTER
            # in between cannot send it twice
            d.addBoth(self._deleted, delivery)
        else:
            self._sending.discard(delivery.row_id)
            self.stats["failed"] += 1
            self.log.info("msilo.failed", "msilo: stored message {id} for {owner} answered "
                          "{status} {reason}: kept for the next REGISTER", id=delivery.row_id,
                          owner=delivery.owner, status=response.status,
                          reason=response.reason)

    def _deleted(self, result, delivery):
        self._sending.discard(delivery.row_id)
        if isinstance(result, Failure):
            self.stats["db_errors"] += 1
            log.warn("msilo: cannot delete delivered message {id}: {err}",
                     id=delivery.row_id, err=result.getErrorMessage())
        return None

    def on_branch_timeout(self, txn, now):
        """A dumped MESSAGE got no final reply: its row is kept."""
        if txn in self._notices:
            self._notices.discard(txn)
            return
        delivery = self._inflight.pop(txn, None)
        if delivery is None:
            return
        self._sending.discard(delivery.row_id)
        self.stats["failed"] += 1
        self.log.info("msilo.failed", "msilo: no reply to stored message {id} for {owner}: "
                      "kept for the next REGISTER", id=delivery.row_id, owner=delivery.owner)

    # -- management ------------------------------------------------------------------
    def list(self, user=""):
        """A Deferred firing with the stored messages (of ``user`` or
        ``user@domain``), oldest first, bodies as text."""
        where = {}
        if user:
            name, _, domain = user.partition("@")
            where["username"] = name
            if domain:
                where["domain"] = domain.lower()
        d = self.storage.select(TABLE, where=where or None, order_by=["id"])
        return d.addCallback(lambda rows: [_describe(r, self._sending) for r in rows])

    def snapshot(self):
        """Counters and what is in flight (``msilo.stats``)."""
        out = {name: self.stats[name] for name in (
            "stored", "refused", "limit_refused", "dumps", "sent", "delivered", "failed",
            "unreachable", "expired", "notices_sent", "db_errors")}
        out["in_flight"] = len(self._inflight)
        out["max_messages"] = self.params.max_messages
        out["expire_time"] = self.params.expire_time
        return out


def _describe(row, sending):
    body = row.get("body") or b""
    if not isinstance(body, str):
        body = bytes(body).decode("utf-8", "replace")
    return {"id": row["id"], "owner": f"{row['username']}@{row['domain']}",
            "from": row["src_addr"], "to": row["dst_addr"], "inc_time": row["inc_time"],
            "exp_time": row["exp_time"], "ctype": row["ctype"], "body": body,
            "sending": row["id"] in sending}
