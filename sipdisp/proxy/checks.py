"""Checks on a request before it is routed: RFC 3261 16.3 sanity beyond the
parser, and loop detection (16.3 step 4 with the branch hash of 16.6 step 8)."""

import hashlib

from ..sip.via import parse_via

SUPPORTED_SCHEMES = frozenset(("sip", "sips", "tel"))


def sanity(req):
    """RFC 3261 16.3 checks not done by the parser; a (status, reason, headers) or None."""
    if req.uri.scheme not in SUPPORTED_SCHEMES:
        return 416, "Unsupported URI Scheme", ()
    mf = req.get("max-forwards")
    if mf is not None and mf.isdigit() and int(mf) == 0:
        return 483, "Too Many Hops", ()
    proxy_require = req.values("proxy-require")
    if proxy_require and any(proxy_require):
        tags = ", ".join(t for t in proxy_require if t)
        return 420, "Bad Extension", (("unsupported", tags),)
    return None


class LoopDetector:
    """Writes and recognises the loop-detection part of this proxy's branches."""

    __slots__ = ("_key", "_branch_prefix")

    def __init__(self, key, branch_prefix):
        self._key = key
        self._branch_prefix = branch_prefix

    def loop_hash(self, request):
        """RFC 3261 16.6 step 8's loop-detection part of a relayed request's
        branch: what must differ when the request comes back to this proxy
        for it to be a spiral (a new Request-URI or route) and not a loop."""
        data = "\x00".join((str(request.uri), request.get("route") or "", request.call_id,
                            request.get("cseq") or "", request.from_tag or ""))
        return hashlib.blake2s(data.encode("utf-8", "surrogateescape"), key=self._key,
                               digest_size=6).hexdigest()

    def is_looping(self, request):
        """RFC 3261 16.3 step 4: True if a Via of ours carries the loop hash
        this request would get again, i.e. it came back unchanged."""
        prefix = self._branch_prefix
        for key, _name, value in request.headers:
            if key == "via" and prefix in value:
                break
        else:
            return False
        mine = self.loop_hash(request)
        for via in request.values("via"):
            branch = parse_via(via).branch or ""
            if branch.startswith(prefix) and branch.rpartition(".")[2] == mine:
                return True
        return False
