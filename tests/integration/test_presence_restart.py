"""Subscriptions survive a restart: UDP watchers subscribe to a presentity of
a sipdisp on PostgreSQL (and on SQLite), sipdisp is stopped (SIGTERM) and
started again on the same listener, and a PUBLISH after the restart makes
every watcher receive its next NOTIFY in the dialog it had: same Call-ID,
same From and To tags, a higher CSeq than any NOTIFY before the restart. The publication survives
as well: the PUBLISH after the restart modifies it by its old ETag; and the
watchers' own in-dialog SUBSCRIBEs (a refresh, an unsubscribe) are answered
200 in those dialogs, not 481.

PostgreSQL comes from SIPDISP_TEST_PG_URL (scripts/ci-databases.sh); if it
cannot be reached the test is skipped. The presentity's name is unique per
run and its rows are deleted at the end, so other tests sharing the
database are not disturbed."""

import uuid

import pytest

from tests.integration.test_msilo import db_up
from tests.support.calls import wait_until
from tests.support.presence import UdpWatchers, init_db, pidf
from tests.support.processes import Sipdisp, free_port

DOMAIN = "example.com"
WATCHERS = 5


@pytest.fixture(params=["postgres", "sqlite"])
def db(request, tmp_path):
    """PostgreSQL with sipdisp's tables (``db init``; a skip if unreachable),
    or a SQLite file: ``(url, server)``."""
    from sipdisp.storage.testing import PG_URL, Unreachable, server_for
    url = PG_URL if request.param == "postgres" else f"sqlite:///{tmp_path / 'presence.db'}"
    srv = server_for(url)
    if request.param == "postgres":
        try:
            srv.check_reachable()
        except Unreachable as exc:
            pytest.skip(str(exc))
    init_db(url)
    return url, srv


def test_watchers_get_their_next_notify_in_the_same_dialog_after_a_restart(tmp_path, db):
    """Five subscriptions made before a restart reach active_watchers; after the
    restart a PUBLISH reaches all five in their own dialogs (Call-ID and both
    tags kept, CSeq above the last one before the restart), none answered 481,
    and a refresh and an unsubscribe in two of those dialogs are answered 200."""
    url, srv = db
    bob = f"bob{uuid.uuid4().hex[:8]}"
    udp = free_port()
    cfg = {"listen": {"udp": [f"127.0.0.1:{udp}"]}, "storage": {"url": url},
           "proxy": {"domains": [DOMAIN]},
           "presence": {"enabled": True, "force_active": True}}
    try:
        with UdpWatchers(udp, DOMAIN) as w:
            with Sipdisp(tmp_path, cfg).start(timeout=60) as proxy:
                assert wait_until(lambda: db_up(proxy), 20), "PostgreSQL never connected"
                subs = w.subscribe_many(bob, WATCHERS, window=5, timeout=30)
                first = w.publish(bob, pidf(f"sip:{bob}@{DOMAIN}", note="before restart"))
                assert first.status == 200, first.start
                etag = first.header("sip-etag")
                w.wait_for(lambda: all(any("before restart" in n.body for n in s.notifies)
                                       for s in subs), 20, "NOTIFYs before the restart")
                # the write queue reaches the database asynchronously
                assert wait_until(lambda: _stored(srv, bob) == WATCHERS, 20), (
                    _stored(srv, bob))
            assert "Traceback" not in proxy.log_text()
            before = {s.call_id: (len(s.notifies), max(n.cseq[0] for n in s.notifies),
                                  s.to_tag) for s in subs}

            with Sipdisp(tmp_path, cfg).start(timeout=60) as proxy:
                assert wait_until(lambda: db_up(proxy), 20), "PostgreSQL never connected"
                again = w.publish(bob, pidf(f"sip:{bob}@{DOMAIN}", note="after restart"),
                                  etag=etag)
                # the publication outlived the restart too: its ETag is still known
                assert again.status == 200, again.start
                w.wait_for(lambda: all(any("after restart" in n.body for n in s.notifies)
                                       for s in subs), 20, "NOTIFYs after the restart")
                # the dialogs work from the watcher's side too: a refresh and an unsubscribe
                refreshed, leaving = subs[0], subs[1]
                seen = (len(refreshed.notifies), len(leaving.notifies))
                refresh = w.refresh(refreshed, 600)
                unsubscribe = w.refresh(leaving, 0)
                assert refresh.done.wait(10) and unsubscribe.done.wait(10)
                assert refresh.final.status == 200, refresh.final.start
                assert unsubscribe.final.status == 200, unsubscribe.final.start
                w.wait_for(lambda: len(refreshed.notifies) > seen[0] and leaving.terminated,
                           10, "the refresh's NOTIFY and the final NOTIFY")
                assert refreshed.notifies[-1].header("subscription-state").startswith("active")
            assert "Traceback" not in proxy.log_text()
            # the unsubscribed watcher's row is gone, the others stay
            assert wait_until(lambda: _stored(srv, bob) == WATCHERS - 1, 10), _stored(srv, bob)
        for s in subs:
            count, last_cseq, notifier_tag = before[s.call_id]
            after = next(n for n in s.notifies[count:] if "after restart" in n.body)
            assert after.call_id == s.call_id
            assert after.from_tag == notifier_tag      # the notifier's tag, as before
            assert after.to_tag == s.from_tag          # the watcher's tag
            assert after.cseq[0] > last_cseq, (after.cseq, last_cseq)
            assert after.header("subscription-state", "").startswith("active")
        assert not w.unmatched, [m.start for m in w.unmatched]
    finally:
        for table, column in (("active_watchers", "presentity_uri"),
                              ("watchers", "presentity_uri")):
            try:
                srv.execute(f"DELETE FROM {table} WHERE {column} = {_ph(srv)}",
                            (f"sip:{bob}@{DOMAIN}",))
            except Exception:  # the table may not exist if the schema step failed
                pass
        try:
            srv.execute(f"DELETE FROM presentity WHERE username = {_ph(srv)}", (bob,))
        except Exception:
            pass


def _stored(srv, bob):
    rows = srv.execute(f"SELECT count(*) FROM active_watchers WHERE presentity_uri = {_ph(srv)}",
                       (f"sip:{bob}@{DOMAIN}",))
    return rows[0][0] if rows else 0


def _ph(srv):
    return "?" if srv.dialect == "sqlite" else "%s"
