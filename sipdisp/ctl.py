"""``sipdisp-ctl``: run a management command in a running sipdisp, like kamcmd::

    sipdisp-ctl core.version
    sipdisp-ctl ul.lookup alice@example.com
    sipdisp-ctl dispatcher.set_state state=inactive uri=sip:10.0.0.2:5060
    sipdisp-ctl                       # lists the commands
    sipdisp-ctl help dispatcher.list  # a command's parameters and documentation

It posts one JSON-RPC 2.0 request to ``--url`` (default
``http://127.0.0.1:5064/rpc``, or ``http.listen`` of ``-c FILE``) and prints
the result as indented JSON.  Arguments are positional; ``name=value`` passes
one by name.  Values are sent as text and converted by the server to the
declared types.  The bearer token comes from ``--token`` or, better (argv is
visible to other users), the ``SIPDISP_TOKEN`` environment variable.

Exit codes: 0 success, 1 the command failed (JSON-RPC error), 2 bad usage,
3 sipdisp unreachable or not answering JSON-RPC, 4 token missing or wrong.
"""

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:5064/rpc"
OK, FAILED, USAGE, UNREACHABLE, UNAUTHORIZED = 0, 1, 2, 3, 4
_KEYWORD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)\Z", re.S)


class CtlError(Exception):
    """A failure with the exit code it maps to."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def parse_args(words):
    """Command arguments: a list (positional only) or a dict (any ``name=value``)."""
    positional, named = [], {}
    for word in words:
        m = _KEYWORD.match(word)
        if m:
            named[m.group(1)] = m.group(2)
        elif named:
            raise CtlError(USAGE, f"positional argument {word!r} after name=value arguments")
        else:
            positional.append(word)
    if named:
        if positional:
            raise CtlError(USAGE, "give arguments all by position or all as name=value")
        return named
    return positional


def url_from_config(path):
    """The JSON-RPC URL of the ``http.listen`` address in the config file ``path``."""
    from .schema import load_config

    host, port = load_config(path).http.listen
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/rpc"


def call(url, method, params, token=None, timeout=10.0, opener=urllib.request.urlopen):
    """POST one JSON-RPC request; returns the result or raises CtlError."""
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with opener(request, timeout=timeout) as response:
            text = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise CtlError(UNAUTHORIZED, f"{url}: unauthorized (token missing or wrong)") from None
        # the listener's refusals (421 Host, 403 Origin, 413, 415) say why in a JSON body
        raise CtlError(UNREACHABLE,
                       f"{url}: HTTP {exc.code} {exc.reason}{_refusal_detail(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CtlError(UNREACHABLE, f"cannot reach sipdisp at {url}: {reason}") from None
    try:
        reply = json.loads(text)
    except ValueError:
        raise CtlError(UNREACHABLE, f"{url}: the answer is not JSON") from None
    if not isinstance(reply, dict) or reply.get("jsonrpc") != "2.0":
        raise CtlError(UNREACHABLE, f"{url}: the answer is not a JSON-RPC 2.0 response")
    if "error" in reply:
        error = reply["error"] or {}
        data = error.get("data")
        detail = f": {data}" if data not in (None, "") else ""
        raise CtlError(FAILED, f"error {error.get('code')}: {error.get('message')}{detail}")
    return reply.get("result")


def _refusal_detail(exc):
    """``": why"`` from the JSON-RPC error body of an HTTP error, or ""."""
    try:
        data = json.loads(exc.read(4096) or b"null")["error"]["data"]
    except Exception:  # noqa: BLE001 (no body, not JSON, another shape: no detail)
        return ""
    return f": {data}" if isinstance(data, str) and data else ""


def build_parser():
    """The argument parser of sipdisp-ctl."""
    parser = argparse.ArgumentParser(
        prog="sipdisp-ctl", description="Run a management command in a running sipdisp.",
        epilog="Exit codes: 0 ok, 1 command failed, 2 usage, 3 unreachable, 4 unauthorized.")
    parser.add_argument("--url", help=f"JSON-RPC endpoint (default $SIPDISP_URL or {DEFAULT_URL})")
    parser.add_argument("-c", "--config", help="take the endpoint from http.listen of this config")
    parser.add_argument("--token", help="bearer token (default $SIPDISP_TOKEN)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    parser.add_argument("--compact", action="store_true", help="one-line JSON output")
    parser.add_argument("command", nargs="?", help="module.verb, or help; none lists the commands")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments: VALUE or NAME=VALUE")
    return parser


def main(argv=None, opener=urllib.request.urlopen, out=None, err=None):
    """Entry point: returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        opts = parser.parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else USAGE
    try:
        if opts.url:
            url = opts.url
        elif opts.config:
            url = url_from_config(opts.config)
        else:
            url = os.environ.get("SIPDISP_URL") or DEFAULT_URL
        token = opts.token or os.environ.get("SIPDISP_TOKEN")
        if opts.command is None:
            method, params = "system.listMethods", []
        elif opts.command == "help":
            if len(opts.args) != 1:
                raise CtlError(USAGE, "usage: sipdisp-ctl help module.verb")
            method, params = "system.methodHelp", opts.args
        else:
            method, params = opts.command, parse_args(opts.args)
        result = call(url, method, params, token, opts.timeout, opener)
    except CtlError as exc:
        err.write(f"sipdisp-ctl: {exc}\n")
        return exc.code
    except Exception as exc:  # a config that does not load, for instance
        err.write(f"sipdisp-ctl: {exc}\n")
        return USAGE
    if opts.compact:
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
    else:
        out.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return OK


if __name__ == "__main__":
    sys.exit(main())
