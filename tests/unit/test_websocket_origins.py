"""The WebSocket Origin allowlist (sipdisp.transport.origins) and the
``websocket`` section's validation: pure, no reactor."""

import pytest

from sipdisp.config import ConfigError
from sipdisp.schema import config_from_dict
from sipdisp.transport.origins import OriginPolicy, parse_origin


def test_parse_origin_fills_the_default_port():
    """An Origin without a port gets its scheme's; case and trailing dots do not matter."""
    assert parse_origin("HTTPS://Phone.Example.com.") == ("https", "phone.example.com", 443)
    assert parse_origin("http://[::1]:8080") == ("http", "[::1]", 8080)
    assert parse_origin("null") is None
    assert parse_origin("https://a.example/path") is None
    assert parse_origin("https://a.example:99999") is None


def test_default_accepts_localhost_and_own_hosts_only():
    """With no entries, localhost and the proxy's own hosts (any scheme and port) pass."""
    policy = OriginPolicy([], own_hosts=["sip.example.net", "0.0.0.0", "2001:db8::1"])
    for origin in ("http://localhost:3000", "https://127.0.0.1", "http://[::1]",
                   "https://sip.example.net:8443", "https://[2001:db8::1]"):
        assert policy.allows([origin]), origin
    for origin in ("https://evil.example", "null", "https://sip.example.net.evil.example",
                   "file://", "http://0.0.0.0"):
        assert not policy.allows([origin]), origin


def test_entry_kinds():
    """Exact origins match scheme, host and port; bare hosts any; *.domain its subdomains."""
    policy = OriginPolicy(["https://app.example.com", "partner.example.org", "*.example.io"])
    assert policy.allows(["https://app.example.com:443"])
    assert not policy.allows(["http://app.example.com"])
    assert not policy.allows(["https://app.example.com:8443"])
    assert policy.allows(["http://partner.example.org:81"])
    assert policy.allows(["https://a.b.example.io"])
    assert not policy.allows(["https://example.io"])
    assert not policy.allows(["https://badexample.io"])


def test_star_accepts_any_origin_but_not_several():
    """``*`` accepts any single Origin; two Origin headers are refused regardless."""
    policy = OriginPolicy(["*"])
    assert policy.allows(["https://anything.example"])
    assert not policy.allows(["https://a.example", "https://b.example"])


def test_missing_origin_follows_allow_missing():
    """No Origin header passes only with allow_missing."""
    assert OriginPolicy().allows([])
    assert not OriginPolicy(allow_missing=False).allows([])


@pytest.mark.parametrize("entry", ["https://a.example/x", "ftp//x", "*.", "a b", "https://"])
def test_bad_entry_names_the_key(entry):
    """A malformed websocket.allowed_origins entry stops loading with its key named."""
    with pytest.raises(ConfigError) as err:
        config_from_dict({"websocket": {"allowed_origins": ["localhost", entry]}})
    assert str(err.value).startswith("websocket.allowed_origins[1]: ")
    assert "\n" not in str(err.value)


def test_from_config_takes_listen_and_advertise_hosts():
    """The configuration's own hosts are its ws/wss listen hosts and advertise.host."""
    cfg = config_from_dict({"listen": {"ws": ["192.0.2.7:5062"]},
                            "advertise": {"host": "sip.example.net"},
                            "websocket": {"allow_missing_origin": False}})
    policy = OriginPolicy.from_config(cfg)
    assert policy.allows(["https://192.0.2.7"])
    assert policy.allows(["https://sip.example.net"])
    assert not policy.allows(["https://192.0.2.8"])
    assert not policy.allows([])
