"""sipdisp-ctl: arguments, output and exit codes, against a fake HTTP opener."""

import io
import json
import urllib.error

import pytest

from sipdisp import ctl


class FakeOpener:
    """Records the request and answers with ``reply`` (an object, bytes or an exception)."""

    def __init__(self, reply):
        self.reply = reply
        self.requests = []

    def __call__(self, request, timeout):
        self.requests.append((request, timeout))
        if isinstance(self.reply, Exception):
            raise self.reply
        body = self.reply if isinstance(self.reply, bytes) else json.dumps(self.reply).encode()
        return io.BytesIO(body)

    def sent(self):
        """The JSON body of the last request."""
        return json.loads(self.requests[-1][0].data)


def run(argv, reply):
    opener = FakeOpener(reply)
    out, err = io.StringIO(), io.StringIO()
    code = ctl.main(argv, opener=opener, out=out, err=err)
    return code, out.getvalue(), err.getvalue(), opener


def ok(result):
    return {"jsonrpc": "2.0", "result": result, "id": 1}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("SIPDISP_URL", raising=False)
    monkeypatch.delenv("SIPDISP_TOKEN", raising=False)


def test_prints_the_result_as_indented_json():
    """The result is printed as indented JSON and the exit code is 0."""
    code, out, err, opener = run(["dispatcher.list"], ok([{"set": 1, "uri": "sip:a"}]))
    assert code == 0 and err == ""
    assert json.loads(out) == [{"set": 1, "uri": "sip:a"}]
    assert out.startswith("[\n  {")
    assert opener.sent() == {"jsonrpc": "2.0", "method": "dispatcher.list", "params": [], "id": 1}
    assert opener.requests[-1][0].full_url == ctl.DEFAULT_URL


def test_positional_arguments_are_sent_as_an_array():
    """Words after the command are positional params."""
    _, _, _, opener = run(["ul.lookup", "alice@example.com", "5"], ok({}))
    assert opener.sent()["params"] == ["alice@example.com", "5"]


def test_name_value_arguments_are_sent_as_an_object():
    """name=value words are params by name."""
    _, _, _, opener = run(["dispatcher.set_state", "state=inactive", "uri=sip:a=b"], ok(None))
    assert opener.sent()["params"] == {"state": "inactive", "uri": "sip:a=b"}


def test_mixing_positional_and_named_is_a_usage_error():
    """Positional and name=value arguments together exit 2."""
    code, _, err, opener = run(["ul.lookup", "alice", "limit=5"], ok({}))
    assert code == 2 and "all by position or all as name=value" in err
    assert opener.requests == []


def test_no_command_lists_the_commands():
    """Without a command, system.listMethods is called."""
    _, out, _, opener = run([], ok(["core.version"]))
    assert opener.sent()["method"] == "system.listMethods"
    assert json.loads(out) == ["core.version"]


def test_help_asks_for_a_command_description():
    """``help X`` calls system.methodHelp with X."""
    _, _, _, opener = run(["help", "ul.lookup"], ok({"name": "ul.lookup"}))
    assert opener.sent()["method"] == "system.methodHelp"
    assert opener.sent()["params"] == ["ul.lookup"]


def test_compact_output_is_one_line():
    """--compact prints JSON on one line."""
    _, out, _, _ = run(["--compact", "core.uptime"], ok({"uptime": 3}))
    assert out == '{"uptime": 3}\n'


def test_token_goes_in_the_authorization_header(monkeypatch):
    """--token, else $SIPDISP_TOKEN, is sent as a bearer token."""
    _, _, _, opener = run(["--token", "t1", "core.version"], ok("v"))
    assert opener.requests[-1][0].get_header("Authorization") == "Bearer t1"
    monkeypatch.setenv("SIPDISP_TOKEN", "t2")
    _, _, _, opener = run(["core.version"], ok("v"))
    assert opener.requests[-1][0].get_header("Authorization") == "Bearer t2"


def test_url_from_option_env_or_config(monkeypatch, tmp_path):
    """--url wins, then -c FILE's http.listen, then $SIPDISP_URL, then the default."""
    _, _, _, opener = run(["--url", "http://127.0.0.1:9/rpc", "core.version"], ok("v"))
    assert opener.requests[-1][0].full_url == "http://127.0.0.1:9/rpc"
    cfg = tmp_path / "sipdisp.yaml"
    cfg.write_text('http:\n  listen: "[::1]:6000"\n')
    _, _, _, opener = run(["-c", str(cfg), "core.version"], ok("v"))
    assert opener.requests[-1][0].full_url == "http://[::1]:6000/rpc"
    monkeypatch.setenv("SIPDISP_URL", "http://127.0.0.1:7/rpc")
    _, _, _, opener = run(["core.version"], ok("v"))
    assert opener.requests[-1][0].full_url == "http://127.0.0.1:7/rpc"


def test_timeout_is_passed_on():
    """--timeout bounds the wait for the answer."""
    _, _, _, opener = run(["--timeout", "2.5", "core.version"], ok("v"))
    assert opener.requests[-1][1] == 2.5


def test_command_error_exits_1_with_the_message():
    """A JSON-RPC error exits 1 and prints code, message and data."""
    code, out, err, _ = run(["ul.lookup"], {"jsonrpc": "2.0", "id": 1, "error": {
        "code": -32602, "message": "Invalid params", "data": "ul.lookup: missing argument 'aor'"}})
    assert code == 1 and out == ""
    assert err == ("sipdisp-ctl: error -32602: Invalid params: "
                   "ul.lookup: missing argument 'aor'\n")


def test_unauthorized_exits_4():
    """HTTP 401 exits 4."""
    error = urllib.error.HTTPError(ctl.DEFAULT_URL, 401, "Unauthorized", {}, None)
    code, _, err, _ = run(["core.version"], error)
    assert code == 4 and "unauthorized" in err


@pytest.mark.parametrize("reply", [
    urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")),
    urllib.error.HTTPError(ctl.DEFAULT_URL, 500, "Internal Server Error", {}, None),
    TimeoutError("timed out"),
    b"<html>not json</html>",
    {"some": "json"},
])
def test_unreachable_or_not_jsonrpc_exits_3(reply):
    """No answer, an HTTP error or an answer that is not JSON-RPC exits 3."""
    code, out, err, _ = run(["core.version"], reply)
    assert code == 3 and out == "" and err.startswith("sipdisp-ctl: ")


def test_bad_usage_exits_2():
    """An unknown option exits 2."""
    code, _, _, _ = run(["--colour", "core.version"], ok("v"))
    assert code == 2


def test_help_without_a_name_is_a_usage_error():
    """``help`` alone exits 2."""
    code, _, err, _ = run(["help"], ok("v"))
    assert code == 2 and "usage" in err


def test_listener_refusal_says_why():
    """A refusal of the management listener (here 421, a Host it does not serve)
    exits 3 with the reason from the JSON error body."""
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {
        "code": -32600, "message": "Misdirected Request",
        "data": "Host does not name this listener; add the name to http.allowed_hosts"}})
    error = urllib.error.HTTPError(ctl.DEFAULT_URL, 421, "Misdirected Request", {},
                                   io.BytesIO(body.encode()))
    code, _, err, _ = run(["core.version"], error)
    assert code == 3 and "HTTP 421" in err and "http.allowed_hosts" in err


def test_requests_say_application_json():
    """sipdisp-ctl sends Content-Type: application/json (the listener refuses others)."""
    opener = FakeOpener(ok("v"))
    ctl.main(["core.version"], opener=opener, out=io.StringIO(), err=io.StringIO())
    assert opener.requests[-1][0].get_header("Content-type") == "application/json"
