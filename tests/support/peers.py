"""Real peers beside sipdisp for integration tests: Node scripts driven over
stdin/stdout (:class:`NodePeer`; the ``ws`` WebSocket client
tests/js/ws_peer.js is one), stream and datagram SIP endpoints over plain
sockets, and a small SIP user agent's message builders.

Every wait is bounded; a peer that says nothing in time fails the test.
"""

import itertools
import json
import queue
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time

from sipdisp.sip import parse_message

from .processes import ROOT

JS_DIR = ROOT / "tests" / "js"
_counter = itertools.count(1)


# -- Node and the ws package -----------------------------------------------------
def node_available():
    """True if node and npm are installed."""
    return shutil.which("node") is not None and shutil.which("npm") is not None


def ensure_node_modules():
    """Install tests/js's pinned packages (``npm ci``) unless already there."""
    if (JS_DIR / "node_modules" / "ws" / "package.json").exists():
        return
    subprocess.run(["npm", "ci", "--prefix", str(JS_DIR), "--no-audit", "--no-fund"],
                   check=True, timeout=300, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL)


class NodePeer:
    """A Node script driven over its stdin and stdout: commands in, events out,
    one JSON object per line each way. Subclasses name the script's
    arguments and which events end a wait with a failure (:meth:`fatal`)."""

    #: the event put in the queue when the script's stdout ends
    END = "eof"
    #: events that fail any wait for another kind
    FATAL = ()
    #: seconds a wait lasts unless told
    TIMEOUT = 10.0

    def __init__(self, argv, new_session=False):
        self.events = queue.Queue()
        self.seen = []
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1,
                                     start_new_session=new_session)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                self.events.put(json.loads(line))
        self.events.put({"event": self.END})

    def fatal(self, event, kind):
        """True when ``event`` means the ``kind`` waited for will not come."""
        return event["event"] == self.END or event["event"] in self.FATAL

    def expect(self, kind, timeout=None, match=None):
        """The next event of ``kind`` (and satisfying ``match``); the others
        are kept in ``seen``. Fails on a timeout or a :meth:`fatal` event."""
        timeout = self.TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind!r} event within {timeout}s; saw {self.brief()}")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(event)
            if event["event"] == kind and (match is None or match(event)):
                return event
            if self.fatal(event, kind):
                raise AssertionError(f"{event} before {kind!r}; saw {self.seen}; "
                                     f"stderr: {self.proc.stderr.read()[-2000:]}")

    def brief(self):
        """The events seen so far, as a failure message shows them."""
        return self.seen

    def command(self, **cmd):
        """Send one command line to the script."""
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def close(self):
        """Close stdin (the script ends), bounded, and reap the process."""
        close_peer_process(self.proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class WsPeer(NodePeer):
    """One ``ws`` client process (tests/js/ws_peer.js) and the events it reports."""

    END = "exit"
    TIMEOUT = 5.0

    def __init__(self, url, protocols=("sip",), ca=None, lifetime=30, origin=None,
                 auto_pong=True):
        argv = ["node", str(JS_DIR / "ws_peer.js"), url, "--lifetime", str(lifetime)]
        if origin:
            argv += ["--origin", origin]
        if not auto_pong:
            argv.append("--no-auto-pong")
        for proto in protocols:
            argv += ["--protocol", proto]
        if ca:
            argv += ["--ca", str(ca)]
        super().__init__(argv)

    def open(self, timeout=5.0):
        """Wait for the handshake; returns ``(upgrade_event, open_event)``."""
        upgrade = self.expect("upgrade", timeout)
        return upgrade, self.expect("open", timeout)

    def send(self, text):
        """Send one SIP message as one text frame."""
        self.command(send=text)

    def recv_sip(self, timeout=5.0, match=None):
        """The next SIP message received (parsed) that satisfies ``match``."""
        def sip_match(event):
            return match is None or match(parse_message(event["data"].encode()))
        return parse_message(self.expect("message", timeout, sip_match)["data"].encode())


# -- plain socket endpoints ---------------------------------------------------------
_CL_RE = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)")


class StreamEndpoint:
    """A SIP endpoint on a connected TCP or TLS socket, framing by Content-Length."""

    def __init__(self, sock):
        self.sock = sock
        self._buf = b""

    @classmethod
    def connect(cls, port, tls_context=None, server_hostname="127.0.0.1", timeout=5.0):
        """Connect to 127.0.0.1:``port``, optionally with TLS."""
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls_context is not None:
            sock = tls_context.wrap_socket(sock, server_hostname=server_hostname)
        sock.settimeout(timeout)
        return cls(sock)

    def send(self, data):
        """Write one message."""
        self.sock.sendall(data)

    def recv(self, timeout=5.0):
        """The next complete message, parsed."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._frame()
            if frame is not None:
                return parse_message(frame, datagram=False)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no SIP message within {timeout}s; buffered {self._buf!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue  # the deadline check above reports it
            if not chunk:
                raise AssertionError(f"connection closed; buffered {self._buf!r}")
            self._buf += chunk

    def _frame(self):
        self._buf = self._buf.lstrip(b"\r\n")
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        m = _CL_RE.search(self._buf[:end])
        total = end + 4 + (int(m.group(1)) if m else 0)
        if len(self._buf) < total:
            return None
        frame, self._buf = self._buf[:total], self._buf[total:]
        return frame

    def close(self):
        """Close the socket."""
        try:
            self.sock.close()
        except OSError:
            pass


class UdpEndpoint:
    """A SIP endpoint on a UDP socket bound to 127.0.0.1."""

    def __init__(self, port=0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.last_source = None

    def send(self, data, port):
        """Send one datagram to 127.0.0.1:``port``."""
        self.sock.sendto(data, ("127.0.0.1", port))

    def recv(self, timeout=5.0, match=None):
        """The next datagram, parsed, satisfying ``match``; its source is ``last_source``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching SIP datagram within {timeout}s")
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            msg = parse_message(data)
            if match is None or match(msg):
                self.last_source = addr
                return msg

    def close(self):
        """Close the socket."""
        self.sock.close()


def client_tls_context(ca_file):
    """An ssl context trusting only ``ca_file``, checking the server's name/IP."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    return ctx


class TlsServer:
    """A one-thread TLS SIP server on 127.0.0.1 standing in for a TLS next hop:
    it answers INVITE with 200 (OPTIONS too) and records every message."""

    def __init__(self, cert, key):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        self._ctx = ctx
        self._listen = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listen.bind(("127.0.0.1", 0))
        self._listen.listen(8)
        self._listen.settimeout(0.2)
        self.port = self._listen.getsockname()[1]
        self.received = queue.Queue()
        self.accepted = 0
        self.handshake_errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                raw, _ = self._listen.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            raw.settimeout(5)
            try:
                conn = self._ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.handshake_errors.append(exc)
                raw.close()
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        peer = StreamEndpoint(conn)
        try:
            while not self._stop.is_set():
                try:
                    msg = peer.recv(timeout=0.5)
                except AssertionError as exc:
                    if "closed" in str(exc):
                        return
                    continue
                except (ssl.SSLError, OSError):
                    return
                self.received.put(msg)
                if msg.is_request and msg.method in ("INVITE", "OPTIONS", "BYE"):
                    from sipdisp.sip import make_response
                    resp = make_response(msg, 200, "OK", to_tag="tlsuas", record_route=True)
                    if msg.method == "INVITE":
                        resp.add("contact", f"<sip:uas@127.0.0.1:{self.port};transport=tls>")
                    peer.send(resp.to_bytes())
        finally:
            peer.close()

    def expect(self, timeout=5.0):
        """The next message the server received."""
        try:
            return self.received.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the TLS server received nothing within {timeout}s") from None

    def close(self):
        """Stop serving."""
        self._stop.set()
        self._thread.join(2)
        self._listen.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- building requests -------------------------------------------------------------
class Dialog:
    """A caller's view of one call: builds INVITE, ACK and BYE, and follows the
    route set learnt from the 2xx (RFC 3261 12.1.2: the Record-Route reversed)."""

    def __init__(self, transport, via_host, contact, to_uri):
        n = next(_counter)
        self.transport = transport
        self.via_host = via_host
        self.contact = contact
        self.to_uri = to_uri
        self.call_id = f"{n}-{time.monotonic_ns()}@sipdisp.test"
        self.from_tag = f"ft{n}"
        self.to_tag = None
        self.cseq = 0
        self.route_set = []
        self.remote_target = to_uri

    def _request(self, method, ruri, cseq, routes=(), extra=(), branch=None):
        branch = branch or f"z9hG4bK{next(_counter)}x{time.monotonic_ns()}"
        to = f"<{self.to_uri}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        lines = [f"{method} {ruri} SIP/2.0",
                 f"Via: SIP/2.0/{self.transport} {self.via_host};branch={branch}",
                 "Max-Forwards: 70",
                 f"From: <sip:alice@sipdisp.test>;tag={self.from_tag}",
                 f"To: {to}",
                 f"Call-ID: {self.call_id}",
                 f"CSeq: {cseq} {method}",
                 f"Contact: <{self.contact}>"]
        lines += [f"Route: {r}" for r in routes]
        lines += list(extra)
        lines.append("Content-Length: 0")
        return "\r\n".join(lines) + "\r\n\r\n"

    def invite(self):
        """The initial INVITE as text."""
        self.cseq += 1
        self._invite_cseq = self.cseq
        return self._request("INVITE", self.to_uri, self.cseq)

    def learn(self, response):
        """Take the To tag, remote target and route set from a 2xx to the INVITE."""
        self.to_tag = response.to_tag
        contact = response.addresses("contact")
        if contact:
            self.remote_target = str(contact[0].uri)
        self.route_set = list(reversed(response.values("record-route")))

    def ack(self):
        """The ACK for the 2xx, along the route set."""
        return self._request("ACK", self.remote_target, self._invite_cseq, self.route_set)

    def bye(self):
        """An in-dialog BYE along the route set."""
        self.cseq += 1
        return self._request("BYE", self.remote_target, self.cseq, self.route_set)


def options(ruri, transport, via_host, extra=()):
    """An out-of-dialog OPTIONS request as text."""
    n = next(_counter)
    lines = [f"OPTIONS {ruri} SIP/2.0",
             f"Via: SIP/2.0/{transport} {via_host};branch=z9hG4bKopt{n}x{time.monotonic_ns()}",
             "Max-Forwards: 70",
             f"From: <sip:probe@sipdisp.test>;tag=opt{n}",
             f"To: <{ruri}>",
             f"Call-ID: opt-{n}-{time.monotonic_ns()}@sipdisp.test",
             "CSeq: 1 OPTIONS"]
    lines += list(extra)
    lines.append("Content-Length: 0")
    return "\r\n".join(lines) + "\r\n\r\n"


def answer(request, status=200, reason="OK", to_tag=None, contact=None):
    """A UAS's response text to a received request (keeps Record-Route for 2xx)."""
    from sipdisp.sip import make_response
    resp = make_response(request, status, reason, to_tag=to_tag, record_route=True)
    if contact:
        resp.add("contact", f"<{contact}>")
    return resp.to_bytes().decode()


def close_peer_process(proc):
    """End a Node peer driven over stdin: close stdin, wait (bounded), kill if
    it lingers, and close its pipes."""
    if proc.poll() is None:
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for stream in (proc.stdout, proc.stderr):
        stream.close()


def receive_all(sock, seconds):
    """Every datagram ``sock`` receives within ``seconds``."""
    got = []
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return got
        sock.settimeout(left)
        try:
            got.append(sock.recv(65535))
        except socket.timeout:
            return got
