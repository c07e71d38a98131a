"""REGISTER processing and ``lookup``, sans-IO (RFC 3261 section 10.3,
RFC 3327 Path, RFC 5626 outbound).

:func:`process_register` is a pure function: a REGISTER, the bindings its
address-of-record has now and ``now`` in; the reply and the changes to make
out. :class:`Registrar` wraps it for routes (Kamailio's ``save`` and
``lookup``) over a :class:`~sipdisp.registrar.usrloc.Location`.
"""

import email.utils
import sys

from ..logs import Logger, RepeatLimiter
from ..sip.address import parse_address
from ..sip.errors import SipParseError
from ..sip.headers import split_commas
from ..sip.uri import parse_uri
from ..proxy.suspend import FetchFailed, stop_route
from .usrloc import FLAG_NAT, FLAG_SIPPING, STREAM_PROTOS, Binding, methods_mask, uri_key

# save() flags: Kamailio's numbers, and OpenSIPS' letters
SAVE_MEMORY_ONLY = 0x01    # Kamailio 0x01, OpenSIPS "m": no database write
SAVE_NO_REPLY = 0x02       # Kamailio 0x02, OpenSIPS "r": the route replies
SAVE_SINGLE = 0x04         # Kamailio 0x04: keep only this REGISTER's contacts
SAVE_FORCE = 0x10          # OpenSIPS "f": over max_contacts, drop the oldest
_SAVE_LETTERS = {"m": SAVE_MEMORY_ONLY, "r": SAVE_NO_REPLY, "f": SAVE_FORCE}

MAX_CONTACT_LENGTH = 512   # the width of location.contact
MAX_EXPIRES = 2 ** 32 - 1

log = Logger(namespace="sipdisp.registrar")


def parse_save_flags(value):
    """``save`` flags from an int, ``"0x02"``, ``"2"`` or OpenSIPS letters (``"rf"``)."""
    if value is None or value == "":
        return 0
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return int(text, 0)
    except ValueError:
        pass
    flags = 0
    for letter in text:
        if letter not in _SAVE_LETTERS:
            raise ValueError(f"unknown save flag {letter!r} (known: m, r, f or a number)")
        flags |= _SAVE_LETTERS[letter]
    return flags


class RegistrarParams:
    """Kamailio registrar parameters: ``default_expires``, ``min_expires``,
    ``max_expires`` (0: no maximum), ``max_contacts`` (0: no limit),
    ``default_q``, ``use_path``, ``append_branches``, ``method_filtering``."""

    def __init__(self, default_expires=3600, min_expires=60, max_expires=3600,
                 max_contacts=0, default_q=1.0, use_path=True, append_branches=True,
                 method_filtering=False):
        self.default_expires = default_expires
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.max_contacts = max_contacts
        self.default_q = default_q
        self.use_path = use_path
        self.append_branches = append_branches
        self.method_filtering = method_filtering


class RegisterResult:
    """What :func:`process_register` decided: ``status``/``reason``/``headers``
    to answer (the 200's Contact list is built by :meth:`reply_headers`),
    and the changes: ``inserts``, ``updates`` (``(old, new)``), ``deletes``;
    ``bindings`` is the AOR's set after them."""

    __slots__ = ("status", "reason", "headers", "inserts", "updates", "deletes",
                 "bindings", "path", "outbound")

    def __init__(self, status, reason, headers=()):
        self.status = status
        self.reason = reason
        self.headers = list(headers)
        self.inserts = []
        self.updates = []
        self.deletes = []
        self.bindings = []
        self.path = ()
        self.outbound = False

    @property
    def changed(self):
        """True if anything is to be written."""
        return bool(self.inserts or self.updates or self.deletes)

    def reply_headers(self, now):
        """Contact (one per binding, with its remaining expiry), Date, Path
        when the UA supports it (RFC 3327 5.3), Require: outbound (RFC 5626)."""
        out = []
        for b in sorted(self.bindings, key=lambda b: -b.q):
            value = f"<{b.contact}>;expires={max(0, int(b.expires - now + 0.5))}"
            if b.q != 1.0:
                value += f";q={b.q:.3g}"
            if b.instance:
                value += f';+sip.instance="{b.instance}"'
                if b.reg_id:
                    value += f";reg-id={b.reg_id}"
            out.append(("contact", value))
        for value in self.path:
            out.append(("path", value))
        if self.outbound:
            out.append(("require", "outbound"))
        out.append(("date", _http_date(now)))
        return out


_REGISTER_HEADERS = frozenset(("contact", "expires", "user-agent", "supported", "path", "allow"))
_date_cache = [None, ""]


def _http_date(now):
    """The Date header value for ``now`` (RFC 3261 20.17), made once per second."""
    second = int(now)
    if _date_cache[0] != second:
        _date_cache[0] = second
        _date_cache[1] = email.utils.formatdate(second, usegmt=True)
    return _date_cache[1]


def _error(status, reason, headers=()):
    return RegisterResult(status, reason, headers)


def _int(text):
    text = (text or "").strip()
    if not text.isdigit():
        return None
    return min(int(text), MAX_EXPIRES)


def _unquote(text):
    if text and len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return text


def process_register(req, source, existing, now, params, location, username, domain,
                     received=None, socket=None, flags=0, bflags=0):
    """RFC 3261 10.3 steps 6-8 for one REGISTER whose AOR has ``existing``
    live bindings. ``received`` is the NATed source (``fix_nated_register``),
    ``socket`` the listener it came in on (``udp:127.0.0.1:5060``),
    ``bflags`` the route's branch flags (``setbflag``), stored with each
    contact as its ``cflags`` as Kamailio's and OpenSIPS' registrars do."""
    p = params
    result = RegisterResult(200, "OK")
    callid, cseq = req.call_id, req.cseq
    current = list(existing)
    # one pass over the headers this needs (the hot path of a registrar)
    values, path, supported, allow = [], [], [], []
    expires_text = user_agent = None
    for key, _, value in req.headers:
        if key in _REGISTER_HEADERS:
            if key == "contact":
                values.extend(v for v in split_commas(value) if v)
            elif key == "expires":
                expires_text = value
            elif key == "user-agent":
                user_agent = value
            elif key == "supported":
                supported.extend(v.lower() for v in split_commas(value))
            elif key == "path":
                path.extend(split_commas(value))
            else:
                allow.extend(split_commas(value))
    expires_hdr = _int(expires_text)
    path = tuple(path) if p.use_path else ()
    echo_path = path if "path" in supported else ()
    if not values:
        result.bindings = current
        result.path = echo_path
        return result
    # Contact: * (10.3 step 6): alone, with Expires: 0, removes every binding
    if any(v.strip() == "*" for v in values):
        if len(values) != 1 or expires_hdr != 0:
            return _error(400, "Invalid Contact")
        for b in current:
            if b.callid == callid and cseq <= b.cseq:
                return _error(400, "Invalid CSeq Number")
        result.deletes = current
        result.bindings = []
        return result
    try:
        contacts = [parse_address(v, "Contact") for v in values]
    except SipParseError:
        return _error(400, "Bad Contact")
    default_methods = methods_mask(allow) if allow else None
    # a few values repeat across thousands of bindings: keep one copy of each
    user_agent = sys.intern((user_agent or "")[:255])
    stream = source.proto in STREAM_PROTOS
    touched = []
    inserted = []
    for addr in contacts:
        uri = addr.uri
        text = str(uri)
        if len(text) > MAX_CONTACT_LENGTH:
            return _error(400, "Contact Too Long")
        expires = _int(addr.param("expires"))
        if expires is None:
            expires = expires_hdr if expires_hdr is not None else p.default_expires
        if 0 < expires < p.min_expires:
            return _error(423, "Interval Too Brief", [("min-expires", str(p.min_expires))])
        if p.max_expires and expires > p.max_expires:
            expires = p.max_expires
        q = p.default_q
        qtext = addr.param("q")
        if qtext:
            try:
                q = float(qtext)
            except ValueError:
                return _error(400, "Invalid q Value")
            if not 0.0 <= q <= 1.0:
                return _error(400, "Invalid q Value")
        instance = _unquote(addr.param("+sip.instance")) or None
        reg_id = 0
        if instance and addr.param("reg-id"):
            reg_id = _int(addr.param("reg-id")) or 0
        methods = default_methods
        if addr.param("methods"):
            methods = methods_mask(_unquote(addr.param("methods")).split(","))
        # RFC 5626: a flow (instance, reg-id) replaces the binding of the same
        # flow; with an instance alone the device replaces its own binding.
        match = None
        if instance:
            for b in current:
                if b.instance == instance and b.reg_id == reg_id:
                    match = b
                    break
        if match is None:
            key = uri_key(uri)
            for b in current:
                if b.key == key and (not instance or not b.instance or b.instance == instance):
                    match = b
                    break
        host = uri.host if uri.is_sip else ""
        bound = stream and uri.is_sip and (
            uri.transport in STREAM_PROTOS or reg_id or host.endswith(".invalid")
            or source.proto in ("ws", "wss"))
        cflags = bflags
        if received or bound:
            cflags |= FLAG_NAT
        if received:
            cflags |= FLAG_SIPPING
        fields = dict(contact=text, expires=now + expires, q=q, callid=callid, cseq=cseq,
                      received=received, path=path, cflags=cflags,
                      user_agent=user_agent, socket=socket, methods=methods,
                      instance=instance, reg_id=reg_id,
                      conn_id=source.conn if bound else None, proto=source.proto,
                      last_modified=now)
        if match is not None:
            fresh = match in touched  # the same contact twice in this REGISTER
            if not fresh and match.callid == callid and cseq <= match.cseq:
                return _error(400, "Invalid CSeq Number")
            current.remove(match)
            if fresh:
                touched.remove(match)
            if expires == 0:
                if match in inserted:
                    inserted.remove(match)
                else:
                    stored = next((o for o, n in result.updates if n is match), match)
                    result.updates = [(o, n) for o, n in result.updates if n is not match]
                    result.deletes.append(stored)
                continue
            if match in inserted:
                new = match.copy(**fields)
                inserted[inserted.index(match)] = new
            elif fresh:
                new = match.copy(**fields)
                result.updates = [(o, new if n is match else n) for o, n in result.updates]
            elif bound and not location.owns(match.ruid):
                # a connection id only means something with this run's ruid
                result.deletes.append(match)
                new = Binding(location.new_ruid(), location.aor(username, domain), username,
                              domain, **fields)
                inserted.append(new)
            else:
                new = match.copy(**fields)
                result.updates.append((match, new))
            current.append(new)
            touched.append(new)
        elif expires:
            new = Binding(location.new_ruid(), location.aor(username, domain), username,
                          domain, **fields)
            inserted.append(new)
            current.append(new)
            touched.append(new)
    if flags & SAVE_SINGLE:
        for b in [b for b in current if b not in touched]:
            current.remove(b)
            result.deletes.append(b)
    if p.max_contacts and len(current) > p.max_contacts:
        if not flags & SAVE_FORCE:
            return _error(503, "Too Many Registered Contacts")
        excess = len(current) - p.max_contacts
        for b in sorted(current, key=lambda b: (b in touched, b.last_modified))[:excess]:
            current.remove(b)
            if b in inserted:
                inserted.remove(b)
                continue
            old = next((o for o, n in result.updates if n is b), None)
            if old is not None:
                result.updates = [(o, n) for o, n in result.updates if n is not b]
                b = old
            result.deletes.append(b)
    result.inserts = inserted
    result.bindings = current
    result.path = echo_path
    result.outbound = any(b.reg_id for b in touched) and "outbound" in supported
    return result


class Branch:
    """One destination of a forked request (see ProxyCore.relay_branches)."""

    __slots__ = ("uri", "dst", "flow", "routes", "binding", "bflags")

    def __init__(self, uri, dst=None, flow=None, routes=(), binding=None):
        self.uri = uri
        self.dst = dst
        self.flow = flow
        self.routes = list(routes)
        self.binding = binding
        # the branch flags the contact was saved with (usrloc cflags)
        self.bflags = binding.cflags if binding is not None else 0

    def __repr__(self):
        return f"<Branch {self.uri} dst={self.dst} flow={self.flow}>"


# lookup return codes (Kamailio's)
LOOKUP_FOUND = 1
LOOKUP_NOT_FOUND = -1
LOOKUP_METHOD = -2
LOOKUP_ERROR = -3
LOOKUP_UNREACHABLE = -4


class Registrar:
    """Kamailio's registrar functions for routes, over a Location.

    ``core`` gives ``flow_target`` (live connections) and the listeners;
    ``suspender`` suspends the route while the table is read (db_mode 3).
    ``is_local_domain(host)``, when given, says which To domains ``save``
    accepts from a REGISTER the route did not authenticate (the others get
    403 "Domain not served", so a stranger cannot fill the location table
    with addresses-of-record of any domain); None accepts every domain.

    ``max_unauthenticated_aors`` (0: no limit) caps the distinct AORs bound
    by REGISTERs the route did not authenticate: past it a REGISTER for yet
    another one gets 403, so a stranger cannot grow the location table
    without end. They are tracked with the expiry of their last binding.
    """

    def __init__(self, location, params=None, core=None, suspender=None,
                 is_local_domain=None, max_unauthenticated_aors=0):
        self.location = location
        self.params = params or RegistrarParams()
        self.max_unauthenticated_aors = max_unauthenticated_aors
        self._unauthenticated = {}  # AOR -> expiry of its last binding
        self._pruned_at = None
        self.core = core
        self.suspender = suspender
        self.is_local_domain = is_local_domain
        self.stats = {"registers": 0, "accepted": 0, "rejected": 0, "lookups": 0,
                      "lookups_found": 0, "foreign_domain": 0}
        self.log = RepeatLimiter(log, stats=core.stats if core is not None else None)

    # -- helpers ----------------------------------------------------------------
    def _bindings(self, ctx, aor):
        loc = self.location
        shared = loc.shared
        if shared is not None:
            # every node's bindings (shared.py): Redis is read while the route
            # waits, or, without Redis, what this node knows
            if not shared.available:
                return shared.local(aor, ctx.now)
            return self.suspender.fetch(ctx, f"_ul:{aor}", lambda: shared.fetch(aor, ctx.now))
        if loc.in_memory:
            return loc.bindings(aor, ctx.now)
        return self.suspender.fetch(ctx, f"_ul:{aor}", lambda: loc.fetch(aor, ctx.now))

    @staticmethod
    def _socket(source):
        lst = source.listener
        if lst is None:
            return None
        return sys.intern(f"{lst.proto}:{lst.host}:{lst.port}")

    # -- save ----------------------------------------------------------------------
    def save(self, ctx, flags=0):
        """Kamailio ``save("location"[, flags])``: process the REGISTER, store
        the changes and answer 200 with every binding (or the error: 400,
        423 with Min-Expires, 503 over ``max_contacts``). True on success."""
        req = ctx.request
        if req.method != "REGISTER":
            return False
        result = ctx.vars.get("_reg")
        if result is None:
            to = req.get("to")
            try:
                uri = parse_address(to, "To").uri if to is not None else None
            except SipParseError:
                uri = None
            if uri is None or not uri.is_sip or not uri.user:
                ctx.reply(400, "Invalid AOR")
                return False
            if not self.serves(ctx, uri.host):
                self._refuse_domain(ctx, uri.host)
                return False
            username, domain = uri.user, sys.intern(uri.host)
            aor = self.location.aor(username, domain)
            if not self._admit_unauthenticated(ctx, aor):
                return False
            try:
                existing = self._bindings(ctx, aor)
            except FetchFailed:
                ctx.reply(500, "Server Internal Error")
                stop_route()
            self.stats["registers"] += 1
            result = process_register(req, ctx.source, existing, ctx.now, self.params,
                                      self.location, username, domain,
                                      received=ctx.received,
                                      socket=self._socket(ctx.source), flags=flags,
                                      bflags=ctx.bflags)
            ctx.vars["_reg"] = result
            if result.status == 200 and result.changed:
                d = self.location.apply(aor, result.inserts, result.updates, result.deletes,
                                        memory_only=bool(flags & SAVE_MEMORY_ONLY))
                if d is not None and not self.location.in_memory:
                    ctx.vars["_reg_wait"] = d
        if result.status != 200:
            self.stats["rejected"] += 1
            if result.status == 503:
                self._count_limit("register_max_contacts",
                                  "registrar: {aor} has registrar.max_contacts ({max}) contacts: "
                                  "503 to {host}:{port}", aor=req.get("to"),
                                  max=self.params.max_contacts, host=ctx.source.host,
                                  port=ctx.source.port)
            ctx.reply(result.status, result.reason, result.headers)
            return False
        if self.max_unauthenticated_aors and ctx.auth_user is None:
            self._note_unauthenticated(result)
        wait = ctx.vars.pop("_reg_wait", None)
        if wait is not None or "_reg_written" in ctx.vars:
            self.suspender.fetch(ctx, "_reg_written", lambda: wait)
        self.stats["accepted"] += 1
        if not flags & SAVE_NO_REPLY:
            ctx.reply(200, "OK", result.reply_headers(ctx.now))
        return True

    def _count_limit(self, name, fmt, **fields):
        """Count a tripped limit in the core's counters (/metrics) and log it, rate-limited."""
        self.stats[name] = self.stats.get(name, 0) + 1
        if self.core is not None:
            self.core.stats[name] += 1
        self.log.warn(f"registrar.{name}", fmt, **fields)

    def _admit_unauthenticated(self, ctx, aor):
        """False (after answering 403) when an unauthenticated REGISTER would
        bind one AOR more than ``max_unauthenticated_aors``."""
        cap = self.max_unauthenticated_aors
        if not cap or ctx.auth_user is not None:
            return True
        known = self._unauthenticated
        if aor in known or len(known) < cap:
            return True
        now = ctx.now
        # forget the AORs whose bindings expired; at most once a second, so a
        # flood against a full table does not walk it for every REGISTER
        if self._pruned_at is None or now - self._pruned_at >= 1.0:
            self._pruned_at = now
            for old in [a for a, expires in known.items() if expires <= now]:
                del known[old]
            if len(known) < cap:
                return True
        self.stats["rejected"] += 1
        self._count_limit("register_unauthenticated_aors_refused",
                          "registrar: {max} addresses-of-record bound without authentication "
                          "(registrar.max_unauthenticated_aors): 403 to {host}:{port}",
                          max=cap, host=ctx.source.host, port=ctx.source.port)
        # stateless, like the foreign-domain refusal: nothing kept per refusal
        ctx.reply_stateless(403, "Too Many Unauthenticated Registrations")
        return False

    def _note_unauthenticated(self, result):
        """Track the AOR an unauthenticated REGISTER left bindings for (or not)."""
        bindings = result.bindings
        if bindings:
            self._unauthenticated[bindings[0].aor] = max(b.expires for b in bindings)
            return
        for b in result.deletes:
            self._unauthenticated.pop(b.aor, None)

    def serves(self, ctx, domain):
        """True if ``save`` may store an AOR of ``domain`` for this request:
        a local domain, any domain once the route authenticated the request,
        or every domain without ``is_local_domain``."""
        check = self.is_local_domain
        return check is None or ctx.auth_user is not None or check(domain)

    def _refuse_domain(self, ctx, domain):
        self.stats["rejected"] += 1
        self.stats["foreign_domain"] += 1
        if self.core is not None:
            self.core.stats["register_domain_refused"] += 1
        self.log.info("registrar.foreign_domain",
                      "registrar: REGISTER from {host}:{port} for {domain!r}, not a local "
                      "domain: 403 (proxy.domains, registrar.accept_any_domain)",
                      host=ctx.source.host, port=ctx.source.port, domain=domain)
        # stateless: no transaction kept 32 s (Timer J) per refused REGISTER
        ctx.reply_stateless(403, "Domain not served")

    # -- lookup ---------------------------------------------------------------------
    def contacts(self, ctx, uri=None, method_filtering=None):
        """``(code, bindings)``: the AOR's live bindings for the Request-URI
        (or ``uri``), best first, those that cannot be reached dropped."""
        uri = uri if uri is not None else ctx.request.uri
        if isinstance(uri, str):
            uri = parse_uri(uri)
        if not uri.is_sip or not uri.user:
            return LOOKUP_NOT_FOUND, []
        aor = self.location.aor(uri.user, uri.host)
        try:
            bindings = self._bindings(ctx, aor)
        except FetchFailed:
            return LOOKUP_ERROR, []
        if not bindings:
            return LOOKUP_NOT_FOUND, []
        method = ctx.request.method
        if method_filtering is None:
            method_filtering = self.params.method_filtering
        if method_filtering:
            bindings = [b for b in bindings if b.allows(method)]
            if not bindings:
                return LOOKUP_METHOD, []
        flow_target = self.core.flow_target if self.core is not None else (lambda c: None)
        reachable = [b for b in bindings if b.conn_id is None or flow_target(b.conn_id) is not None]
        if not reachable:
            return LOOKUP_UNREACHABLE, []
        reachable.sort(key=lambda b: (-b.q, -b.last_modified))
        return LOOKUP_FOUND, reachable

    def lookup(self, ctx, uri=None, method_filtering=None, append_branches=None):
        """Kamailio ``lookup("location"[, uri])``: point the request at the
        AOR's contacts: the Request-URI (and $du) become the best one's, and
        with ``append_branches`` every other reachable contact becomes a
        branch, so ``t_relay`` forks in parallel. False (with
        ``$var(lookup_rc)``: -1 unknown, -2 method, -3 error, -4 none
        reachable) when there is nobody to send to. ``method_filtering`` and
        ``append_branches`` override the parameters for this call (OpenSIPS'
        lookup flags ``m`` and ``b``)."""
        self.stats["lookups"] += 1
        code, bindings = self.contacts(ctx, uri, method_filtering)
        ctx.vars["lookup_rc"] = code
        if code != LOOKUP_FOUND:
            return False
        if append_branches is None:
            append_branches = self.params.append_branches
        if not append_branches:
            bindings = bindings[:1]
        branches = [self.branch(b) for b in bindings]
        branches = [b for b in branches if b is not None]
        if not branches:
            ctx.vars["lookup_rc"] = LOOKUP_UNREACHABLE
            return False
        first = branches[0]
        ctx.request.uri = first.uri
        ctx.dst_uri = first.dst
        ctx.bflags = first.bflags  # isbflagset(NAT) after lookup, as Kamailio's
        ctx.branches = branches
        self.stats["lookups_found"] += 1
        return True

    @staticmethod
    def branch(b):
        """The Branch for one binding: its Path as Route set (RFC 3327), else
        its received address (NAT), else its connection (TCP/TLS/WS flows)."""
        try:
            uri = parse_uri(b.contact)
        except SipParseError:
            return None
        if not uri.is_sip:
            return None
        dst = None
        routes = ()
        if b.path:
            routes = b.path
            try:
                first = routes[0].strip()
                dst = parse_uri(first[1:first.index(">")] if first.startswith("<") else first)
            except (SipParseError, ValueError):
                return None
        elif b.received and b.conn_id is None:
            try:
                dst = parse_uri(b.received)
            except SipParseError:
                dst = None
        return Branch(uri, dst, b.conn_id, routes, b)

    def registered(self, ctx, uri=None):
        """Kamailio ``registered("location"[, uri])``: True if the AOR has a
        live binding, reachable or not."""
        uri = uri if uri is not None else ctx.request.uri
        if isinstance(uri, str):
            uri = parse_uri(uri)
        if not uri.is_sip or not uri.user:
            return False
        try:
            return bool(self._bindings(ctx, self.location.aor(uri.user, uri.host)))
        except FetchFailed:
            return False
