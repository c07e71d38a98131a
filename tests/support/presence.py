"""Presence peers over UDP for the presence tests and the fan-out benchmark:
many watchers' subscriptions from one socket (each its own dialog), a
publisher, and PIDF bodies.

``UdpWatchers`` runs one receive thread that answers every NOTIFY 200 at
once and records it against its subscription, and retransmits its own
requests (SUBSCRIBE, PUBLISH) on RFC 3261 timer E's schedule until a final
response. Every wait is bounded. Messages are parsed with a few string
operations rather than sipdisp's parser, so the peer stays independent of the
code under test and cheap enough to answer 1,000 NOTIFYs in a burst.
"""

import itertools
import os
import re
import selectors
import socket
import subprocess
import sys
import threading
import time
import uuid

_COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "l": "content-length",
            "c": "content-type", "m": "contact", "o": "event", "u": "allow-events"}
_TAG_RE = re.compile(r";\s*tag=([^;>\s,]+)", re.I)
_counter = itertools.count(1)


def pidf(entity, basic="open", note=None, activity=None, tuple_id="t1"):
    """A PIDF document (RFC 3863) with an optional RPID activity (RFC 4480) and note."""
    person = ""
    if activity:
        person = ('<dm:person id="p1"><rpid:activities>'
                  f'<rpid:{activity}/></rpid:activities></dm:person>')
    note_xml = f"<note>{note}</note>" if note else ""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
            'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
            'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" '
            f'entity="{entity}">'
            f'<tuple id="{tuple_id}"><status><basic>{basic}</basic></status>{note_xml}</tuple>'
            f'{person}</presence>')


def init_db(url):
    """Create sipdisp's tables at ``url`` (``sipdisp db init``), as an operator
    does before the first start."""
    from .processes import ROOT
    subprocess.run([sys.executable, "-m", "sipdisp.cli", "db", "init", url], cwd=ROOT,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True, timeout=60,
                   stdout=subprocess.DEVNULL)


class Message:
    """A received SIP message: start line, headers (lower-case full names), body."""

    __slots__ = ("start", "headers", "body", "received")

    def __init__(self, start, headers, body, received):
        self.start = start
        self.headers = headers
        self.body = body
        self.received = received

    @property
    def is_request(self):
        """True for a request, False for a response."""
        return not self.start.startswith("SIP/2.0")

    @property
    def method(self):
        """The request's method (or the response's CSeq method)."""
        if self.is_request:
            return self.start.split(" ", 1)[0]
        return self.cseq[1]

    @property
    def status(self):
        """The response's status code."""
        return int(self.start.split(" ", 2)[1])

    def header(self, name, default=None):
        """The first value of header ``name``."""
        values = self.headers.get(name.lower())
        return values[0] if values else default

    @property
    def call_id(self):
        """The Call-ID."""
        return self.header("call-id")

    @property
    def cseq(self):
        """``(number, method)`` of the CSeq header."""
        number, method = self.header("cseq").split()
        return int(number), method

    @property
    def from_tag(self):
        """The From tag."""
        m = _TAG_RE.search(self.header("from", ""))
        return m.group(1) if m else None

    @property
    def to_tag(self):
        """The To tag."""
        m = _TAG_RE.search(self.header("to", ""))
        return m.group(1) if m else None


def parse(data, received=0.0):
    """Parse one datagram into a ``Message`` (no validation beyond framing)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        name = _COMPACT.get(name, name)
        if name in ("via", "contact", "route", "record-route"):
            for part in _split_commas(value):
                headers.setdefault(name, []).append(part)
        else:
            headers.setdefault(name, []).append(value.strip())
    length = headers.get("content-length")
    if length:
        body = body[:int(length[0])]
    return Message(lines[0], headers, body.decode("utf-8", "replace"), received)


def _split_commas(value):
    parts, depth, quoted, cur = [], 0, False, []
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        elif ch == "," and not quoted and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


class Subscription:
    """One watcher's subscription dialog and the NOTIFYs it received."""

    def __init__(self, watcher, presentity, event, expires):
        self.watcher = watcher
        self.presentity = presentity
        self.event = event
        self.expires = expires
        self.call_id = f"{uuid.uuid4().hex}@watchers"
        self.from_tag = uuid.uuid4().hex[:12]
        self.to_tag = None          # the notifier's tag (200 To, NOTIFY From)
        self.cseq = next(_counter) * 10
        self.route_set = []
        self.remote_target = None
        self.responses = []         # final responses to our SUBSCRIBEs
        self.notifies = []          # every distinct NOTIFY (retransmissions not repeated)
        self._seen = set()

    @property
    def states(self):
        """The Subscription-State values of the NOTIFYs, in order."""
        return [n.header("subscription-state", "") for n in self.notifies]

    @property
    def terminated(self):
        """True once a NOTIFY said ``terminated``."""
        return any(s.lower().startswith("terminated") for s in self.states)


class _Pending:
    __slots__ = ("data", "interval", "next_at", "deadline", "final", "done", "on_final")

    def __init__(self, data, now, on_final=None):
        self.data = data
        self.interval = 0.5
        self.next_at = now + 0.5
        self.deadline = now + 32.0
        self.final = None
        self.done = threading.Event()
        self.on_final = on_final


class UdpWatchers:
    """Watchers and a publisher on one UDP socket of 127.0.0.1, talking to one proxy.

    ``answer`` is the status the watchers give NOTIFYs (200, or e.g. 481 to
    end a subscription from the watcher's side)."""

    def __init__(self, proxy_port, domain="example.com", rcvbuf=8 << 20, port=0):
        self.proxy = ("127.0.0.1", proxy_port)
        self.domain = domain
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
        self.sock.bind(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.subs = {}              # Call-ID -> Subscription
        self.pending = {}           # (Call-ID, CSeq) -> _Pending
        self.unmatched = []         # NOTIFYs for no subscription of ours
        self.notify_count = 0
        self.notify_retransmissions = 0  # a NOTIFY CSeq seen again (our 200 was late or lost)
        self.answer = 200
        self.lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    # -- requests --------------------------------------------------------------
    def _request(self, method, ruri, call_id, from_uri, from_tag, to_uri, to_tag, cseq,
                 headers, body="", routes=()):
        branch = f"z9hG4bK{uuid.uuid4().hex[:16]}"
        lines = [f"{method} {ruri} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
                 "Max-Forwards: 70",
                 f"From: <{from_uri}>;tag={from_tag}",
                 f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
                 f"Call-ID: {call_id}",
                 f"CSeq: {cseq} {method}"]
        lines += [f"Route: {r}" for r in routes]
        lines += list(headers)
        payload = body.encode()
        lines.append(f"Content-Length: {len(payload)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload

    def _send(self, key, data, on_final=None):
        p = _Pending(data, time.monotonic(), on_final)
        with self.lock:
            self.pending[key] = p
        self.sock.sendto(data, self.proxy)
        return p

    def subscribe(self, presentity, watcher, event="presence", expires=3600, accept=None):
        """Send an initial SUBSCRIBE from ``watcher`` (a user name) to
        ``presentity`` (a user name); returns the Subscription at once."""
        sub = Subscription(watcher, presentity, event, expires)
        accept = accept or {"presence": "application/pidf+xml",
                            "dialog": "application/dialog-info+xml",
                            "message-summary": "application/simple-message-summary"}.get(event)
        with self.lock:
            self.subs[sub.call_id] = sub
        self._send_subscribe(sub, expires, accept)
        return sub

    def _send_subscribe(self, sub, expires, accept=None):
        sub.cseq += 1
        target = sub.remote_target or f"sip:{sub.presentity}@{self.domain}"
        headers = [f"Contact: <sip:{sub.watcher}@127.0.0.1:{self.port}>",
                   f"Event: {sub.event}", f"Expires: {expires}"]
        if accept:
            headers.append(f"Accept: {accept}")
        data = self._request("SUBSCRIBE", target, sub.call_id,
                             f"sip:{sub.watcher}@{self.domain}", sub.from_tag,
                             f"sip:{sub.presentity}@{self.domain}", sub.to_tag, sub.cseq,
                             headers, routes=sub.route_set)

        def final(resp, sub=sub):
            sub.responses.append(resp)
            if 200 <= resp.status < 300 and sub.to_tag is None:
                sub.to_tag = resp.to_tag
                sub.route_set = list(reversed(resp.headers.get("record-route", [])))
                contact = resp.header("contact")
                if contact:
                    sub.remote_target = contact.split("<", 1)[-1].split(">", 1)[0]
        return self._send((sub.call_id, sub.cseq), data, final)

    def refresh(self, sub, expires=None):
        """Send an in-dialog SUBSCRIBE (refresh, or Expires 0 to unsubscribe);
        returns the pending transaction (``.done``, ``.final``)."""
        return self._send_subscribe(sub, sub.expires if expires is None else expires)

    def publish(self, presentity, body, etag=None, expires=3600, event="presence",
                content_type="application/pidf+xml", timeout=10.0):
        """Send one PUBLISH and wait (bounded) for its final response."""
        p = self.send_publish_nowait(presentity, body, etag, expires, event, content_type)
        if not p.done.wait(timeout):
            raise AssertionError(f"no final response to PUBLISH within {timeout}s")
        if p.final is None:
            raise AssertionError("PUBLISH timed out (timer F)")
        return p.final

    def send_publish_nowait(self, presentity, body, etag=None, expires=3600, event="presence",
                            content_type="application/pidf+xml"):
        """Send one PUBLISH (``body`` None: a refresh or, with Expires 0, a
        removal) and return its pending transaction (``.done``, ``.final``)."""
        call_id = f"{uuid.uuid4().hex}@publisher"
        headers = [f"Event: {event}", f"Expires: {expires}"]
        if etag:
            headers.append(f"SIP-If-Match: {etag}")
        if body:
            headers.append(f"Content-Type: {content_type}")
        aor = f"sip:{presentity}@{self.domain}"
        data = self._request("PUBLISH", aor, call_id, aor, uuid.uuid4().hex[:10], aor, None, 1,
                             headers, body or "")
        return self._send((call_id, 1), data)

    # -- waiting -----------------------------------------------------------------
    def wait_for(self, predicate, timeout, what="condition"):
        """Poll ``predicate()`` until true or fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return
            time.sleep(0.02)
        with self.lock:
            if predicate():
                return
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def subscribe_many(self, presentity, count, window=50, timeout=120.0, prefix="w",
                       event="presence"):
        """``count`` subscriptions to ``presentity``, at most ``window`` still
        waiting for their 200 and first NOTIFY at any time; all bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        subs = []

        def settled(s):
            return bool(s.to_tag and s.notifies) or bool(s.responses and
                                                          s.responses[-1].status >= 300)

        for i in range(count):
            while True:
                with self.lock:
                    busy = sum(1 for s in subs if not settled(s))
                if busy < window:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"subscribing stalled at {len(subs)} of {count}")
                time.sleep(0.005)
            subs.append(self.subscribe(presentity, f"{prefix}{i}", event=event))
        self.wait_for(lambda: all(settled(s) for s in subs),
                      max(1.0, deadline - time.monotonic()), f"{count} subscriptions")
        refused = [s.responses[-1].start for s in subs
                   if s.responses and s.responses[-1].status >= 300]
        if refused:
            raise AssertionError(f"{len(refused)} SUBSCRIBEs refused: {refused[:3]}")
        return subs

    # -- the receive thread ------------------------------------------------------
    def _run(self):
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        while not self._stop:
            for _ in sel.select(0.05):
                while True:
                    try:
                        data, addr = self.sock.recvfrom(65535)
                    except BlockingIOError:
                        break
                    except OSError:
                        return
                    self._handle(data, addr)
            self._timers()
        sel.close()

    def _timers(self):
        now = time.monotonic()
        with self.lock:
            due = [(k, p) for k, p in self.pending.items() if p.next_at <= now]
        for key, p in due:
            if now >= p.deadline:
                with self.lock:
                    self.pending.pop(key, None)
                p.done.set()
                continue
            p.interval = min(p.interval * 2, 4.0)
            p.next_at = now + p.interval
            try:
                self.sock.sendto(p.data, self.proxy)
            except OSError:
                pass

    def _handle(self, data, addr):
        if not data.strip():
            return  # keep-alive
        now = time.monotonic()
        msg = parse(data, now)
        if not msg.is_request:
            key = (msg.call_id, msg.cseq[0])
            if msg.status < 200:
                with self.lock:
                    p = self.pending.get(key)
                    if p is not None:
                        p.next_at = now + 4.0  # timer E stops at T2 once provisional
                return
            with self.lock:
                p = self.pending.pop(key, None)
                if p is not None:
                    p.final = msg
                    if p.on_final:
                        p.on_final(msg)
            if p is not None:
                p.done.set()
            return
        if msg.method == "NOTIFY":
            self._notify(msg, addr)
        elif msg.method != "ACK":
            self.sock.sendto(self._response(msg, 405, "Method Not Allowed"), addr)

    def _notify(self, msg, addr):
        status = self.answer
        with self.lock:
            sub = self.subs.get(msg.call_id)
            if sub is None or msg.to_tag != sub.from_tag:
                self.unmatched.append(msg)
                status = 481
            else:
                if sub.to_tag is None:  # NOTIFY raced ahead of the 200
                    sub.to_tag = msg.from_tag
                key = msg.cseq[0]
                if key not in sub._seen:
                    sub._seen.add(key)
                    sub.notifies.append(msg)
                    self.notify_count += 1
                else:
                    self.notify_retransmissions += 1
        reason = {200: "OK", 481: "Subscription Does Not Exist"}.get(status, "Error")
        self.sock.sendto(self._response(msg, status, reason), addr)

    @staticmethod
    def _response(msg, status, reason):
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {v}" for v in msg.headers.get("via", [])]
        for name, wire in (("from", "From"), ("to", "To"), ("call-id", "Call-ID"),
                           ("cseq", "CSeq")):
            lines.append(f"{wire}: {msg.header(name)}")
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def close(self):
        """Stop the receive thread and close the socket."""
        self._stop = True
        self._thread.join(5)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
