"""HTTP Digest for SIP, sans-IO (RFC 3261 section 22, RFC 7616, RFC 8760).

Everything here is pure: credentials are parsed from header text, digests
computed from strings, nonces made and checked with a shared secret and an
explicit ``now``. Nothing reads a clock, a socket or a database.

Nonces are stateless and signed: ``base64url(expiry | salt | HMAC)`` where
the HMAC (SHA-256, keyed with ``secret``) covers the expiry, the salt and the
client's IP address. Any node holding the secret can check a nonce another
node issued; a nonce presented from another address does not verify. Replay
is refused by :class:`ReplayGuard`, which remembers the nonce-counts (``nc``)
already used with each nonce in a sliding window, as IPsec does with
sequence numbers (RFC 4303 section 3.4.3).
"""

import base64
import hashlib
import hmac
import os
import re
import struct

#: algorithm name (as written in the challenge) -> hashlib name; RFC 8760
#: registers SHA-256 and SHA-512-256 for SIP besides RFC 3261's MD5.
ALGORITHMS = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}

#: hex length of each algorithm's digest (tells a stored ha1's algorithm)
HEX_LENGTH = {"MD5": 32, "SHA-256": 64, "SHA-512-256": 64}

_NONCE_STRUCT = struct.Struct(">IQ")   # expiry (s), salt
_MAC_BYTES = 16
NONCE_BYTES = _NONCE_STRUCT.size + _MAC_BYTES

# nonce check outcomes
VALID = "valid"
STALE = "stale"
INVALID = "invalid"


class DigestError(ValueError):
    """Credentials that cannot be parsed or use something unsupported."""


class NotDigest(DigestError):
    """Credentials of another scheme (Basic, Bearer ...): not ours to judge."""


def hash_hex(algorithm, text):
    """``H(text)`` as lower-case hex for a challenge algorithm name (``-sess``
    variants use the same hash)."""
    name = ALGORITHMS[base_algorithm(algorithm)]
    return hashlib.new(name, text.encode("utf-8", "surrogateescape")).hexdigest()


def base_algorithm(algorithm):
    """``MD5`` for ``MD5-sess`` and so on; upper-cased; MD5 when empty (RFC 2617 3.2.2)."""
    name = (algorithm or "MD5").upper()
    if name.endswith("-SESS"):
        name = name[:-5]
    if name not in ALGORITHMS:
        raise DigestError(f"unsupported algorithm {algorithm!r}")
    return name


def calc_ha1(algorithm, username, realm, password):
    """``H(username:realm:password)`` (RFC 7616 section 3.4.2)."""
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


def session_ha1(algorithm, ha1, nonce, cnonce):
    """For ``-sess`` algorithms: ``H(H(A1):nonce:cnonce)``; otherwise ``ha1``."""
    if (algorithm or "").upper().endswith("-SESS"):
        return hash_hex(algorithm, f"{ha1}:{nonce}:{cnonce}")
    return ha1


def calc_response(algorithm, ha1, nonce, method, uri, qop=None, nc=None, cnonce=None,
                  body=b""):
    """The ``response`` value a client must send (RFC 7616 section 3.4.1;
    without qop, the RFC 2069 form RFC 3261 keeps for compatibility)."""
    if qop == "auth-int":
        a2 = f"{method}:{uri}:" + hashlib.new(
            ALGORITHMS[base_algorithm(algorithm)], body).hexdigest()
    else:
        a2 = f"{method}:{uri}"
    ha2 = hash_hex(algorithm, a2)
    ha1 = session_ha1(algorithm, ha1, nonce, cnonce)
    if qop:
        return hash_hex(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return hash_hex(algorithm, f"{ha1}:{nonce}:{ha2}")


# -- credentials ---------------------------------------------------------------

class Credentials:
    """One parsed ``Authorization`` / ``Proxy-Authorization`` value.

    ``params`` maps lower-case parameter names to unquoted values; the usual
    ones are also attributes (``username``, ``realm``, ``nonce``, ``uri``,
    ``response``, ``algorithm``, ``qop``, ``nc``, ``cnonce``, ``opaque``).
    """

    __slots__ = ("params", "header")

    def __init__(self, params, header=None):
        self.params = params
        self.header = header

    def __getattr__(self, name):
        if name in Credentials.__slots__:
            raise AttributeError(name)
        return self.params.get(name)

    @property
    def algorithm_name(self):
        """The algorithm as a key of :data:`ALGORITHMS` (``-sess`` removed)."""
        return base_algorithm(self.params.get("algorithm"))


def parse_credentials(value):
    """Parse ``Digest name=value, ...``; DigestError if it is not Digest or is malformed."""
    text = value.strip()
    scheme, _, rest = text.partition(" ")
    if scheme.lower() != "digest":
        raise NotDigest(f"not a Digest credential: {scheme[:20]!r}")
    params = parse_auth_params(rest)
    for required in ("username", "realm", "nonce", "uri", "response"):
        if required not in params:
            raise DigestError(f"credentials without {required}")
    return Credentials(params)


def check_credentials(creds):
    """Raise DigestError unless ``creds`` is well formed enough to look up
    and verify (Kamailio's check_dig_cred): a username of valid UTF-8 text
    without control characters (a NUL or a lone surrogate from invalid
    UTF-8 makes database drivers fail), and with a qop, a cnonce and an
    8-hex-digit nc (RFC 7616 section 3.4)."""
    username = creds.params["username"]
    if not username:
        raise DigestError("empty username")
    if not username.isprintable():
        # not printable: control characters (NUL included), lone surrogates
        # (the parser's stand-ins for bytes that were not UTF-8), separators
        # other than the space
        raise DigestError("username with control characters or invalid UTF-8")
    qop = creds.params.get("qop")
    if qop:
        if not creds.params.get("cnonce"):
            raise DigestError("qop without cnonce")
        if parse_nc(creds.params.get("nc")) is None:
            raise DigestError("qop without a valid nc")


_AUTH_PARAM = re.compile(r"""[\s,]*([^\s=,"]+)[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))[ \t]*""")
_ESCAPE = re.compile(r"\\(.)")


def parse_auth_params(text):
    """``a=1, b="x, y"`` -> ``{"a": "1", "b": "x, y"}`` (names lower-cased,
    quotes and backslash escapes removed); DigestError when malformed."""
    params = {}
    pos, n = 0, len(text)
    match = _AUTH_PARAM.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            if text[pos:].strip(" \t,"):
                raise DigestError("malformed auth-param")
            break
        name, quoted, token = m.groups()
        if quoted is not None:
            value = _ESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted
        else:
            value = token
        params[name.lower()] = value
        pos = m.end()
    return params


def check_response(creds, ha1, method, body=b""):
    """True if ``creds.response`` is right for ``ha1`` (constant-time compare)."""
    try:
        expected = calc_response(creds.params.get("algorithm"), ha1, creds.nonce, method,
                                 creds.uri, creds.qop, creds.nc, creds.cnonce, body)
    except DigestError:
        return False
    return hmac.compare_digest(expected, (creds.response or "").lower())


def challenge(realm, nonce, algorithm="MD5", qop="auth", stale=False, opaque=None):
    """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` value."""
    parts = [f'Digest realm="{_quote(realm)}"', f'nonce="{nonce}"']
    if opaque:
        parts.append(f'opaque="{_quote(opaque)}"')
    parts.append(f"algorithm={algorithm}")
    if qop:
        parts.append(f'qop="{qop}"')
    if stale:
        parts.append("stale=true")
    return ", ".join(parts)


def _quote(text):
    return text.replace("\\", "\\\\").replace('"', '\\"')


# -- nonces --------------------------------------------------------------------

class NonceFactory:
    """Makes and checks signed nonces (see the module docstring).

    ``secret`` (bytes or str) is shared by every node that must accept the
    others' nonces; ``expire`` is their lifetime in seconds; with
    ``bind_address`` the client's IP address is part of the signature.
    """

    def __init__(self, secret=None, expire=300.0, bind_address=True, random=os.urandom):
        if secret is None:
            secret = random(32)
        self._key = secret.encode() if isinstance(secret, str) else bytes(secret)
        self.expire = expire
        self.bind_address = bind_address
        self._random = random

    def use_secret(self, secret):
        """Sign and check with ``secret`` from now on (the cluster's shared one,
        sipdisp/shared): nonces made with the old one become invalid, and
        their clients are challenged again."""
        self._key = secret.encode() if isinstance(secret, str) else bytes(secret)

    def _mac(self, head, address):
        addr = (address or "").encode() if self.bind_address else b""
        return hmac.new(self._key, head + b"|" + addr, hashlib.sha256).digest()[:_MAC_BYTES]

    def make(self, now, address):
        """A new nonce for a client at ``address``, valid until ``now + expire``."""
        salt = int.from_bytes(self._random(8), "big")
        head = _NONCE_STRUCT.pack(int(now + self.expire) & 0xFFFFFFFF, salt)
        raw = head + self._mac(head, address)
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    def check(self, nonce, now, address):
        """:data:`VALID`, :data:`STALE` (well signed, expired) or :data:`INVALID`;
        with the nonce's expiry time (0 when invalid)."""
        if not nonce or len(nonce) > 64:
            return INVALID, 0
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return INVALID, 0
        if len(raw) != NONCE_BYTES:
            return INVALID, 0
        head, mac = raw[:_NONCE_STRUCT.size], raw[_NONCE_STRUCT.size:]
        if not hmac.compare_digest(mac, self._mac(head, address)):
            return INVALID, 0
        expires, _salt = _NONCE_STRUCT.unpack(head)
        if now > expires:
            return STALE, expires
        return VALID, expires


class ReplayGuard:
    """Which nonce-counts were used with each nonce still alive.

    ``use(nonce, nc, expires)`` is True the first time a count is seen and
    False for a replay: a count seen before, or one older than ``window``
    counts below the highest seen. A credential without qop has no count;
    it is passed as 1, so such a nonce works once. At most ``max_nonces``
    nonces are tracked; beyond that new ones are refused (the client is
    challenged again) until :meth:`expire` frees room.
    """

    __slots__ = ("window", "max_nonces", "_seen")

    def __init__(self, window=64, max_nonces=1_000_000):
        self.window = window
        self.max_nonces = max_nonces
        self._seen = {}  # nonce -> [highest nc, bitmap of the window below it, expires]

    def use(self, nonce, nc, expires):
        """Record ``nc`` for ``nonce``; False if it was used before."""
        entry = self._seen.get(nonce)
        if entry is None:
            if len(self._seen) >= self.max_nonces:
                return False
            self._seen[nonce] = [nc, 1, expires]
            return True
        top, bits, _ = entry
        if nc > top:
            shift = nc - top
            bits = ((bits << shift) | 1) & ((1 << self.window) - 1) if shift < self.window else 1
            entry[0], entry[1] = nc, bits
            return True
        offset = top - nc
        if offset >= self.window or bits >> offset & 1:
            return False
        entry[1] = bits | (1 << offset)
        return True

    def expire(self, now):
        """Forget nonces that expired before ``now``; returns how many."""
        dead = [n for n, e in self._seen.items() if e[2] < now]
        for n in dead:
            del self._seen[n]
        return len(dead)

    def __len__(self):
        return len(self._seen)


def parse_nc(value):
    """The nonce-count as an int (8 hex digits, RFC 7616 3.4); None if malformed."""
    if not value or len(value) > 8:
        return None
    try:
        return int(value, 16)
    except ValueError:
        return None
