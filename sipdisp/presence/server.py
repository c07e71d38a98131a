"""The presence server (OpenSIPS' presence + presence_xml), sans-IO.

``handle_publish(ctx)`` runs the event state compositor (RFC 3903) over
:mod:`~sipdisp.presence.compositor`; ``handle_subscribe(ctx)`` makes,
refreshes and ends subscription dialogs (RFC 6665) and sends their NOTIFYs
as client transactions of the core (retransmitted by the transaction
layer); ``publish_internal`` is how sipdisp's own feeds (the dialog BLF
feed) publish. Every change of a presentity's state notifies its watchers,
with the body its event package builds once per change.

Timers are the core's heap (publication and subscription expiry); every
write goes through the storage's ordered write queue (``presentity``,
``active_watchers``, ``watchers``), so an outage loses nothing, and
:meth:`PresenceServer.load` reads the state back after a restart: each
subscription's next NOTIFY goes out in the same dialog with the next CSeq.
"""

import itertools
from collections import Counter

from twisted.internet import defer

from ..logs import Logger, RepeatLimiter
from ..proxy.suspend import FetchFailed, stop_route
from ..proxy.target import Target
from ..registrar.usrloc import contact_key
from ..sip.errors import SipParseError
from ..sip.headers import split_commas
from ..sip.uri import parse_uri
from ..storage import gt, le
from .compositor import (INITIAL, MODIFY, REFRESH, REMOVE, Compositor, Publication,
                         decide_publish, grant_expires)
from .packages import BadBody
from .subscription import (ACTIVE, PENDING, STATUS_CODES, STATUS_NAMES, TERMINATED,
                           Subscription, parse_event, presentity_of, route_set_of,
                           split_presentity)

log = Logger(namespace="sipdisp.presence")

PRESENTITY, WATCHERS, RULES = "presentity", "active_watchers", "watchers"
WINFO = "presence.winfo"
#: the ``sender`` column of publications sipdisp makes itself (publish_internal)
INTERNAL_SENDER = "sipdisp:"
#: packages whose documents carry a version counted per subscription (RFC 4235 4.1,
#: RFC 3857 4.4.1): their NOTIFY body is built for each watcher, the others' once
VERSIONED = frozenset(("dialog", WINFO))
#: a fan-out sends its NOTIFYs every this many, rather than all at the end
WAKE_EVERY = 100
#: ctx.vars key of a request that waited for the state to be read back
READY_KEY = "_presence_ready"
#: watchers.status of presence_xml: pending, allowed, denied
RULE_PENDING, RULE_ALLOW, RULE_DENY = 0, 1, 2
#: core.stats counters of refusals at a limit, by config key
LIMIT_STATS = {
    "presence.max_presentities": "presence_limit_presentities",
    "presence.max_publications_per_presentity": "presence_limit_publications",
    "presence.max_subscriptions": "presence_limit_subscriptions",
    "presence.max_watchers_per_presentity": "presence_limit_watchers",
    "presence.max_subscriptions_per_source": "presence_limit_source",
    "presence.max_body_size": "presence_limit_body",
}


class PresenceParams:
    """The ``presence`` section's values as one object."""

    __slots__ = ("force_active", "min_expires", "max_expires", "default_expires",
                 "max_presentities", "max_publications_per_presentity", "max_subscriptions",
                 "max_watchers_per_presentity", "max_subscriptions_per_source",
                 "max_body_size", "retry_after")

    def __init__(self, force_active=True, min_expires=60, max_expires=3600,
                 default_expires=3600, max_presentities=100000,
                 max_publications_per_presentity=32, max_subscriptions=100000,
                 max_watchers_per_presentity=5000, max_subscriptions_per_source=1000,
                 max_body_size=65536, retry_after=30):
        self.force_active = force_active
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.max_presentities = max_presentities
        self.max_publications_per_presentity = max_publications_per_presentity
        self.max_subscriptions = max_subscriptions
        self.max_watchers_per_presentity = max_watchers_per_presentity
        self.max_subscriptions_per_source = max_subscriptions_per_source
        self.max_body_size = max_body_size
        self.retry_after = retry_after

    @classmethod
    def from_config(cls, section):
        """The parameters of ``cfg.presence``."""
        return cls(**{name: getattr(section, name) for name in cls.__slots__})


def _uri_text(msg, key):
    try:
        addr = msg.address(key)
    except SipParseError:
        return None, ""
    if addr is None:
        return None, ""
    return str(addr.uri), (addr.display or "").strip('"')


def local_contact(listener):
    """The Contact URI of our end of a subscription: the listener the SUBSCRIBE came on."""
    return listener.rr_uri[:-3] if listener.rr_uri.endswith(";lr") else listener.rr_uri


class PresenceServer:
    """Publications, subscriptions and their NOTIFYs.

    ``core`` is the proxy core (:class:`~sipdisp.proxy.interface.Core`),
    ``storage`` the :class:`~sipdisp.storage.Storage`, ``packages`` the
    event packages by name (``build_packages``), ``clock()`` the time when a
    storage read's answer arrives and ``wake()`` what sends the transactions
    started outside a receive; ``location`` (the registrar's usrloc, optional)
    finds a watcher's registered connection once the SUBSCRIBE's is gone.
    """

    def __init__(self, core, storage, packages, params=None, clock=None, wake=None,
                 suspender=None, location=None):
        self.core = core
        #: the registrar's location table: a watcher's registered flow (WebSocket)
        self.location = location
        self.suspender = suspender
        #: Deferreds of requests waiting for the state read back at start (None: read)
        self._waiters = None
        self.storage = storage
        self.packages = packages
        self.params = params or PresenceParams()
        self.clock = clock
        self.wake = wake
        self.compositor = Compositor()
        #: dialog key -> Subscription
        self.subs = {}
        #: (event, presentity) -> {dialog key: Subscription}
        self.by_resource = {}
        #: source IP address -> live subscriptions made from it
        self.by_source = Counter()
        self.stats = Counter()
        self.timers = {}
        self._inflight = {}   # NOTIFY client transaction -> Subscription
        self._ids = itertools.count(1)
        self.log = RepeatLimiter(log, stats=getattr(core, "stats", None))

    # -- helpers ---------------------------------------------------------------------
    def _refuse_limit(self, ctx, key, what, status=503, reason="Service Unavailable",
                      headers=None):
        self.stats["limit_" + key.rpartition(".")[2]] += 1
        self.core.stats[LIMIT_STATS[key]] += 1
        src = ctx.source
        self.log.warn("presence.limit." + key, "presence: {setting} reached: {what} from "
                      "{host}:{port} refused {status}", setting=key, what=what, host=src.host,
                      port=src.port, status=status)
        if headers is None:
            headers = (("retry-after", str(self.params.retry_after)),)
        ctx.reply(status, reason, headers)

    def _db_failed(self, f, what):
        self.stats["db_errors"] += 1
        self.log.warn("presence.db", "presence: cannot {what}: {err}", what=what,
                      err=f.getErrorMessage())

    def _write(self, d, what):
        d.addErrback(self._db_failed, what)

    def _allow_events(self, publishable=False):
        names = [n for n, p in sorted(self.packages.items())
                 if p.publishable or not publishable]
        return (("allow-events", ", ".join(names)),)

    # -- PUBLISH ---------------------------------------------------------------------
    def handle_publish(self, ctx):
        """OpenSIPS ``handle_publish()``: answer a PUBLISH as the event state
        compositor (RFC 3903 section 6) and end the route; False for another method."""
        req = ctx.request
        if req.method != "PUBLISH":
            return False
        if self._wait_ready(ctx):
            self._publish(ctx)
        stop_route()

    def _publish(self, ctx):
        req, now = ctx.request, ctx.now
        self.stats["publish_received"] += 1
        event = req.get("event")
        name = parse_event(event)[0] if event is not None else None
        pkg = self.packages.get(name) if name is not None else None
        if pkg is None or not pkg.publishable:
            # RFC 3903 section 6 step 2: a missing or unknown event is 489 too
            self.stats["publish_bad_event"] += 1
            ctx.reply(489, "Bad Event", self._allow_events(publishable=True))
            return
        presentity = presentity_of(req.uri)
        if presentity is None:
            ctx.reply(400, "Bad presentity URI")
            return
        body = bytes(req.body or b"")
        if len(body) > self.params.max_body_size:
            self._refuse_limit(ctx, "presence.max_body_size",
                               f"a {len(body)}-byte PUBLISH body", 413,
                               "Request Entity Too Large", ())
            return
        ctype = (req.get("content-type") or "").strip()
        if body:
            try:
                pkg.validate(ctype, body)
            except BadBody as exc:
                status = getattr(exc, "status", 400)
                reason = " ".join(str(exc).split())[:160] or "Bad Request"  # one line
                self.stats["publish_bad_body"] += 1
                self.log.info("presence.badbody", "presence: PUBLISH {event} for "
                              "{presentity} refused {status}: {reason}", event=name,
                              presentity=presentity, status=status, reason=reason)
                headers = (("accept", ", ".join(pkg.content_types)),) if status == 415 else ()
                ctx.reply(status, reason, headers)
                return
        outcome = decide_publish(self.compositor, self.params, name, presentity,
                                 req.get("sip-if-match"), req.get("expires"), body)
        if outcome.limit is not None:
            self._refuse_limit(ctx, outcome.limit, f"PUBLISH {name} for {presentity}")
            return
        if outcome.status >= 300:
            self.stats["publish_refused"] += 1
            ctx.reply(outcome.status, outcome.reason, outcome.headers)
            return
        sender, _ = _uri_text(req, "from")
        # the 200 goes out ahead of the NOTIFYs the change starts (one per watcher),
        # sent at once rather than after all of them are built
        ctx.reply(200, "OK", outcome.headers)
        if outcome.action != REFRESH and self.wake is not None and \
                self.by_resource.get((name, presentity)):
            self.wake()
        self._apply(name, presentity, outcome, ctype, body, (sender or "")[:255], now)

    def _apply(self, event, presentity, outcome, ctype, body, sender, now):
        comp = self.compositor
        action = outcome.action
        self.stats["publish_" + action] += 1
        if action == REMOVE:
            self._remove_publication(event, presentity, outcome.old_etag, now)
            return
        old = comp.get(event, presentity, outcome.old_etag) if outcome.old_etag else None
        if action == REFRESH:
            ctype, body = old.content_type, old.body
        pub = Publication(outcome.etag, ctype, body, now + outcome.expires, now, sender)
        comp.put(event, presentity, pub, old_etag=outcome.old_etag)
        if old is not None:
            self.core.timer(self, ("pub", event, presentity, old.etag)).cancel()
        self.core.timer(self, ("pub", event, presentity, pub.etag)).arm(pub.expires)
        user, domain = split_presentity(presentity)
        if action == INITIAL:
            self._write(self.storage.insert(PRESENTITY, self._pub_row(event, presentity, pub)),
                        f"store the publication of {presentity}")
        else:
            self._write(self.storage.update(
                PRESENTITY, {"etag": pub.etag, "expires": int(pub.expires),
                             "received_time": int(now), "body": pub.body},
                {"username": user, "domain": domain, "event": event, "etag": old.etag}),
                f"update the publication of {presentity}")
        if action in (INITIAL, MODIFY):
            self.notify_resource(event, presentity, now)

    @staticmethod
    def _pub_row(event, presentity, pub):
        user, domain = split_presentity(presentity)
        return {"username": user, "domain": domain, "event": event, "etag": pub.etag,
                "expires": int(pub.expires), "received_time": int(pub.received),
                "body": pub.body, "sender": pub.sender, "priority": 0}

    def _remove_publication(self, event, presentity, etag, now, expired=False):
        pub = self.compositor.remove(event, presentity, etag)
        if pub is None:
            return
        self.core.timer(self, ("pub", event, presentity, etag)).cancel()
        user, domain = split_presentity(presentity)
        self._write(self.storage.delete(PRESENTITY, {"username": user, "domain": domain,
                                                     "event": event, "etag": etag}),
                    f"delete the publication of {presentity}")
        if expired:
            self.stats["publish_expired"] += 1
        self.notify_resource(event, presentity, now)

    def publish_internal(self, event, presentity_uri, source_id, content_type, body, expires,
                         now):
        """Publish ``body`` for ``presentity_uri`` from inside sipdisp (the
        dialog feed): it replaces the publication ``source_id`` made before
        (or adds one), ``expires`` 0 removes it; the watchers are notified.
        False when the event or the URI is not one the server keeps."""
        if event not in self.packages:
            return False
        try:
            presentity = presentity_of(parse_uri(str(presentity_uri).strip().strip("<>")))
        except SipParseError:
            return False
        if presentity is None:
            return False
        comp = self.compositor
        etag = comp.by_source.get((event, presentity, source_id))
        if expires <= 0 or body is None:
            if etag is not None:
                self._remove_publication(event, presentity, etag, now)
                if self.wake is not None:
                    self.wake()
            return True
        old = comp.get(event, presentity, etag) if etag is not None else None
        if old is None and comp.count(event, presentity) == 0 and \
                comp.presentities() >= self.params.max_presentities:
            self.stats["limit_max_presentities"] += 1
            self.core.stats[LIMIT_STATS["presence.max_presentities"]] += 1
            self.log.warn("presence.limit.internal", "presence: presence.max_presentities "
                          "reached: {event} state of {presentity} not kept", event=event,
                          presentity=presentity)
            return False
        pub = Publication(etag or comp.new_etag(), content_type, bytes(body), now + expires,
                          now, INTERNAL_SENDER + str(source_id)[:200], source_id)
        comp.put(event, presentity, pub, old_etag=etag)
        self.core.timer(self, ("pub", event, presentity, pub.etag)).arm(pub.expires)
        self.stats["publish_internal"] += 1
        if old is None:
            self._write(self.storage.insert(PRESENTITY, self._pub_row(event, presentity, pub)),
                        f"store the {event} state of {presentity}")
        else:
            user, domain = split_presentity(presentity)
            self._write(self.storage.update(
                PRESENTITY, {"expires": int(pub.expires), "received_time": int(now),
                             "body": pub.body},
                {"username": user, "domain": domain, "event": event, "etag": pub.etag}),
                f"update the {event} state of {presentity}")
        self.notify_resource(event, presentity, now)
        if self.wake is not None:
            self.wake()
        return True

    # -- SUBSCRIBE ------------------------------------------------------------------
    def handle_subscribe(self, ctx):
        """OpenSIPS ``handle_subscribe()``: make, refresh or end a subscription
        (RFC 6665 section 4.2), answer the SUBSCRIBE, NOTIFY the watcher and
        end the route; False for another method."""
        req = ctx.request
        if req.method != "SUBSCRIBE":
            return False
        if self._wait_ready(ctx):
            self._subscribe(ctx)
        stop_route()

    def _subscribe(self, ctx):
        req, now = ctx.request, ctx.now
        self.stats["subscribe_received"] += 1
        event = req.get("event")
        if event is None:
            ctx.reply(400, "Missing Event header", self._allow_events())
            return
        name, event_id = parse_event(event)
        pkg = self.packages.get(name)
        if pkg is None:
            self.stats["subscribe_bad_event"] += 1
            ctx.reply(489, "Bad Event", self._allow_events())
            return
        granted, refused = grant_expires(req.get("expires"), self.params)
        if refused is not None:
            ctx.reply(*refused)
            return
        if req.to_tag is not None:
            self._resubscribe(ctx, name, granted, now)
            return
        presentity = presentity_of(req.uri)
        watcher, display = _uri_text(req, "from")
        to_uri, _ = _uri_text(req, "to")
        try:
            contacts = req.addresses("contact")
            route_set = route_set_of(req)
        except SipParseError as exc:
            ctx.reply(400, exc.reason)
            return
        if presentity is None or watcher is None or req.from_tag is None:
            ctx.reply(400, "Bad presentity or watcher URI")
            return
        if len(contacts) != 1:
            ctx.reply(400, "Missing Contact header")
            return
        if granted != 0 and not self._room_for(ctx, name, presentity):
            return
        listener = ctx.source.listener
        sub = Subscription(
            req.call_id, req.from_tag, self.core.local_tag(req), name, presentity, watcher,
            str(contacts[0].uri), now + granted, event_id=event_id, route_set=route_set,
            remote_cseq=req.cseq or 0, socket=f"{listener.proto}:{listener.host}:{listener.port}",
            local_contact=local_contact(listener), conn=ctx.source.conn,
            source_host=ctx.source.host, watcher_display=display, to_uri=to_uri,
            status=ACTIVE if self.params.force_active else PENDING)
        headers = (("contact", f"<{sub.local_contact}>"), ("expires", str(granted)))
        if granted == 0:
            # a fetch (RFC 6665 section 4.4.3): the state once, no subscription kept
            self.stats["subscribe_fetch"] += 1
            ctx.reply(200, "OK", headers)
            self._authorize(sub, now, fetch=True)
            return
        self._add(sub, now)
        self.stats["subscribe_new"] += 1
        ctx.reply(200, "OK", headers)
        self._authorize(sub, now)

    def _room_for(self, ctx, event, presentity):
        params = self.params
        host = ctx.source.host
        what = f"SUBSCRIBE {event} for {presentity}"
        if len(self.subs) >= params.max_subscriptions:
            key = "presence.max_subscriptions"
        elif len(self.by_resource.get((event, presentity)) or ()) >= \
                params.max_watchers_per_presentity:
            key = "presence.max_watchers_per_presentity"
        elif self.by_source[host] >= params.max_subscriptions_per_source:
            key = "presence.max_subscriptions_per_source"
        else:
            return True
        self._refuse_limit(ctx, key, what)
        return False

    def _resubscribe(self, ctx, event, granted, now):
        req = ctx.request
        sub = self.subs.get((req.call_id, req.to_tag, req.from_tag))
        if sub is None or sub.event != event:
            self.stats["subscribe_unknown"] += 1
            ctx.reply(481, "Subscription does not exist")
            return
        if req.cseq is not None and req.cseq <= sub.remote_cseq:
            ctx.reply(500, "CSeq lower than the last one")  # RFC 3261 12.2.2
            return
        sub.remote_cseq = req.cseq or sub.remote_cseq
        try:
            contacts = req.addresses("contact")
        except SipParseError as exc:
            ctx.reply(400, exc.reason)
            return
        if contacts:  # a target refresh (RFC 6665 section 4.1.2.1)
            sub.contact = str(contacts[0].uri)
        if ctx.source.conn is not None:
            sub.conn = ctx.source.conn
        headers = (("contact", f"<{sub.local_contact}>"), ("expires", str(granted)))
        ctx.reply(200, "OK", headers)
        if granted == 0:
            self.stats["subscribe_ended"] += 1
            self.end(sub, "timeout", now)
            return
        self.stats["subscribe_refreshed"] += 1
        sub.expires = now + granted
        self.core.timer(self, ("sub", sub.key)).arm(sub.expires)
        self._write(self.storage.update(WATCHERS, {
            "expires": int(sub.expires), "remote_cseq": sub.remote_cseq,
            "contact": sub.contact[:255], "updated": int(now)}, self._where(sub)),
            f"refresh the subscription of {sub.watcher}")
        self.send_notify(sub, now)

    # -- the subscription table --------------------------------------------------------
    def _add(self, sub, now, store=True):
        self.subs[sub.key] = sub
        self.by_resource.setdefault((sub.event, sub.presentity), {})[sub.key] = sub
        if sub.source_host:
            self.by_source[sub.source_host] += 1
        self.core.timer(self, ("sub", sub.key)).arm(sub.expires)
        if store:
            self._write(self.storage.insert(WATCHERS, self._sub_row(sub, now)),
                        f"store the subscription of {sub.watcher}")

    def _drop(self, sub):
        """Forget ``sub`` (its row too); True if it was live."""
        if self.subs.pop(sub.key, None) is None:
            return False
        resource = (sub.event, sub.presentity)
        watchers = self.by_resource.get(resource)
        if watchers is not None:
            watchers.pop(sub.key, None)
            if not watchers:
                del self.by_resource[resource]
        if sub.source_host:
            left = self.by_source[sub.source_host] - 1
            if left > 0:
                self.by_source[sub.source_host] = left
            else:
                del self.by_source[sub.source_host]
        self.core.timer(self, ("sub", sub.key)).cancel()
        self._write(self.storage.delete(WATCHERS, self._where(sub)),
                    f"delete the subscription of {sub.watcher}")
        if sub.event == "presence":
            self._notify_winfo(sub.presentity, self.clock() if self.clock else 0)
        return True

    @staticmethod
    def _where(sub):
        return {"callid": sub.call_id, "to_tag": sub.to_tag, "from_tag": sub.from_tag}

    @staticmethod
    def _sub_row(sub, now):
        w_user, _, w_domain = sub.watcher.partition(":")[2].partition("@")
        t_user, _, t_domain = sub.to_uri.partition(":")[2].partition("@")
        return {"presentity_uri": sub.presentity[:255], "watcher_username": w_user[:64],
                "watcher_domain": w_domain.split(";")[0][:64], "to_user": t_user[:64],
                "to_domain": t_domain.split(";")[0][:64], "event": sub.event,
                "event_id": sub.event_id, "to_tag": sub.to_tag, "from_tag": sub.from_tag,
                "callid": sub.call_id, "local_cseq": sub.local_cseq,
                "remote_cseq": sub.remote_cseq, "contact": sub.contact[:255],
                "record_route": ",".join(sub.route_set) or None,
                "expires": int(sub.expires), "status": STATUS_CODES[sub.status],
                "reason": sub.reason or None, "version": sub.version,
                "socket_info": sub.socket[:64], "local_contact": sub.local_contact[:255],
                "from_user": w_user[:64], "from_domain": w_domain.split(";")[0][:64],
                "updated": int(now), "updated_winfo": 0, "flags": 0, "user_agent": ""}

    def end(self, sub, reason, now):
        """End ``sub`` with a final NOTIFY (``Subscription-State: terminated;reason=``)."""
        if not self._drop(sub):
            return
        sub.status = TERMINATED
        sub.reason = reason
        self.send_notify(sub, now, reason=reason)

    # -- authorization (presence_xml) ------------------------------------------------------
    def _authorize(self, sub, now, fetch=False):
        """Decide active / pending / rejected, then send the first NOTIFY. With
        force_active every watcher is active; else the watchers table says."""
        if self.params.force_active or sub.event == WINFO:
            sub.status = ACTIVE
            self._first_notify(sub, now, fetch)
            return
        user, _, domain = sub.watcher.partition(":")[2].partition("@")
        where = {"presentity_uri": sub.presentity, "watcher_username": user,
                 "watcher_domain": domain.split(";")[0], "event": sub.event}
        d = self.storage.select(RULES, where=where, columns=["status"])
        d.addCallbacks(self._authorized, self._rules_failed, callbackArgs=(sub, where, fetch),
                       errbackArgs=(sub, fetch))

    def _authorized(self, rows, sub, where, fetch):
        now = self.clock() if self.clock is not None else sub.expires
        if not fetch and sub.key not in self.subs:
            return
        status = rows[0]["status"] if rows else None
        if status is None:
            row = dict(where, status=RULE_PENDING, inserted_time=int(now), reason=None)
            self._write(self.storage.insert(RULES, row),
                        f"store the pending watcher {sub.watcher}")
        if status == RULE_DENY:
            self.stats["subscribe_rejected"] += 1
            if fetch:
                sub.status = TERMINATED
                self.send_notify(sub, now, reason="rejected")
            else:
                self.end(sub, "rejected", now)
        else:
            sub.status = ACTIVE if status == RULE_ALLOW else PENDING
            if not fetch:
                self._write(self.storage.update(WATCHERS, {
                    "status": STATUS_CODES[sub.status]}, self._where(sub)),
                    f"store the status of {sub.watcher}")
            self._first_notify(sub, now, fetch)
        if self.wake is not None:
            self.wake()

    def _rules_failed(self, f, sub, fetch):
        self._db_failed(f, f"read the watchers rule of {sub.watcher}")
        now = self.clock() if self.clock is not None else sub.expires
        sub.status = PENDING
        if fetch or sub.key in self.subs:
            self._first_notify(sub, now, fetch)
        if self.wake is not None:
            self.wake()

    def _first_notify(self, sub, now, fetch):
        if fetch:
            self.send_notify(sub, now, reason="timeout")
            return
        self.send_notify(sub, now)
        if sub.event == "presence":
            self._notify_winfo(sub.presentity, now)

    def set_watcher_status(self, presentity, watcher, event, status, now):
        """Apply a changed ``watchers`` rule (allow 1, deny 2, pending 0) to the
        live subscriptions of ``watcher`` (``sip:user@domain``) to ``presentity``;
        how many changed."""
        changed = 0
        for sub in list((self.by_resource.get((event, presentity)) or {}).values()):
            if sub.watcher.split(";")[0] != watcher:
                continue
            changed += 1
            if status == RULE_DENY:
                self.end(sub, "rejected", now)
                continue
            sub.status = ACTIVE if status == RULE_ALLOW else PENDING
            self.send_notify(sub, now)
        if changed and event == "presence":
            self._notify_winfo(presentity, now)
        if changed and self.wake is not None:
            self.wake()
        return changed

    def update_watchers(self, presentity, event="presence"):
        """Kamailio's ``pres_update_watchers``: read the ``watchers`` rows of
        ``presentity`` again and apply them to its live subscriptions (after
        an operator allowed or denied someone); a Deferred firing with how
        many subscriptions changed."""
        d = self.storage.select(RULES, where={"presentity_uri": presentity, "event": event})

        def apply(rows):
            now = self.clock() if self.clock is not None else 0
            changed = 0
            for row in rows:
                watcher = f"sip:{row['watcher_username']}@{row['watcher_domain']}"
                status = row["status"]
                for sub in (self.by_resource.get((event, presentity)) or {}).values():
                    if sub.watcher.split(";")[0] == watcher and sub.status != (
                            ACTIVE if status == RULE_ALLOW else PENDING):
                        changed += self.set_watcher_status(presentity, watcher, event,
                                                           status, now)
                        break
            return changed
        return d.addCallback(apply)

    # -- NOTIFY ------------------------------------------------------------------------
    def body_for(self, sub, cache=None):
        """``(content_type, body)`` of ``sub``'s next NOTIFY (None body while it is
        pending: no state is shown to an unauthorized watcher)."""
        if sub.status == PENDING or sub.reason == "rejected":
            return None, None
        pkg = self.packages[sub.event]
        if sub.event == WINFO:
            watchers = [{"id": f"{w.call_id[:32]}-{w.from_tag[:16]}", "uri": w.watcher,
                         "status": w.status,
                         "event": "approved" if w.status == ACTIVE else "subscribe"}
                         for w in (self.by_resource.get(("presence", sub.presentity))
                                   or {}).values()]
            return pkg.watcherinfo_body(sub.presentity, watchers, sub.version)
        if cache is not None:
            if sub.event not in VERSIONED:
                return cache
            stamp = getattr(pkg, "stamp_version", None)
            if stamp is not None:  # one document for all, each with its own version
                return cache[0], stamp(cache[1], sub.version)
        pubs = self.compositor.publications(sub.event, sub.presentity)
        triples = [(p.etag, p.content_type, p.body) for p in pubs]
        if sub.event in VERSIONED:
            return pkg.notify_body(sub.presentity, triples, version=sub.version)
        return pkg.notify_body(sub.presentity, triples)

    def notify_resource(self, event, presentity, now):
        """Send every watcher of ``presentity``'s ``event`` its NOTIFY; the
        body is built once for all of them. Returns how many were started."""
        watchers = self.by_resource.get((event, presentity))
        if not watchers:
            return 0
        body = None
        pkg = self.packages[event]
        if event not in VERSIONED or getattr(pkg, "stamp_version", None) is not None:
            pubs = self.compositor.publications(event, presentity)
            body = pkg.notify_body(presentity, [(p.etag, p.content_type, p.body) for p in pubs])
        n = 0
        wake = self.wake
        for sub in list(watchers.values()):
            n += self.send_notify(sub, now, cache=body)
            if n % WAKE_EVERY == 0 and wake is not None and n:
                wake()  # a large fan-out goes out in batches as it is built
        return n

    def _notify_winfo(self, presentity, now):
        for sub in list((self.by_resource.get((WINFO, presentity)) or {}).values()):
            self.send_notify(sub, now)

    def target_for(self, sub):
        """Where ``sub``'s NOTIFY goes: the connection its SUBSCRIBE came on
        while it is open, else the first route or the remote target over the
        listener it came on (None: unreachable, e.g. a WebSocket client whose
        connection closed: its ``*.invalid`` Contact cannot be dialled)."""
        core = self.core
        if sub.conn is not None:
            target = core.flow_target(sub.conn)
            if target is not None:
                return target
        target = self._registered_flow(sub)
        if target is not None:
            return target
        try:
            uri = sub.next_hop_uri()
        except SipParseError:
            return None
        proto = uri.transport
        host = uri.param("maddr") or uri.host
        if proto in ("ws", "wss") or not host or host.endswith(".invalid"):
            return None
        listener = core.listener_named(sub.socket) if sub.socket else None
        if listener is None or listener.proto != proto:
            listener = core.listener_for(proto, host)
        if listener is None:
            return None
        return Target(proto, host, uri.host_port[1], None, listener)

    def _registered_flow(self, sub):
        """A Target on the connection the watcher registered its Contact from
        (a WebSocket phone that reconnected, or after a restart), or None."""
        location = self.location
        if location is None or not location.in_memory:
            return None
        user, _, domain = sub.watcher.partition(":")[2].partition("@")
        key = contact_key(sub.contact)
        now = self.clock() if self.clock is not None else 0
        for binding in location.bindings(location.aor(user, domain.split(";")[0]), now):
            if binding.conn_id is not None and contact_key(binding.contact) == key:
                target = self.core.flow_target(binding.conn_id)
                if target is not None:
                    sub.conn = binding.conn_id
                    return target
        return None

    def send_notify(self, sub, now, reason=None, cache=None):
        """Send ``sub`` its next NOTIFY (the final one with ``reason``); one NOTIFY
        per dialog is in flight at a time, a change meanwhile is sent when it
        is answered. Returns 1 when one was started."""
        if sub.in_flight is not None:
            sub.dirty = True
            if reason is not None:
                sub.ending = reason
            return 0
        target = self.target_for(sub)
        if target is None:
            self.stats["notify_failed"] += 1
            self.stats["notify_unreachable"] += 1
            self.log.info("presence.unreachable", "presence: watcher {watcher} of {presentity} "
                          "cannot be reached at {contact}: subscription ended",
                          watcher=sub.watcher, presentity=sub.presentity, contact=sub.contact)
            self._drop(sub)
            return 0
        ctype, body = self.body_for(sub, cache)
        branch = self.core.new_branch()
        request = sub.notify(target.listener.via_prefix + branch, now, ctype, body, reason,
                             self.core.server_header)
        if sub.event in VERSIONED and body is not None:
            sub.version += 1
        txn = self.core.start_client(request, target, branch, self, self.core.fr_timer, now)
        sub.in_flight = txn
        sub.dirty = False
        self._inflight[txn] = sub
        self.stats["notify_sent"] += 1
        if reason is None and sub.key in self.subs:
            self._write(self.storage.update(WATCHERS, {
                "local_cseq": sub.local_cseq, "version": sub.version,
                "status": STATUS_CODES[sub.status], "updated": int(now)}, self._where(sub)),
                f"store the NOTIFY CSeq of {sub.watcher}")
        return 1

    def on_branch_response(self, txn, response, now):
        """The watcher answered a NOTIFY: 481, 408 (and any other failure but
        a 491/5xx with Retry-After) end the subscription (RFC 6665 4.2.2)."""
        if response.status < 200:
            return
        sub = self._inflight.pop(txn, None)
        if sub is None:
            return
        sub.in_flight = None
        status = response.status
        if status >= 300:
            self.stats["notify_failed"] += 1
            if sub.key in self.subs and (status in (481, 408) or not (
                    status == 491 or (status >= 500 and response.has("retry-after")))):
                self.log.info("presence.notify_failed", "presence: NOTIFY to {watcher} "
                              "answered {status} {reason}: subscription to {presentity} ended",
                              watcher=sub.watcher, status=status, reason=response.reason,
                              presentity=sub.presentity)
                self.stats["subscription_failed"] += 1
                self._drop(sub)
                return
        if sub.dirty and (sub.key in self.subs or sub.ending is not None):
            reason, sub.ending = sub.ending, None
            self.send_notify(sub, now, reason=reason)

    def on_branch_timeout(self, txn, now):
        """A NOTIFY got no answer (Timer F): the subscription ends (RFC 6665 4.2.2)."""
        sub = self._inflight.pop(txn, None)
        if sub is None:
            return
        sub.in_flight = None
        self.stats["notify_failed"] += 1
        self.stats["subscription_failed"] += 1
        self.log.info("presence.notify_timeout", "presence: NOTIFY to {watcher} not answered: "
                      "subscription to {presentity} ended", watcher=sub.watcher,
                      presentity=sub.presentity)
        self._drop(sub)

    def on_transport_error(self, txn, now):
        """The NOTIFY's connection could not be opened: as a timeout."""
        self.on_branch_timeout(txn, now)

    # -- timers ----------------------------------------------------------------------------
    def on_timer(self, name, now):
        """A publication or a subscription reached its expiry."""
        if name[0] == "pub":
            _, event, presentity, etag = name
            self._remove_publication(event, presentity, etag, now, expired=True)
        elif name[0] == "sub":
            sub = self.subs.get(name[1])
            if sub is not None:
                self.stats["subscription_expired"] += 1
                self.end(sub, "timeout", now)

    # -- restart ---------------------------------------------------------------------------
    def loading(self):
        """The state is being read back: PUBLISHes and SUBSCRIBEs wait for
        :meth:`loaded` (suspended, at most the suspender's timeout), so none
        is answered 412 or 481 for state that is still on its way."""
        if self._waiters is None:
            self._waiters = []

    def loaded(self):
        """The state is read back (or given up on): the waiting requests go on."""
        waiters, self._waiters = self._waiters, None
        for d in waiters or ():
            d.callback(None)

    def _wait_ready(self, ctx):
        if self._waiters is None or self.suspender is None:
            return True
        try:
            self.suspender.fetch(ctx, READY_KEY, self._ready_deferred)
        except FetchFailed:
            ctx.reply(500, "Presence state not available")
            return False
        return True

    def _ready_deferred(self):
        d = defer.Deferred()
        if self._waiters is None:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d

    def read_state(self, now):
        """A Deferred firing with the unexpired ``(presentity rows, active_watchers rows)``."""
        return defer.gatherResults([
            self.storage.select(PRESENTITY, where={"expires": gt(int(now))},
                                order_by=["received_time", "id"]),
            self.storage.select(WATCHERS, where={"expires": gt(int(now))}, order_by=["id"])],
            consumeErrors=True)

    def restore(self, results, now):
        """Take the rows :meth:`read_state` read (after a restart) into memory,
        arm their expiry and delete the expired rows; ``(publications,
        subscriptions)`` restored. Each subscription's next NOTIFY goes out in
        its dialog with the CSeq after the stored ``local_cseq``."""
        pres_rows, watcher_rows = results
        pubs = self._load_publications(pres_rows, now)
        out = self._load_subscriptions(watcher_rows, pubs, now)
        for table in (PRESENTITY, WATCHERS):
            self._write(self.storage.delete(table, {"expires": le(int(now))}),
                        f"delete the expired rows of {table}")
        return out

    def load(self, now):
        """:meth:`read_state` then :meth:`restore`; a Deferred firing with what was restored."""
        return self.read_state(now).addCallback(self.restore, now)

    def _load_publications(self, rows, now):
        comp = self.compositor
        n = 0
        for row in rows:
            pkg = self.packages.get(row["event"])
            presentity = f"sip:{row['username']}@{row['domain']}"
            if pkg is None or comp.get(row["event"], presentity, row["etag"]) is not None:
                continue
            body = row.get("body") or b""
            body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
            sender = row.get("sender") or ""
            source = sender[len(INTERNAL_SENDER):] if sender.startswith(INTERNAL_SENDER) \
                else None
            pub = Publication(row["etag"], pkg.content_types[0], body, row["expires"],
                              row["received_time"], sender, source)
            comp.put(row["event"], presentity, pub)
            self.core.timer(self, ("pub", row["event"], presentity, pub.etag)).arm(pub.expires)
            n += 1
        return n

    def _load_subscriptions(self, rows, pubs, now):
        n = 0
        for row in rows:
            if row["event"] not in self.packages:
                continue
            key = (row["callid"], row["to_tag"], row["from_tag"])
            if key in self.subs:
                continue
            rr = row.get("record_route") or ""
            watcher = f"sip:{row['watcher_username']}@{row['watcher_domain']}"
            to_uri = f"sip:{row['to_user']}@{row['to_domain']}"
            sub = Subscription(
                row["callid"], row["from_tag"], row["to_tag"], row["event"],
                row["presentity_uri"], watcher, row["contact"], row["expires"],
                event_id=row.get("event_id") or None, route_set=split_commas(rr) if rr else (),
                local_cseq=row["local_cseq"], remote_cseq=row["remote_cseq"],
                status=STATUS_NAMES.get(row["status"], PENDING), reason=row.get("reason") or "",
                version=row.get("version") or 0, socket=row.get("socket_info") or "",
                local_contact=row["local_contact"], to_uri=to_uri)
            self._add(sub, now, store=False)
            n += 1
        self.stats["loaded_publications"] += pubs
        self.stats["loaded_subscriptions"] += n
        if pubs or n:
            log.info("presence: {pubs} publication(s) and {subs} subscription(s) read back "
                     "from the database", pubs=pubs, subs=n)
        return pubs, n

    def stop(self):
        """Disarm every timer (the rows stay for the next start)."""
        for name in list(self.timers):
            self.core.timer(self, name).cancel()

    # -- management ------------------------------------------------------------------------
    def list(self, presentity=""):
        """The presentities with publications (``presence.list``), optionally one."""
        out = []
        for (event, who), pubs in sorted(self.compositor.state.items()):
            if presentity and who != presentity:
                continue
            out.append({"presentity": who, "event": event, "publications": [
                {"etag": p.etag, "expires": p.expires, "content_type": p.content_type,
                 "sender": p.sender, "body_size": len(p.body)} for p in pubs.values()],
                "watchers": len(self.by_resource.get((event, who)) or ())})
        return out

    def watchers(self, presentity=""):
        """The subscriptions (``presence.watchers``), optionally of one presentity."""
        return [{"presentity": s.presentity, "event": s.event, "watcher": s.watcher,
                 "status": s.status, "expires": s.expires, "call_id": s.call_id,
                 "from_tag": s.from_tag, "to_tag": s.to_tag, "contact": s.contact,
                 "local_cseq": s.local_cseq, "in_flight": s.in_flight is not None}
                for s in self.subs.values() if not presentity or s.presentity == presentity]

    def snapshot(self):
        """Counters and table sizes (``presence.stats``)."""
        out = dict(self.stats)
        out["presentities"] = self.compositor.presentities()
        out["publications"] = self.compositor.publication_count()
        out["subscriptions"] = len(self.subs)
        out["notify_in_flight"] = len(self._inflight)
        return out

    def metrics(self):
        """Prometheus families (console/metrics.py hook)."""
        yield ("sipdisp_presence_presentities", "gauge",
               "Presentities with published state (per event).", self.compositor.presentities())
        yield ("sipdisp_presence_subscriptions", "gauge", "Live subscriptions, by event.",
               [({"event": e}, n) for e, n in sorted(Counter(
                   s.event for s in self.subs.values()).items())])
        yield ("sipdisp_presence_notify_sent_total", "counter", "NOTIFY requests sent.",
               self.stats["notify_sent"])
        yield ("sipdisp_presence_notify_failed_total", "counter",
               "NOTIFYs answered with a failure, not answered, or with no way to the watcher.",
               self.stats["notify_failed"])
        yield ("sipdisp_presence_publish_total", "counter", "PUBLISH requests by outcome.",
               [({"action": a}, self.stats["publish_" + a])
                for a in (INITIAL, REFRESH, MODIFY, REMOVE, "expired", "refused")])
