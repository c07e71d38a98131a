"""Helpers for the management tests: a service tree on a fake reactor, HTTP
requests through a real twisted.web Site over a StringTransport, SSH keys."""

import os

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport

from sipdisp.schema import config_from_dict
from sipdisp.service import SipdispService


def make_root(tmp_path, **sections):
    """A SipdispService on a MemoryReactorClock, with files under ``tmp_path``."""
    raw = {"listen": {"udp": ["127.0.0.1:0"], "tcp": [], "ws": []},
           "storage": {"url": f"sqlite:///{tmp_path / 'db.sqlite'}",
                       "spool_dir": str(tmp_path / "spool")},
           "console": {"listen": "127.0.0.1:0",
                       "authorized_keys": str(tmp_path / "authorized_keys"),
                       "host_key": str(tmp_path / "var" / "host_key")},
           "http": {"listen": "127.0.0.1:0"}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    reactor = MemoryReactorClock()
    return SipdispService(config_from_dict(raw), reactor=reactor)


class HttpResponse:
    """A parsed HTTP/1.1 response: ``status``, ``headers`` (lower-case names), ``body``."""

    def __init__(self, raw):
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if self.headers.get("transfer-encoding") == "chunked":
            body = _dechunk(body)
        self.body = body


def _dechunk(data):
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out += rest[:n]
        data = rest[n + 2:]
    return out


class HttpClient:
    """Sends raw HTTP requests to a Site through a StringTransport, one connection each."""

    def __init__(self, site):
        self.site = site
        self.clock = Clock()

    def open(self, method, path, body=b"", headers=()):
        """Send a request; returns (channel, transport) so a late answer can be read.
        A POST says ``Content-Type: application/json`` unless ``headers`` names one."""
        channel = self.site.buildProtocol(None)
        # the channel's idle and abort timers would otherwise land on the global
        # reactor and be found pending by later trial tests ("reactor unclean")
        channel.callLater = self.clock.callLater
        transport = StringTransport()
        channel.makeConnection(transport)
        headers = list(headers)
        if method == "POST" and not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", "application/json"))
        if not any(k.lower() == "host" for k, _ in headers):
            headers.insert(0, ("Host", "127.0.0.1"))
        lines = [f"{method} {path} HTTP/1.1",
                 f"Content-Length: {len(body)}"] + [f"{k}: {v}" for k, v in headers]
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return channel, transport

    def request(self, method, path, body=b"", headers=()):
        """Send a request and parse the answer written so far."""
        _, transport = self.open(method, path, body, headers)
        return HttpResponse(transport.value())


def write_private_key(path):
    """Write a new Ed25519 key in OpenSSH format (0600) and ``path.pub``;
    returns the public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    with open(f"{path}.pub", "w") as f:
        f.write(public + " test\n")
    return public
