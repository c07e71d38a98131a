"""Published torture messages (RFC 4475, RFC 5118, PROTOS c07-sip) through the
parser, the stream framer and the proxy core.

The messages and their manifests are in ``tests/data/sip-torture`` (see its
README.md for sources and licences). Each manifest row has an ``expect``
column, alternatives separated by ``|``:

``fwd``
    something was forwarded to the next hop; ``fwd:no-trailing-request``,
    ``fwd:startline-clean``, ``fwd:ruri-no-brackets`` and ``fwd:ruri-no-headers``
    also check the forwarded bytes or start line.
``non-error``
    something was sent (a forward, or an answer below 400) and no 4xx-6xx was
    sent back. A valid request silently dropped does not pass.
``400``, ``416`` ...
    that status was sent back to the source; ``4xx``: some 4xx was.
``drop`` / ``resp-drop``
    nothing at all was sent (``resp-drop`` is for responses).

Each message goes through two routes. ``relay`` forwards everything to the
next hop, so ``fwd`` is checked strictly: it proves the core can carry every
valid message. ``shipped`` is the route compiled from etc/sipdisp.yaml (the
Kamailio seed's request_route, dispatching to the next hop as set 0), whose
answers to some requests are deliberate policy rather than failures to parse;
where the manifest says ``fwd`` those answers are accepted, each only for the
kind of request it is meant for (see SHIPPED_POLICY).

Both routes run over UDP and over TCP (through the stream framer). Over TCP
the manifest holds too, except for the messages in TCP_UNFRAMEABLE: without a
Content-Length a message cannot be framed on a stream (RFC 3261 section 18.3),
so the answer there is 400 on the connection (or nothing, when no Via can be
read), whatever the datagram would get.
"""

import csv
import re
from pathlib import Path

import pytest

from sipdisp.proxy import Listener, ProxyCore, Target
from sipdisp.sip import KEEPALIVE, SipParseError, StreamFramer, parse_message
from tests.support import sipmsg
from tests.support.shipped import shipped_route

TORTURE = Path(__file__).resolve().parents[1] / "data" / "sip-torture"
MANIFESTS = ("rfc4475/manifest.tsv", "rfc5118/manifest.tsv", "protos-c07/manifest-real.tsv")

NEXT_HOP = ("127.0.0.1", 5080)
SOURCE_HOST, SOURCE_PORT = "198.51.100.7", 5062

#: The shipped route's policy answers, accepted where the manifest says ``fwd``:
#: (status, reason, which requests it is for, why it is not a failure).
SHIPPED_POLICY = [
    (404, "No registrar", lambda req: req.method == "REGISTER",
     "REGISTER: the REGISTRAR block answers 404 when no registrar runs (a bare core)"),
    (404, "Not here", lambda req: req.to_tag is not None and not any(
        "sdsig=" in route for route in req.values("route")),
     "an in-dialog request (To tag) with no route set sipdisp record-routed (no "
     "signed Route of ours; torture files cannot carry one): the WITHINDLG "
     "block answers 404, as Kamailio's default configuration does, and relays nothing"),
    (484, "Address Incomplete", lambda req: req.uri.user is None,
     "a Request-URI without user part: the route's 484 check"),
]

_CLEAN_REQUEST_LINE = re.compile(r"^[^ ]+ [^ <>]+ SIP/2\.0$")


def _rows():
    rows = []
    for name in MANIFESTS:
        path = TORTURE / name
        if not path.exists():
            continue
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                row["path"] = path.parent / row["file"]
                rows.append(pytest.param(row, id=f"{path.parent.name}/{row['file']}"))
    return rows


ROWS = _rows()


def test_every_manifest_is_present():
    """All three torture manifests and every file they name are in the repository, so
    no set is silently skipped."""
    missing = [m for m in MANIFESTS if not (TORTURE / m).exists()]
    assert not missing, f"torture manifests missing: {missing}"
    assert len(ROWS) == 50 + 12 + 37
    assert all(param.values[0]["path"].is_file() for param in ROWS)


# -- helpers ---------------------------------------------------------------------

def relay_route(ctx):
    """Forward everything to the next hop (sanity checks still run in the core)."""
    ctx.set_dst(f"sip:{NEXT_HOP[0]}:{NEXT_HOP[1]}")
    ctx.t_relay()


def make_core(route_name):
    """A core on UDP and TCP 127.0.0.1:5060 running the ``shipped`` or the ``relay``
    route; returns (core, UDP listener, TCP listener)."""
    listener = Listener("udp0", "udp", "127.0.0.1", 5060)
    tcp = Listener("tcp0", "tcp", "127.0.0.1", 5060)
    core = ProxyCore([listener, tcp], relay_route if route_name == "relay" else None)
    if route_name == "shipped":
        shipped_route(core, [f"sip:{NEXT_HOP[0]}:{NEXT_HOP[1]}"])
    return core, listener, tcp


def first_line(data):
    return data.split(b"\r\n", 1)[0].decode("utf-8", "surrogateescape")


class _Answer:
    def __init__(self, status, reason):
        self.status, self.reason = status, reason


def _status_line(data):
    version, status, reason = (first_line(data) + " ").split(" ", 2)
    assert version == "SIP/2.0" and status.isdigit(), first_line(data)
    return _Answer(int(status), reason.strip())


def parsed_or_none(data):
    try:
        return parse_message(data)
    except SipParseError:
        return None


class Outcome:
    """What the core sent for one torture message, sorted by destination.

    Requests count as forwarded when they go to the next hop, or (for an
    in-dialog request, RFC 3261 16.12) to the host of its first Route.
    """

    def __init__(self, data, out, source_host):
        self.data = data
        self.sent = out
        hops = {NEXT_HOP}
        req = parsed_or_none(data)
        if req is not None and req.is_request and req.to_tag is not None and any(
                req.values("route")):
            top = req.addresses("route")[0].uri
            hops.add(top.host_port)
        self.forwarded = [d for d, t in out if (t.host, t.port) in hops
                          and not d.startswith(b"SIP/2.0 ")]
        # answers copy the request's Via, From, To, Call-ID and CSeq as they came,
        # so an answer to a broken request may itself not parse: read its status line
        self.answers = [_status_line(d) for d, t in out if t.host == source_host]
        self.elsewhere = [(first_line(d), t) for d, t in out
                          if (t.host, t.port) not in hops and t.host != source_host]
        self.statuses = [a.status for a in self.answers]

    def describe(self):
        return (f"forwarded={[first_line(d) for d in self.forwarded]} "
                f"answers={[(a.status, a.reason) for a in self.answers]} "
                f"elsewhere={self.elsewhere}")


def satisfied(alt, outcome, route_name):
    """True if ``outcome`` meets one ``expect`` alternative."""
    errors = [s for s in outcome.statuses if s >= 400]
    if alt.startswith("fwd"):
        if not outcome.forwarded:
            return route_name == "shipped" and _shipped_policy_answer(outcome)
        if errors:
            return False
        fwd = outcome.forwarded[0]
        start = first_line(fwd)
        if alt == "fwd:no-trailing-request":
            msg = parse_message(outcome.data)
            trailing = outcome.data[outcome.data.index(b"\r\n\r\n") + 4 + len(msg.body):]
            assert trailing.strip(), "the file has no trailing request to leave out"
            return trailing.strip().split(b"\r\n")[0] not in fwd
        if alt == "fwd:startline-clean":
            return bool(_CLEAN_REQUEST_LINE.match(start))
        if alt == "fwd:ruri-no-brackets":
            return "<" not in start and ">" not in start
        if alt == "fwd:ruri-no-headers":
            return "?" not in start.split(" ")[1]
        assert alt == "fwd", f"unknown expectation {alt!r}"
        return True
    if alt == "non-error":
        return bool(outcome.forwarded or outcome.answers) and not errors
    if alt in ("drop", "resp-drop"):
        return not outcome.forwarded and not outcome.answers and not outcome.elsewhere
    if alt == "4xx":
        return any(400 <= s < 500 for s in outcome.statuses) and not outcome.forwarded
    assert alt.isdigit(), f"unknown expectation {alt!r}"
    return int(alt) in outcome.statuses and not outcome.forwarded


def _shipped_policy_answer(outcome):
    """The shipped route answered with one of its policy answers, and that answer
    fits the request it was given (see SHIPPED_POLICY)."""
    req = parsed_or_none(outcome.data)
    if req is None or not req.is_request or len(outcome.answers) > 2:
        return False
    finals = [a for a in outcome.answers if a.status >= 200]
    if len(finals) != 1:
        return False
    final = finals[0]
    return any(final.status == status and final.reason == reason and applies(req)
               for status, reason, applies, _ in SHIPPED_POLICY)


# -- the proxy core over UDP --------------------------------------------------------

@pytest.mark.parametrize("route_name", ["shipped", "relay"])
@pytest.mark.parametrize("row", ROWS)
def test_torture_message_through_the_core_over_udp(row, route_name):
    """The core's answer to each torture datagram is one the manifest allows, nothing is
    sent anywhere but the next hop or the source, and the core keeps serving."""
    data = row["path"].read_bytes()
    core, udp, _ = make_core(route_name)
    source = Target("udp", SOURCE_HOST, SOURCE_PORT, None, udp)
    out = core.receive(data, source, 0.0)
    outcome = Outcome(data, out, SOURCE_HOST)
    assert not outcome.elsewhere, outcome.describe()
    alternatives = row["expect"].split("|")
    assert any(satisfied(alt, outcome, route_name) for alt in alternatives), (
        f"expected {row['expect']} ({row['description']}), got {outcome.describe()}")
    # whatever it was, the next request is still served
    invite = sipmsg.request("INVITE", "sip:carol@127.0.0.1:5060", via_host=SOURCE_HOST,
                            via_port=SOURCE_PORT)
    after = Outcome(invite, core.receive(invite, source, 0.1), SOURCE_HOST)
    assert len(after.forwarded) == 1 and after.statuses == [100], after.describe()


def test_shipped_policy_answers_are_each_used_and_documented():
    """Every shipped-route policy exception is exercised by some torture message (none is
    dead weight)."""
    used = set()
    for param in ROWS:
        row = param.values[0]
        data = row["path"].read_bytes()
        core, udp, _ = make_core("shipped")
        outcome = Outcome(data, core.receive(data, Target("udp", SOURCE_HOST, SOURCE_PORT,
                                                          None, udp), 0.0), SOURCE_HOST)
        req = parsed_or_none(data)
        for status, reason, applies, _ in SHIPPED_POLICY:
            if req is not None and req.is_request and applies(req) and any(
                    (a.status, a.reason) == (status, reason) for a in outcome.answers):
                used.add((status, reason))
    assert used == {(s, r) for s, r, _, _ in SHIPPED_POLICY}


# -- parse and round trip --------------------------------------------------------------

@pytest.mark.parametrize("row", ROWS)
def test_valid_torture_messages_parse_and_round_trip(row):
    """Valid messages parse, and whatever parses re-serializes to bytes that parse back
    to the same start line, headers and body (as a datagram and as a stream frame)."""
    data = row["path"].read_bytes()
    msg = parsed_or_none(data)
    if row["class"] == "valid":
        assert msg is not None, f"valid message rejected: {row['description']}"
    if msg is None:
        return
    wire = msg.to_bytes()
    for datagram in (True, False):
        again = parse_message(wire, datagram=datagram)
        assert again.start_line() == msg.start_line()
        assert _headers(again) == _headers(msg)
        assert again.body == msg.body
        assert again.get("content-length") == str(len(msg.body))
        assert again.to_bytes() == wire


def _headers(msg):
    return [h for h in msg.headers if h[0] != "content-length"]


# -- the stream framer --------------------------------------------------------------------

def frame(chunks):
    """Frames and error from feeding ``chunks`` to a fresh framer, then an empty feed."""
    framer = StreamFramer()
    frames = []
    try:
        for chunk in chunks:
            frames.extend(framer.feed(chunk))
        frames.extend(framer.feed(b""))
    except SipParseError as exc:
        return frames, (exc.status, exc.reason), None
    return frames, None, framer.buffered


@pytest.mark.parametrize("row", ROWS)
def test_stream_framer_is_independent_of_segmentation(row):
    """Fed whole, one byte at a time, or followed by another message, each file gives the
    same frames or the same error."""
    data = row["path"].read_bytes()
    whole = frame([data])
    bytewise = frame([data[i:i + 1] for i in range(len(data))])
    assert bytewise == whole
    trailing = sipmsg.request("OPTIONS", "sip:x@127.0.0.1")
    frames, error, buffered = frame([data + trailing])
    w_frames, w_error, w_buffered = whole
    if w_error is not None:
        assert (frames, error) == (w_frames, w_error)
    elif w_buffered == 0:
        assert (frames, error, buffered) == (w_frames + [trailing], None, 0)
    else:  # an incomplete message swallows what follows as its body
        assert frames[:len(w_frames)] == w_frames
    for f in w_frames:
        if f is not KEEPALIVE:
            parsed_or_none(f)  # parses or raises SipParseError, nothing else


#: Messages without Content-Length: unframeable on a stream (RFC 3261 18.3), so over
#: TCP they get 400 on the connection (the connection is then closed), not what the
#: datagram gets. dblreq.dat is a REGISTER followed by an INVITE whose body is longer
#: than its Content-Length: on a stream that is two messages handled as such (the
#: REGISTER as over UDP, the INVITE forwarded) and a tail without Content-Length or
#: Via, which closes the connection unanswered.
TCP_UNFRAMEABLE = {
    "rfc4475/inv2543.dat": lambda outcome, route_name: (
        not outcome.forwarded and outcome.statuses == [400]),
    "rfc4475/dblreq.dat": lambda outcome, route_name: (
        [first_line(f).split(" ")[0] for f in outcome.forwarded]
        == (["REGISTER", "INVITE"] if route_name == "relay" else ["INVITE"])
        and [(a.status, a.reason) for a in outcome.answers if a.status >= 200]
        == ([] if route_name == "relay" else [(404, "No registrar")])),
}


def tcp_outcome(data, core, source):
    """Feed ``data`` to a framer as one TCP connection's bytes and every frame to the
    core; returns (Outcome, the framing error or None)."""
    framer = StreamFramer()
    out = []
    error = None
    try:
        for chunk in (data, b""):  # the empty feed raises an error held back
            for f in framer.feed(chunk):
                if f is not KEEPALIVE:
                    out.extend(core.receive(f, source, 0.0))
    except SipParseError as exc:
        error = exc
        out.extend(core.reject(exc, source))
    return Outcome(data, out, SOURCE_HOST), error, framer.buffered


#: The RFC 4475 archive copy of baddn.dat has no empty line after its headers: on a
#: stream it is an unfinished message, so nothing is sent and the framer waits.
TCP_INCOMPLETE = {"rfc4475/baddn.dat"}


@pytest.mark.parametrize("route_name", ["shipped", "relay"])
@pytest.mark.parametrize("row", ROWS)
def test_torture_message_through_the_core_over_tcp(row, route_name):
    """Over TCP each torture message gets what its manifest allows (400 or nothing for the
    unframeable ones), answers go back on the same connection, and the core keeps
    serving."""
    data = row["path"].read_bytes()
    core, _, tcp = make_core(route_name)
    source = Target("tcp", SOURCE_HOST, 40000, 7, tcp)
    outcome, error, buffered = tcp_outcome(data, core, source)
    name = f"{row['path'].parent.name}/{row['file']}"
    if name.startswith("real/"):
        name = "protos-c07/" + name
    unframeable = error is not None and error.reason == "Missing Content-Length"
    assert unframeable == (name in TCP_UNFRAMEABLE), (name, error)
    assert not outcome.elsewhere, outcome.describe()
    if name in TCP_INCOMPLETE:
        # no empty line ends the header section: the framer waits for the rest
        # (the idle timeout closes the connection), nothing is sent
        assert error is None and buffered and not outcome.sent
    elif unframeable:
        assert TCP_UNFRAMEABLE[name](outcome, route_name), outcome.describe()
    else:
        assert any(satisfied(alt, outcome, route_name) for alt in row["expect"].split("|")), (
            f"expected {row['expect']} ({row['description']}), got {outcome.describe()}")
    for sent, target in outcome.sent:
        if sent.startswith(b"SIP/2.0 "):
            assert target == source, (first_line(sent), target)  # on the same connection
    invite = sipmsg.request("INVITE", "sip:carol@127.0.0.1:5060", proto="TCP",
                            via_host=SOURCE_HOST, via_port=40000)
    after = core.receive(invite, source, 1.0)
    assert [t.port for _, t in after] == [40000, NEXT_HOP[1]]
