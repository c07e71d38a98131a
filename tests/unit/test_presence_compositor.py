"""The event state compositor's decisions (RFC 3903 section 6), sans-IO:
decide_publish over a Compositor with explicit times, no core, no storage."""

import pytest

from sipdisp.presence.compositor import (INITIAL, MODIFY, REFRESH, REMOVE, Compositor,
                                         Publication, decide_publish, grant_expires)
from sipdisp.presence.server import PresenceParams

P = "sip:bob@example.com"


def apply(comp, outcome, body=b"<x/>", now=0.0):
    """What the server does with a 2xx outcome, minus storage and NOTIFY."""
    if outcome.action == REMOVE:
        comp.remove("presence", P, outcome.old_etag)
        return
    old = comp.get("presence", P, outcome.old_etag) if outcome.old_etag else None
    if outcome.action == REFRESH:
        body = old.body
    comp.put("presence", P, Publication(outcome.etag, "application/pidf+xml", body,
                                        now + outcome.expires, now),
             old_etag=outcome.old_etag)


def test_initial_publish_gets_a_new_etag_and_the_granted_expiry():
    """An initial PUBLISH with a body is 200 with SIP-ETag and Expires (cut to max_expires)."""
    comp = Compositor(prefix="t")
    out = decide_publish(comp, PresenceParams(max_expires=3600), "presence", P, None,
                         "7200", b"<x/>")
    assert (out.status, out.action, out.expires) == (200, INITIAL, 3600)
    assert dict(out.headers) == {"sip-etag": out.etag, "expires": "3600"}
    assert out.etag.startswith("t.")


def test_refresh_modify_and_remove_follow_the_etag():
    """Refresh (no body) and modify each get a fresh ETag; Expires 0 removes the publication."""
    comp, params = Compositor(), PresenceParams()
    first = decide_publish(comp, params, "presence", P, None, "600", b"<a/>")
    apply(comp, first, b"<a/>")
    refresh = decide_publish(comp, params, "presence", P, first.etag, "600", b"")
    assert (refresh.status, refresh.action, refresh.old_etag) == (200, REFRESH, first.etag)
    assert refresh.etag != first.etag
    apply(comp, refresh)
    assert [p.body for p in comp.publications("presence", P)] == [b"<a/>"]
    modify = decide_publish(comp, params, "presence", P, refresh.etag, None, b"<b/>")
    assert modify.action == MODIFY and modify.expires == 3600
    apply(comp, modify, b"<b/>")
    assert [p.body for p in comp.publications("presence", P)] == [b"<b/>"]
    remove = decide_publish(comp, params, "presence", P, modify.etag, "0", b"")
    assert (remove.status, remove.action, dict(remove.headers)) == (200, REMOVE, {"expires": "0"})
    apply(comp, remove)
    assert comp.publications("presence", P) == [] and comp.presentities() == 0


def test_an_unknown_or_superseded_etag_is_412():
    """SIP-If-Match naming no live publication (or one already replaced) is 412."""
    comp, params = Compositor(), PresenceParams()
    assert decide_publish(comp, params, "presence", P, "nope", None, b"").status == 412
    first = decide_publish(comp, params, "presence", P, None, None, b"<a/>")
    apply(comp, first)
    apply(comp, decide_publish(comp, params, "presence", P, first.etag, None, b""))
    stale = decide_publish(comp, params, "presence", P, first.etag, None, b"")
    assert (stale.status, stale.reason) == (412, "Conditional Request Failed")


@pytest.mark.parametrize("value, expected", [
    ("30", (423, "Interval Too Brief", (("min-expires", "60"),))),
    ("abc", (400, "Bad Expires header", ())),
])
def test_bad_or_too_brief_expires_is_refused(value, expected):
    """Expires below min_expires is 423 with Min-Expires; a non-number is 400."""
    assert grant_expires(value, PresenceParams(min_expires=60))[1] == expected


def test_initial_publish_needs_a_body_and_a_non_zero_expiry():
    """No SIP-If-Match and no body, or Expires 0, is 400 and nothing is kept."""
    comp, params = Compositor(), PresenceParams()
    assert decide_publish(comp, params, "presence", P, None, None, b"").status == 400
    assert decide_publish(comp, params, "presence", P, None, "0", b"<a/>").status == 400
    assert comp.presentities() == 0


def test_limits_refuse_with_503_and_name_their_key():
    """max_presentities and max_publications_per_presentity refuse with 503 + Retry-After."""
    comp = Compositor()
    params = PresenceParams(max_presentities=1, max_publications_per_presentity=2, retry_after=7)
    for _ in range(2):
        apply(comp, decide_publish(comp, params, "presence", P, None, None, b"<a/>"))
    third = decide_publish(comp, params, "presence", P, None, None, b"<a/>")
    assert (third.status, third.limit) == (503, "presence.max_publications_per_presentity")
    assert dict(third.headers) == {"retry-after": "7"}
    other = decide_publish(comp, params, "presence", "sip:carol@example.com", None, None, b"<a/>")
    assert (other.status, other.limit) == (503, "presence.max_presentities")
