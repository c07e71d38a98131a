"""Digest authentication for routes (Kamailio's auth and auth_db modules).

:class:`Auth` checks ``Authorization`` / ``Proxy-Authorization`` against the
``subscriber`` table and builds challenges; it also answers "who is local"
(``is_from_local``, ``is_uri_host_local``) and "who is trusted"
(``allow_source_address``: FreeSWITCH nodes are never challenged).

Credentials come from the storage, which is asynchronous: the first run of
the route is suspended while the row is read, then run again (see
``sipdisp/proxy/suspend.py``). The outcome of an authorization is kept
in ``ctx.vars`` so the second run neither reads nor counts the nonce again.
"""

import ipaddress

from ..logs import Logger, RepeatLimiter
from ..proxy.suspend import FetchFailed, stop_route
from .digest import (ALGORITHMS, HEX_LENGTH, INVALID, STALE, DigestError, NonceFactory,
                     NotDigest, ReplayGuard, calc_ha1, challenge, check_credentials,
                     check_response, parse_credentials, parse_nc)

log = Logger(namespace="sipdisp.auth")

#: the width of subscriber.username: a longer name is nobody, not read
MAX_USERNAME = 64

TABLE = "subscriber"

# auth_challenge flags (Kamailio): qop=auth, qop=auth-int, stale=true
CHALLENGE_QOP_AUTH = 1
CHALLENGE_QOP_AUTH_INT = 2
CHALLENGE_STALE = 16

_RESULT = "_auth_result"
_STALE = "_auth_stale"
_HEADER = "_auth_header"
_CREDS = "_auth_creds"


class Auth:
    """Digest authentication and the local/trusted checks of one proxy.

    ``lookup(username, domain)`` returns a Deferred firing with the
    subscriber row (a dict with ``password``, ``ha1``, ``ha1b``) or None;
    ``suspender`` suspends the route while it is pending. ``secret`` signs
    nonces (share it between nodes; None: random per start), ``nonce_expire``
    their lifetime, ``algorithms`` those offered, in order (one challenge
    header each), ``qop`` the default qop (``auth``, ``auth-int``, or '').
    ``realm`` replaces the From/To domain as realm when set. ``domains`` are
    local domains besides the listeners' addresses; ``trusted`` addresses or
    networks are never challenged, nor the destinations of ``dispatcher``
    (given when ``auth.trust_dispatcher`` is on; anything with
    ``is_from_list(ctx, setid, mode)``).
    """

    def __init__(self, core=None, lookup=None, suspender=None, *, secret=None,
                 nonce_expire=300.0, algorithms=("MD5",), qop="auth", realm=None,
                 calculate_ha1=True, use_domain=False, bind_address=True, domains=(),
                 trusted=(), dispatcher=None, random=None):
        for name in algorithms:
            if name not in ALGORITHMS:
                raise ValueError(f"unknown digest algorithm {name!r}")
        self.core = core
        self.lookup = lookup
        self.suspender = suspender
        kwargs = {} if random is None else {"random": random}
        self.nonces = NonceFactory(secret, nonce_expire, bind_address, **kwargs)
        self.replay = ReplayGuard()
        self.algorithms = tuple(algorithms)
        self.qop = qop
        self.realm = realm
        self.calculate_ha1 = calculate_ha1
        self.use_domain = use_domain
        self.domains = {d.lower() for d in domains}
        self.table_domains = set()
        self.dispatcher = dispatcher
        self.set_trusted(trusted)
        self._listener_hosts = (None, frozenset())
        self.stats = {"challenges": 0, "authorized": 0, "failed": 0, "stale": 0,
                      "replayed": 0, "unknown_user": 0, "db_errors": 0, "malformed": 0}
        # a peer can cause these lines once per request: rate-limited
        self.log = RepeatLimiter(log, stats=core.stats if core is not None else None)

    # -- local domains and trusted peers ---------------------------------------------
    def set_trusted(self, trusted):
        """Replace the trusted addresses, networks or host names (also on SIGHUP)."""
        hosts, nets = set(), []
        for item in trusted:
            try:
                net = ipaddress.ip_network(item, strict=False)
            except ValueError:
                hosts.add(item.lower())
                continue
            if net.num_addresses == 1:
                hosts.add(str(net.network_address))
            else:
                nets.append(net)
        self._trusted_hosts, self._trusted_nets = hosts, nets

    def my_hosts(self):
        """The hosts and advertised hosts of the listeners (lower-case)."""
        listeners = self.core.listeners if self.core is not None else []
        cached_for, hosts = self._listener_hosts
        if cached_for is not listeners:
            hosts = set()
            for lst in listeners:
                hosts.add(lst.host.lower())
                hosts.add(lst.advertised_host.lower())
            hosts = frozenset(hosts)
            self._listener_hosts = (listeners, hosts)
        return hosts

    def is_domain_local(self, host):
        """True if ``host`` is a local domain: configured, in the ``domain``
        table (when loaded), or an address the proxy listens on."""
        if not host:
            return False
        host = host.lower()
        return host in self.domains or host in self.table_domains or host in self.my_hosts()

    def is_from_local(self, ctx):
        """Kamailio ``is_from_local()``: the From URI's domain is local."""
        addr = ctx.request.address("from")
        return addr is not None and addr.uri.is_sip and self.is_domain_local(addr.uri.host)

    def is_uri_host_local(self, ctx):
        """Kamailio ``is_uri_host_local()``: the Request-URI's domain is local."""
        uri = ctx.request.uri
        return uri.is_sip and self.is_domain_local(uri.host)

    def allow_source_address(self, ctx):
        """Kamailio ``allow_source_address()``: the source is in ``auth.trusted``."""
        host = ctx.source.host
        if host in self._trusted_hosts:
            return True
        if self._trusted_nets:
            try:
                addr = ipaddress.ip_address(host)
            except ValueError:
                return False
            return any(addr in net for net in self._trusted_nets if net.version == addr.version)
        return False

    def is_trusted(self, ctx):
        """True for a source never challenged: ``auth.trusted``, or a
        destination of ``dispatcher`` (a FreeSWITCH node)."""
        if self.allow_source_address(ctx):
            return True
        dispatcher = self.dispatcher
        if dispatcher is not None and dispatcher.is_from_list(ctx, -1, None):
            return True
        return False

    # -- authorization ---------------------------------------------------------------
    def realm_for(self, ctx, realm, register):
        """The realm: the argument, else ``auth.realm``, else the To (REGISTER)
        or From domain, as Kamailio's ``www_authorize("", ...)`` does."""
        if realm:
            return realm
        if self.realm:
            return self.realm
        addr = ctx.request.address("to" if register else "from")
        if addr is None or not addr.uri.is_sip:
            return ""
        return addr.uri.host

    def www_authorize(self, ctx, realm=""):
        """Kamailio ``www_authorize(realm, "subscriber")``: True if the
        ``Authorization`` credentials are right (the user is then
        ``ctx.auth_user``)."""
        return self._authorize(ctx, realm, "authorization", True)

    def proxy_authorize(self, ctx, realm=""):
        """Kamailio ``proxy_authorize(realm, "subscriber")``, for
        ``Proxy-Authorization``."""
        return self._authorize(ctx, realm, "proxy-authorization", False)

    def auth_check(self, ctx, realm="", flags=0):
        """Kamailio ``auth_check(realm, "subscriber", flags)``: www_authorize for
        REGISTER, proxy_authorize otherwise; with flag 1 also the identity
        check of db_check_to / db_check_from."""
        register = ctx.request.method == "REGISTER"
        ok = self.www_authorize(ctx, realm) if register else self.proxy_authorize(ctx, realm)
        if ok and flags & 1:
            return self.db_check_to(ctx) if register else self.db_check_from(ctx)
        return ok

    def _authorize(self, ctx, realm, header, register):
        cached = ctx.vars.get(_RESULT)
        if cached is not None:
            return cached
        found = ctx.vars.get(_CREDS)  # parsed already by a run the storage suspended
        if found is None:
            realm = self.realm_for(ctx, realm, register)
            creds = None
            for value in ctx.request.get_all(header):
                try:
                    candidate = parse_credentials(value)
                    if candidate.realm == realm:
                        check_credentials(candidate)
                except NotDigest:
                    continue
                except DigestError as exc:
                    self._malformed(ctx, header, exc)
                if candidate.realm == realm:
                    candidate.header = value
                    creds = candidate
                    break
            if creds is None:
                return False  # no credentials for us: challenge
            ctx.vars[_CREDS] = found = (creds, realm)
        creds, realm = found
        ok = self._verify(ctx, creds, realm)
        ctx.vars[_RESULT] = ok
        if ok:
            ctx.vars[_HEADER] = (header, creds.header)
            self.stats["authorized"] += 1
        else:
            self.stats["failed"] += 1
        return ok

    def _verify(self, ctx, creds, realm):
        try:
            algorithm = creds.algorithm_name
        except DigestError:
            return False
        if algorithm not in self.algorithms:
            return False
        status, expires = self.nonces.check(creds.nonce, ctx.now, ctx.source.host)
        if status == INVALID:
            return False
        qop = creds.qop
        if qop:
            if qop not in ("auth", "auth-int"):
                return False
            nc = parse_nc(creds.nc)
            if nc is None or not creds.cnonce:
                return False
        else:
            nc = 1
        username = creds.username
        domain = realm
        if len(username) > MAX_USERNAME:
            self.stats["unknown_user"] += 1
            return False
        key = f"_auth_cred:{username}@{domain}"
        try:
            row = self.suspender.fetch(ctx, key, lambda: self.lookup(username, domain))
        except FetchFailed as exc:
            self.stats["db_errors"] += 1
            self.log.warn("auth.db_error", "auth: cannot read {table} for {user!r}: {err}",
                          table=TABLE, user=username, err=exc)
            ctx.reply(500, "Server Internal Error")
            stop_route()
        if row is None:
            self.stats["unknown_user"] += 1
            return False
        ha1 = self.ha1_for(row, algorithm, username, realm)
        if ha1 is None or not check_response(creds, ha1, ctx.request.method, ctx.request.body):
            return False
        if status == STALE:
            # right password, old nonce: challenge again with stale=true (RFC 7616 3.3)
            ctx.vars[_STALE] = True
            self.stats["stale"] += 1
            return False
        if not self.replay.use(creds.nonce, nc, expires):
            self.stats["replayed"] += 1
            return False
        ctx.auth_user = (username, domain)
        return True

    def _malformed(self, ctx, header, exc):
        """Credentials that cannot be parsed or checked: 400 Bad Request,
        stateless (Kamailio's pre_auth), and the route stops."""
        self.stats["malformed"] += 1
        if self.core is not None:
            self.core.stats["auth_malformed_credentials"] += 1
        self.log.info("auth.malformed", "auth: malformed {header} from {host}:{port}: {why}",
                      header=header, host=ctx.source.host, port=ctx.source.port, why=exc)
        ctx.reply_stateless(400, "Bad Request")
        stop_route()

    def ha1_for(self, row, algorithm, username, realm):
        """``H(A1)`` for a subscriber row: computed from ``password`` with
        ``calculate_ha1``, else the stored ``ha1`` (``ha1b`` for usernames with
        ``@``) when its length fits the algorithm (32 hex digits: MD5, 64:
        SHA-256); computed from a password as a last resort."""
        password = row.get("password") or ""
        if self.calculate_ha1 and password:
            return calc_ha1(algorithm, username, realm, password)
        stored = (row.get("ha1b") if "@" in username else row.get("ha1")) or ""
        if len(stored) == HEX_LENGTH[algorithm]:
            return stored.lower()
        if password:
            return calc_ha1(algorithm, username, realm, password)
        return None

    # -- challenges -----------------------------------------------------------------
    def www_challenge(self, ctx, realm="", flags=0):
        """Kamailio ``www_challenge(realm, flags)``: answer 401 with one
        ``WWW-Authenticate`` per configured algorithm."""
        self._challenge(ctx, realm, flags, False)

    def proxy_challenge(self, ctx, realm="", flags=0):
        """Kamailio ``proxy_challenge(realm, flags)``: answer 407 with
        ``Proxy-Authenticate``."""
        self._challenge(ctx, realm, flags, True)

    def auth_challenge(self, ctx, realm="", flags=0):
        """Kamailio ``auth_challenge(realm, flags)``: 401 for REGISTER, else 407."""
        self._challenge(ctx, realm, flags, ctx.request.method != "REGISTER")

    def challenge_headers(self, ctx, realm, flags, proxy):
        """The challenge headers for this request (a fresh nonce bound to its source)."""
        realm = self.realm_for(ctx, realm, ctx.request.method == "REGISTER")
        nonce = self.nonces.make(ctx.now, ctx.source.host)
        if flags & (CHALLENGE_QOP_AUTH | CHALLENGE_QOP_AUTH_INT):
            qop = ",".join(q for bit, q in ((CHALLENGE_QOP_AUTH, "auth"),
                                             (CHALLENGE_QOP_AUTH_INT, "auth-int"))
                           if flags & bit)
        else:
            qop = self.qop
        stale = bool(ctx.vars.get(_STALE)) or bool(flags & CHALLENGE_STALE)
        key = "proxy-authenticate" if proxy else "www-authenticate"
        return [(key, challenge(realm, nonce, alg, qop, stale)) for alg in self.algorithms]

    def _challenge(self, ctx, realm, flags, proxy):
        if ctx.request.method in ("ACK", "CANCEL"):
            return
        headers = self.challenge_headers(ctx, realm, flags, proxy)
        self.stats["challenges"] += 1
        # stateless, as Kamailio sends challenges: a transaction would
        # retransmit a 407 to an INVITE until the ACK (about 11 datagrams for
        # one from a stranger who never ACKs) and keep it for 32 s
        if proxy:
            ctx.reply_stateless(407, "Proxy Authentication Required", headers)
        else:
            ctx.reply_stateless(401, "Unauthorized", headers)

    # -- after authorization ---------------------------------------------------------
    def consume_credentials(self, ctx):
        """Kamailio ``consume_credentials()``: remove the credentials that
        authorized the request, so they are not forwarded."""
        used = ctx.vars.get(_HEADER)
        if used is None:
            return False
        header, value = used
        req = ctx.request
        req.headers = [h for h in req.headers if not (h[0] == header and h[2] == value)]
        return True

    def _same_user(self, ctx, key):
        user = ctx.auth_user
        if user is None:
            return False
        addr = ctx.request.address(key)
        if addr is None or not addr.uri.is_sip:
            return False
        username, domain = user
        if addr.uri.user != username:
            return False
        if self.use_domain and addr.uri.host != (domain or "").lower():
            return False
        return True

    def db_check_to(self, ctx):
        """Kamailio ``db_check_to()``: the authenticated user is the To user."""
        return self._same_user(ctx, "to")

    def db_check_from(self, ctx):
        """Kamailio ``db_check_from()``: the authenticated user is the From user."""
        return self._same_user(ctx, "from")

    def expire(self, now):
        """Forget the nonce-counts of expired nonces."""
        return self.replay.expire(now - 1)
