"""Digest arithmetic, credential parsing, signed nonces and the replay window
(RFC 2617, RFC 7616, RFC 8760), all pure and on an explicit clock."""

import pytest

from sipdisp.auth.digest import (INVALID, STALE, VALID, DigestError, NonceFactory, ReplayGuard,
                                 calc_ha1, calc_response, challenge, check_response,
                                 parse_auth_params, parse_credentials, parse_nc)

MUFASA = ("Mufasa", "http-auth@example.org", "Circle of Life")
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize("algorithm, expected", [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_section_3_9_1_responses(algorithm, expected):
    """The RFC 7616 3.9.1 example gives its published MD5 and SHA-256 responses."""
    ha1 = calc_ha1(algorithm, *MUFASA)
    got = calc_response(algorithm, ha1, RFC7616_NONCE, "GET", "/dir/index.html", "auth",
                        "00000001", RFC7616_CNONCE)
    assert got == expected


def test_rfc2617_example_response():
    """The RFC 2617 3.5 example (MD5, qop=auth) gives its published response."""
    ha1 = calc_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    got = calc_response("MD5", ha1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "GET",
                        "/dir/index.html", "auth", "00000001", "0a4f113b")
    assert got == "6629fae49393a05397450978507c4ef1"


def test_sha512_256_and_sess_variants_differ_from_plain():
    """SHA-512-256 (RFC 8760) hashes to 64 hex digits and -sess changes the response."""
    ha1 = calc_ha1("SHA-512-256", "a", "r", "p")
    assert len(ha1) == 64
    plain = calc_response("MD5", calc_ha1("MD5", "a", "r", "p"), "n", "REGISTER", "sip:r",
                          "auth", "00000001", "c")
    sess = calc_response("MD5-sess", calc_ha1("MD5", "a", "r", "p"), "n", "REGISTER", "sip:r",
                         "auth", "00000001", "c")
    assert plain != sess


def test_credentials_parse_quoted_values_with_commas_and_escapes():
    """Quoted values keep commas and lose backslash escapes; names are case-insensitive."""
    creds = parse_credentials('Digest username="al\\"ice", Realm="a, b", nonce="n", '
                              'uri="sip:a", response="r", qop=auth, nc=00000002')
    assert (creds.username, creds.realm, creds.qop, creds.nc) == ('al"ice', "a, b", "auth",
                                                                  "00000002")
    assert parse_auth_params('a=1,b="2"') == {"a": "1", "b": "2"}


@pytest.mark.parametrize("text", ['Basic dXNlcjpwYXNz', 'Digest username="a"',
                                  'Digest username="a, realm="r"'])
def test_malformed_or_incomplete_credentials_are_refused(text):
    """Non-Digest, incomplete and unterminated credentials raise DigestError."""
    with pytest.raises(DigestError):
        parse_credentials(text)


def test_check_response_accepts_the_right_password_only():
    """check_response is True for the right H(A1) and False for another one."""
    ha1 = calc_ha1("MD5", "alice", "example.com", "secret")
    resp = calc_response("MD5", ha1, "N", "REGISTER", "sip:example.com", "auth", "00000001", "c")
    creds = parse_credentials(f'Digest username="alice", realm="example.com", nonce="N", '
                              f'uri="sip:example.com", response="{resp}", qop=auth, '
                              f'nc=00000001, cnonce="c"')
    assert check_response(creds, ha1, "REGISTER")
    assert not check_response(creds, calc_ha1("MD5", "alice", "example.com", "wrong"), "REGISTER")
    assert not check_response(creds, ha1, "INVITE")


def test_nonce_is_valid_then_stale_after_expiry():
    """A nonce verifies until its expiry and is stale (still well signed) after."""
    f = NonceFactory(b"k" * 32, expire=300)
    nonce = f.make(1000.0, "10.0.0.1")
    assert f.check(nonce, 1299.0, "10.0.0.1") == (VALID, 1300)
    assert f.check(nonce, 1301.0, "10.0.0.1")[0] == STALE


def test_nonce_is_bound_to_the_client_address_and_the_secret():
    """A nonce presented from another address, or checked with another secret, is invalid."""
    f = NonceFactory("shared", expire=300)
    nonce = f.make(0.0, "10.0.0.1")
    assert f.check(nonce, 1.0, "10.0.0.2")[0] == INVALID
    assert NonceFactory("other").check(nonce, 1.0, "10.0.0.1")[0] == INVALID
    assert NonceFactory("shared").check(nonce, 1.0, "10.0.0.1")[0] == VALID  # another node
    assert NonceFactory("shared", bind_address=False).check(
        NonceFactory("shared", bind_address=False).make(0.0, "a"), 1.0, "b")[0] == VALID


@pytest.mark.parametrize("bad", ["", "x" * 80, "!!!!", "AAAA", "A" * 32])
def test_garbage_nonces_are_invalid(bad):
    """Empty, oversized, non-base64 and unsigned nonces never verify."""
    assert NonceFactory("s").check(bad, 0.0, "10.0.0.1")[0] == INVALID


def test_two_nonces_differ():
    """Each challenge gets a fresh nonce."""
    f = NonceFactory("s")
    assert f.make(0.0, "a") != f.make(0.0, "a")


def test_replay_guard_refuses_a_count_seen_before_and_accepts_reordering():
    """nc 1, 3, 2 are accepted (reordered), a second 2 and a count below the window are not."""
    g = ReplayGuard(window=4)
    assert g.use("n", 1, 100) and g.use("n", 3, 100) and g.use("n", 2, 100)
    assert not g.use("n", 2, 100)
    assert g.use("n", 10, 100)
    assert not g.use("n", 5, 100)  # fell out of the window: refused
    assert g.use("m", 1, 100)


def test_replay_guard_forgets_expired_nonces_and_is_bounded():
    """expire() frees old nonces; over max_nonces new ones are refused."""
    g = ReplayGuard(max_nonces=2)
    assert g.use("a", 1, 10) and g.use("b", 1, 50)
    assert not g.use("c", 1, 50)
    assert g.expire(20) == 1 and len(g) == 1
    assert g.use("c", 1, 50)


def test_nc_parsing():
    """nc is 8 hex digits; junk gives None."""
    assert parse_nc("0000000a") == 10 and parse_nc("zz") is None and parse_nc("") is None


def test_challenge_text():
    """A challenge names realm, nonce, algorithm, qop and stale."""
    text = challenge("example.com", "N", "SHA-256", "auth", stale=True)
    assert text == 'Digest realm="example.com", nonce="N", algorithm=SHA-256, qop="auth", stale=true'
