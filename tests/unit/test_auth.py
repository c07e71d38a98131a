"""Digest authentication in the built-in route with auth.enabled (Kamailio's
route[AUTH]): 401 for REGISTER, 407 for local users, 403 for identity
mismatches and relaying, trusted FreeSWITCH nodes, stale and replayed
nonces, SHA-256, stored ha1, and routes suspended while credentials are read."""

from sipdisp.auth.digest import calc_ha1
from tests.support.registrar import Stack, final, invite, requests

NODE = ("127.0.0.1", 5080)
NODES = [(0, "sip:127.0.0.1:5090"), (1, "sip:127.0.0.1:5080")]


def stack(slow=False, **config):
    """Auth on, alice and bob subscribers of example.com, one FreeSWITCH node at 5080."""
    config = dict(config)
    config["auth"] = dict({"enabled": True, "secret": "test"}, **config.get("auth", {}))
    return Stack(config, users={"alice": "secret", "bob": "hunter2"}, rows=NODES, slow=slow)


def test_register_is_challenged_then_accepted():
    """A REGISTER without credentials gets 401 with a challenge; with them, 200."""
    s = stack()
    ua = s.ua("alice", password="secret")
    resp = final(ua.send(ua.register_bytes()))
    assert resp.status == 401
    challenge = resp.get("www-authenticate")
    assert 'realm="example.com"' in challenge and "algorithm=MD5" in challenge
    assert 'qop="auth"' in challenge
    assert ua.register().status == 200
    assert s.location.count == 1


def test_wrong_password_and_unknown_user_are_challenged_again():
    """A wrong password or an unknown user gets another 401 and no binding."""
    s = stack()
    assert s.ua("alice", password="nope").register().status == 401
    assert s.ua("mallory", password="x").register().status == 401
    assert s.location.count == 0


def test_registering_someone_else_is_forbidden():
    """Alice's credentials cannot register bob: 403 Forbidden auth ID (db_check_to)."""
    s = stack()
    ua = s.ua("bob", password="secret")
    ua.user = "alice"  # credentials are alice's ...
    out = ua.send(ua.register_bytes())
    challenge = final(out).get("www-authenticate")
    auth = ua.answer(challenge, "REGISTER", "sip:example.com")
    ua.user = "bob"    # ... the To is bob
    resp = final(ua.send(ua.register_bytes(auth=auth)))
    assert (resp.status, resp.reason) == (403, "Forbidden auth ID")


def test_replayed_credentials_are_refused():
    """The same nonce and nonce-count sent again (a replay) gets 401, not 200."""
    s = stack()
    ua = s.ua("alice", password="secret")
    assert ua.register().status == 200
    replay = ua.register_bytes(auth=ua.last_auth)
    resp = final(ua.send(replay))
    assert resp.status == 401 and s.auth.stats["replayed"] == 1


def test_nonce_reuse_with_a_higher_count_is_accepted():
    """A client may reuse its nonce with nc incremented (RFC 7616 3.4)."""
    s = stack()
    ua = s.ua("alice", password="secret")
    resp = final(ua.send(ua.register_bytes()))
    challenge = resp.get("www-authenticate")
    assert final(ua.send(ua.register_bytes(auth=ua.answer(challenge, "REGISTER",
                                                          "sip:example.com")))).status == 200
    assert final(ua.send(ua.register_bytes(auth=ua.answer(challenge, "REGISTER",
                                                          "sip:example.com")))).status == 200


def test_expired_nonce_is_rechallenged_with_stale_true():
    """Right credentials on a nonce older than nonce_expire get 401 with stale=true."""
    s = stack(auth={"nonce_expire": 30})
    ua = s.ua("alice", password="secret")
    challenge = final(ua.send(ua.register_bytes())).get("www-authenticate")
    s.advance(31)
    resp = final(ua.send(ua.register_bytes(auth=ua.answer(challenge, "REGISTER",
                                                          "sip:example.com"))))
    assert resp.status == 401 and "stale=true" in resp.get("www-authenticate")


def test_nonce_from_another_address_is_refused():
    """Credentials carrying a nonce issued to another address are challenged again."""
    s = stack()
    ua = s.ua("alice", password="secret")
    challenge = final(ua.send(ua.register_bytes())).get("www-authenticate")
    auth = ua.answer(challenge, "REGISTER", "sip:example.com")
    ua.host = "10.9.9.9"
    resp = final(ua.send(ua.register_bytes(auth=auth)))
    assert resp.status == 401 and "stale" not in resp.get("www-authenticate")


def test_sha256_is_offered_first_and_works():
    """With algorithms [SHA-256, MD5] two challenges are sent, SHA-256 first, and it authenticates."""
    s = stack(auth={"algorithms": ["SHA-256", "MD5"]})
    ua = s.ua("alice", password="secret", algorithm="SHA-256")
    resp = final(ua.send(ua.register_bytes()))
    assert [c.split("algorithm=")[1].split(",")[0] for c in resp.get_all("www-authenticate")] \
        == ["SHA-256", "MD5"]
    assert ua.register().status == 200
    assert "algorithm=SHA-256" in ua.last_auth


def test_stored_ha1_is_used_without_plaintext():
    """With calculate_ha1 false the ha1 column authenticates (kamctl rows without password)."""
    s = stack(auth={"calculate_ha1": False})
    s.storage.update("subscriber", {"password": "",
                                    "ha1": calc_ha1("MD5", "alice", "example.com", "secret")},
                     where={"username": "alice"})
    s.clock.advance(0)
    assert s.ua("alice", password="secret").register().status == 200


def test_invite_from_a_local_user_is_challenged_407_then_relayed_without_credentials():
    """An INVITE claiming a local From gets 407; with Proxy-Authorization it is
    dispatched and the credentials are consumed."""
    s = stack()
    ua = s.ua("alice", password="secret")
    raw = invite("sip:5000@example.com", from_user="alice", from_domain="example.com",
                 via=("10.0.0.1", 5070))
    resp = final(ua.send(raw))
    assert resp.status == 407 and resp.get("proxy-authenticate")
    auth = ua.answer(resp.get("proxy-authenticate"), "INVITE", "sip:5000@example.com")
    raw = invite("sip:5000@example.com", from_user="alice", from_domain="example.com",
                 via=("10.0.0.1", 5070), extra=[f"Proxy-Authorization: {auth}"])
    (fwd, target), = requests(ua.send(raw), "INVITE")
    assert (target.host, target.port) == ("127.0.0.1", 5090)
    assert not fwd.has("proxy-authorization")


def test_invite_with_someone_elses_from_is_forbidden():
    """Alice's credentials with From bob: 403 Forbidden auth ID (db_check_from)."""
    s = stack()
    ua = s.ua("alice", password="secret")
    raw = invite("sip:5000@example.com", from_user="bob", from_domain="example.com",
                 via=("10.0.0.1", 5070))
    challenge = final(ua.send(raw)).get("proxy-authenticate")
    auth = ua.answer(challenge, "INVITE", "sip:5000@example.com")
    raw = invite("sip:5000@example.com", from_user="bob", from_domain="example.com",
                 via=("10.0.0.1", 5070), extra=[f"Proxy-Authorization: {auth}"])
    resp = final(ua.send(raw))
    assert (resp.status, resp.reason) == (403, "Forbidden auth ID")


def test_no_open_relay():
    """A stranger's request for a foreign domain is 403 Relay Forbidden; for a local one it passes."""
    s = stack()
    out = s.send(invite("sip:x@elsewhere.net", from_domain="stranger.org",
                        via=("10.0.0.66", 5060)), source=("10.0.0.66", 5060))
    resp = final(out)
    assert (resp.status, resp.reason) == (403, "Relay Forbidden")
    out = s.send(invite("sip:5000@example.com", from_domain="stranger.org",
                        via=("10.0.0.66", 5060)), source=("10.0.0.66", 5060))
    assert requests(out, "INVITE")


def test_freeswitch_nodes_and_trusted_addresses_are_never_challenged():
    """Requests from a dispatcher destination or an auth.trusted network skip authentication."""
    s = stack(auth={"trusted": ["192.0.2.0/24"]})
    s.ua("alice", password="secret").register()
    out = s.send(invite("sip:alice@example.com", from_user="bob", from_domain="example.com"),
                 source=NODE)
    assert requests(out, "INVITE")
    out = s.send(invite("sip:5000@example.com", from_user="bob", from_domain="example.com",
                        via=("192.0.2.7", 5060)), source=("192.0.2.7", 5060))
    assert requests(out, "INVITE")


def test_credentials_read_suspends_the_route_and_resumes_it():
    """With a storage that answers later, the REGISTER waits (nothing sent), then gets its 200."""
    s = stack(slow=True)
    ua = s.ua("alice", password="secret")
    challenge = final(ua.send(ua.register_bytes())).get("www-authenticate")
    auth = ua.answer(challenge, "REGISTER", "sip:example.com")
    out = s.send(ua.register_bytes(auth=auth), source=("10.0.0.1", 5070), settle=False)
    assert out == [] and s.service.suspender.suspended == 1
    s.settle()
    resp = final(s.take())
    assert resp.status == 200 and s.service.suspender.resumed == 1
    assert s.auth.stats["authorized"] == 1  # the nonce-count was used once, not twice


def test_local_domains_include_the_listeners_and_the_domain_table():
    """is_uri_host_local knows proxy.domains, listener addresses and (when enabled) domain rows."""
    s = stack(auth={"domain_table": True})
    s.storage.insert("domain", {"domain": "tenant.example.org"})
    s.clock.advance(0)
    s.clock.advance(s.service.reload_domains() and 0)
    auth = s.auth
    assert auth.is_domain_local("example.com") and auth.is_domain_local("127.0.0.1")
    assert auth.is_domain_local("TENANT.example.org")
    assert not auth.is_domain_local("elsewhere.net")


def test_a_read_that_never_comes_back_is_answered_500_after_the_timeout():
    """If the database does not answer within 10 s the suspended REGISTER gets 500, once."""
    s = stack(slow=True)
    s.root.modules.storage.delay = 60.0
    ua = s.ua("alice", password="secret")
    challenge = final(ua.send(ua.register_bytes())).get("www-authenticate")
    auth = ua.answer(challenge, "REGISTER", "sip:example.com")
    assert s.send(ua.register_bytes(auth=auth), source=("10.0.0.1", 5070), settle=False) == []
    out = s.advance(10.5)
    assert final(out).status == 500 and s.service.suspender.timed_out == 1
    s.clock.advance(60)
    assert s.take() == [] and s.service.suspender.resumed == 0
