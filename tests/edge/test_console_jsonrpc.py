"""JSON-RPC 2.0 over HTTP, through a real twisted.web Site on a fake transport."""

import hashlib
import json

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher

from sipdisp.commands import CommandError
from sipdisp.console.web import make_site, token_digest
from tests.support.console import HttpClient, HttpResponse, make_root

TOKEN = "a-long-random-token"


@pytest.fixture
def root(tmp_path):
    root = make_root(tmp_path)

    @root.registry.command("ul.lookup")
    def lookup(aor: str, limit: int = 10) -> dict:
        """Contacts of an address of record."""
        if aor == "missing@example.com":
            raise CommandError("ul.lookup: no such AoR")
        return {"aor": aor, "limit": limit}

    @root.registry.command("core.crash")
    def crash():
        """A bug."""
        raise ZeroDivisionError("division by zero")

    @root.registry.command("core.tags")
    def tags() -> list:
        """A result with values JSON does not know."""
        return [{"b", "a"}, b"raw", ("x", 1)]

    return root


@pytest.fixture
def http(root):
    return HttpClient(make_site(root))


def rpc(http, payload, headers=()):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return http.request("POST", "/rpc", body, headers)


def answer(response):
    assert response.headers["content-type"] == "application/json"
    return json.loads(response.body)


def test_a_call_returns_its_result_with_the_id(http, root):
    """A request is answered with the command's result and the same id."""
    out = answer(rpc(http, {"jsonrpc": "2.0", "method": "core.version", "id": "abc"}))
    assert out == {"jsonrpc": "2.0", "result": root.registry.get("core.version").func(),
                   "id": "abc"}


def test_params_by_position_and_by_name_are_converted(http):
    """Array params are positional, object params by name, both converted to the types."""
    by_pos = answer(rpc(http, {"jsonrpc": "2.0", "method": "ul.lookup",
                               "params": ["alice@example.com", "5"], "id": 1}))
    by_name = answer(rpc(http, {"jsonrpc": "2.0", "method": "ul.lookup",
                                "params": {"aor": "alice@example.com", "limit": 5}, "id": 2}))
    assert by_pos["result"] == by_name["result"] == {"aor": "alice@example.com", "limit": 5}


def test_malformed_json_is_a_parse_error(http):
    """Unparsable JSON is answered -32700 with a null id."""
    out = answer(rpc(http, b'{"jsonrpc": "2.0", "method": '))
    assert out["error"]["code"] == -32700 and out["id"] is None


@pytest.mark.parametrize("payload", [
    1,
    "core.version",
    {"method": "core.version", "id": 1},
    {"jsonrpc": "1.0", "method": "core.version", "id": 1},
    {"jsonrpc": "2.0", "method": 7, "id": 1},
    {"jsonrpc": "2.0", "method": "core.version", "params": "x", "id": 1},
    {"jsonrpc": "2.0", "method": "core.version", "id": [1]},
])
def test_invalid_requests_get_minus_32600(http, payload):
    """A request that is not a valid JSON-RPC 2.0 object is answered -32600."""
    out = answer(rpc(http, payload))
    assert out["error"]["code"] == -32600


def test_unknown_method_gets_minus_32601(http):
    """An unregistered method is answered -32601 naming it."""
    out = answer(rpc(http, {"jsonrpc": "2.0", "method": "ds.nothing", "id": 3}))
    assert out["error"] == {"code": -32601, "message": "Method not found", "data": "ds.nothing"}
    assert out["id"] == 3


@pytest.mark.parametrize("params, text", [
    ([], "missing argument 'aor'"),
    (["a", "1", "2"], "at most 2"),
    (["a", "many"], "must be int"),
    ({"aor": "a", "who": "b"}, "unknown argument"),
    (["missing@example.com"], "no such AoR"),  # CommandError raised by the command itself
])
def test_bad_arguments_get_minus_32602(http, params, text):
    """Wrong arguments, or a CommandError from the command, are answered -32602."""
    out = answer(rpc(http, {"jsonrpc": "2.0", "method": "ul.lookup", "params": params, "id": 4}))
    assert out["error"]["code"] == -32602
    assert text in out["error"]["data"]


def test_a_crashing_command_gets_minus_32603_and_is_logged(http):
    """An exception inside a command is answered -32603 and logged with its traceback."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        out = answer(rpc(http, {"jsonrpc": "2.0", "method": "core.crash", "id": 5}))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert out["error"] == {"code": -32603, "message": "Internal error",
                            "data": "ZeroDivisionError: division by zero"}
    assert any(e.get("log_failure") is not None for e in events)


def test_values_json_lacks_are_converted(http):
    """Sets, bytes and tuples in a result are sent as lists and text."""
    out = answer(rpc(http, {"jsonrpc": "2.0", "method": "core.tags", "id": 6}))
    assert out["result"] == [["a", "b"], "raw", ["x", 1]]


def test_batch_is_answered_in_order_without_notifications(http):
    """A batch gets one answer per request with an id, in order; notifications get none."""
    out = answer(rpc(http, [
        {"jsonrpc": "2.0", "method": "ul.lookup", "params": ["a"], "id": 1},
        {"jsonrpc": "2.0", "method": "core.version"},
        {"jsonrpc": "2.0", "method": "nope.nope", "id": 2},
        7,
        {"jsonrpc": "2.0", "method": "ul.lookup", "params": ["b"], "id": 3},
    ]))
    assert [r.get("id") for r in out] == [1, 2, None, 3]
    assert out[0]["result"]["aor"] == "a" and out[3]["result"]["aor"] == "b"
    assert out[1]["error"]["code"] == -32601 and out[2]["error"]["code"] == -32600


def test_empty_batch_is_one_invalid_request(http):
    """An empty array is answered with a single -32600 error."""
    out = answer(rpc(http, []))
    assert isinstance(out, dict) and out["error"]["code"] == -32600


@pytest.mark.parametrize("payload", [
    {"jsonrpc": "2.0", "method": "core.version"},
    [{"jsonrpc": "2.0", "method": "core.version"}, {"jsonrpc": "2.0", "method": "nope.x"}],
])
def test_notifications_only_get_204(http, payload):
    """A notification, or a batch of them, is answered 204 with no body."""
    response = rpc(http, payload)
    assert response.status == 204 and response.body == b""


def test_late_results_are_sent_when_they_fire(root, http):
    """A command returning a pending Deferred is answered once it fires."""
    pending = Deferred()
    root.registry.register("dispatcher.reload", lambda: pending)
    _, transport = http.open("POST", "/rpc", json.dumps(
        {"jsonrpc": "2.0", "method": "dispatcher.reload", "id": 9}).encode())
    assert transport.value() == b""
    pending.callback({"reloaded": True})
    out = answer(HttpResponse(transport.value()))
    assert out == {"jsonrpc": "2.0", "result": {"reloaded": True}, "id": 9}


def test_client_gone_before_the_result_is_no_error(root, http):
    """A client that disconnects before a late result does not break anything."""
    pending = Deferred()
    root.registry.register("dispatcher.reload", lambda: pending)
    channel, transport = http.open("POST", "/rpc", json.dumps(
        {"jsonrpc": "2.0", "method": "dispatcher.reload", "id": 9}).encode())
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure
    channel.connectionLost(Failure(ConnectionDone()))
    pending.callback(1)
    assert transport.value() == b""


def test_get_on_rpc_is_405(http):
    """Only POST is accepted on /rpc."""
    response = http.request("GET", "/rpc")
    assert response.status == 405 and response.headers["allow"] == "POST"


def test_oversized_body_is_413(http):
    """A body over 1 MiB is refused with 413."""
    big = b'{"jsonrpc": "2.0", "method": "core.version", "params": ["' + b"x" * (1 << 20) + b'"]}'
    assert rpc(http, big).status == 413


def test_unknown_path_is_404(http):
    """Paths other than /rpc and /metrics are 404."""
    assert http.request("GET", "/nothing").status == 404


# -- bearer token --------------------------------------------------------------------


@pytest.fixture
def guarded(tmp_path):
    root = make_root(tmp_path, http={"token_sha256": token_digest(TOKEN)})
    return HttpClient(make_site(root))


CALL = {"jsonrpc": "2.0", "method": "core.version", "id": 1}


@pytest.mark.parametrize("headers", [
    (),
    (("Authorization", "Bearer wrong-token"),),
    (("Authorization", f"Basic {TOKEN}"),),
    (("Authorization", "Bearer "),),
])
def test_missing_or_wrong_token_is_401(guarded, headers):
    """Without the right bearer token the answer is 401 with a Bearer challenge."""
    response = rpc(guarded, CALL, headers)
    assert response.status == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="sipdisp"'
    assert "result" not in json.loads(response.body)


def test_right_token_is_served(guarded):
    """With the right bearer token the call goes through."""
    response = rpc(guarded, CALL, (("Authorization", f"Bearer {TOKEN}"),))
    assert response.status == 200 and answer(response)["result"].startswith("sipdisp ")


def test_metrics_need_the_token_unless_configured_otherwise(tmp_path, guarded):
    """/metrics is guarded by default and open when metrics_need_token is false."""
    assert guarded.request("GET", "/metrics").status == 401
    root = make_root(tmp_path, http={"token_sha256": token_digest(TOKEN),
                                     "metrics_need_token": False})
    open_metrics = HttpClient(make_site(root))
    assert open_metrics.request("GET", "/metrics").status == 200
    assert rpc(open_metrics, CALL).status == 401


def test_token_digest_is_sha256_hex():
    """The configured value is the hex SHA-256 of the token."""
    assert token_digest(TOKEN) == hashlib.sha256(TOKEN.encode()).hexdigest()


@pytest.mark.parametrize("raw, error", [
    ({"http": {"listen": "0.0.0.0:5064"}}, "http.token_sha256: required when http.listen"),
    ({"http": {"token_sha256": "abc"}}, "http.token_sha256: must be 64 hex digits"),
])
def test_config_rules_for_the_token(raw, error):
    """A listener off loopback needs a token; the token digest must be 64 hex digits."""
    from sipdisp.config import ConfigError
    from sipdisp.schema import config_from_dict
    with pytest.raises(ConfigError, match=error):
        config_from_dict(raw)


def test_off_loopback_with_token_is_accepted():
    """Listening on all interfaces is allowed once a token is set."""
    from sipdisp.schema import config_from_dict
    cfg = config_from_dict({"http": {"listen": "0.0.0.0:5064", "token_sha256": "0" * 64}})
    assert cfg.http.listen == ("0.0.0.0", 5064)
