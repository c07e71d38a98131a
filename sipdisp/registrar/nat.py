"""NAT traversal for registered users, sans-IO (Kamailio's nathelper).

``nat_uac_test(ctx, flags)`` detects a client behind NAT,
``fix_nated_register(ctx)`` has ``save`` store where the REGISTER really
came from (``received``), ``fix_nated_contact(ctx)`` rewrites the Contact of
other requests to that address, and :class:`NatPinger` keeps NAT bindings
open with OPTIONS or CRLF keepalives every ``natping_interval`` seconds.
"""

import ipaddress
import itertools
import os
import re

from ..proxy.target import Target
from ..sip.address import parse_address
from ..sip.errors import SipParseError
from ..sip.headers import split_commas
from ..sip.uri import format_hostport
from .usrloc import FLAG_SIPPING

# RFC 1918, RFC 6598 (carrier-grade NAT) and IPv6 unique local addresses:
# nathelper's list. Loopback is not NAT.
_PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))

NAT_CONTACT_PRIVATE = 1      # Contact host is a private address
NAT_VIA_RECEIVED = 2         # top Via host differs from the source address
NAT_VIA_PRIVATE = 4          # top Via host is a private address
NAT_SDP_PRIVATE = 8          # the SDP c= address is private
NAT_VIA_PORT = 16            # the source port differs from the top Via port
NAT_SOURCE_PRIVATE = 32      # the source address is private
NAT_WEBSOCKET = 64           # the request came over WebSocket
NAT_CONTACT_PORT = 128       # the Contact port differs from the source port


_PRIVATE_FIRST_OCTETS = frozenset(("10", "172", "192", "100"))


# host -> is_private(host): the same peers' addresses repeat on every
# message; bounded, since hosts come from the network
_private_hosts = {}


def is_private(host):
    """True for an RFC 1918 / RFC 6598 / ULA address (False for names)."""
    known = _private_hosts.get(host)
    if known is None:
        known = _is_private(host)
        if len(_private_hosts) >= 4096:
            _private_hosts.clear()
        _private_hosts[host] = known
    return known


def _is_private(host):
    if host[:1].isdigit():
        # most addresses are public IPv4: decide on the first octet before ipaddress
        if host.split(".", 1)[0] not in _PRIVATE_FIRST_OCTETS:
            return False
    elif ":" not in host:
        return False
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return any(addr in net for net in _PRIVATE if net.version == addr.version)


# host and port of the first Contact, without parsing the whole header
_CONTACT_HOSTPORT = re.compile(
    r"""(?:[^<,]*<)?\s*sips?:(?:[^@<>;,]*@)?(\[[0-9A-Fa-f:.]+\]|[^:;>,?\s]+)(?::(\d+))?""")


def _contact_hostport(req):
    """``(host, port or None)`` of the first Contact, or None (``*``, absent, not SIP)."""
    value = req.get("contact")
    if not value:
        return None
    m = _CONTACT_HOSTPORT.match(value)
    if m is None:
        return None
    host, port = m.group(1), m.group(2)
    return host.strip("[]").lower(), int(port) if port else None


def _sdp_private(body):
    for line in body.split(b"\n"):
        line = line.strip()
        if line.startswith(b"c=IN IP4 ") or line.startswith(b"c=IN IP6 "):
            if is_private(line[9:].decode("ascii", "replace").split("/")[0]):
                return True
    return False


def nat_uac_test(ctx, flags):
    """Kamailio ``nat_uac_test(flags)``: True if any test selected in
    ``flags`` (the ``NAT_*`` bits; the seed's 23 = 1+2+4+16) says the client
    is behind NAT. In a reply route the message is a reply, whose top Via
    is this proxy's own: the Via tests (2, 4, 16) say nothing there and are
    skipped; the others look at the reply and where it came from."""
    req, src = ctx.request, ctx.source
    via = req.via if req.is_request else None
    if flags & NAT_CONTACT_PRIVATE:
        hp = _contact_hostport(req)
        if hp is not None and is_private(hp[0]):
            return True
    if flags & NAT_VIA_RECEIVED and via is not None and via.host != src.host:
        return True
    if flags & NAT_VIA_PRIVATE and via is not None and is_private(via.host):
        return True
    if flags & NAT_SDP_PRIVATE and req.body and _sdp_private(req.body):
        return True
    if flags & NAT_VIA_PORT and via is not None and via.sent_by[1] != src.port:
        return True
    if flags & NAT_SOURCE_PRIVATE and is_private(src.host):
        return True
    if flags & NAT_WEBSOCKET and src.proto in ("ws", "wss"):
        return True
    if flags & NAT_CONTACT_PORT:
        hp = _contact_hostport(req)
        if hp is not None and (hp[1] or 5060) != src.port:
            return True
    return False


def received_uri(source):
    """``sip:ip:port[;transport=x]`` for where a request came from."""
    uri = f"sip:{format_hostport(source.host, source.port)}"
    return uri if source.proto == "udp" else f"{uri};transport={source.proto}"


def fix_nated_register(ctx):
    """Kamailio ``fix_nated_register()``: ``save`` stores the source address
    as the binding's ``received`` (the seed's ``received_avp``)."""
    if ctx.request.method != "REGISTER":
        return False
    ctx.received = received_uri(ctx.source)
    return True


def fix_nated_contact(ctx):
    """Kamailio ``fix_nated_contact()``: rewrite the host and port of the
    first Contact to the source address (for dialogs with NATed clients);
    in a reply route, the reply's Contact to where the reply came from."""
    req, src = ctx.request, ctx.source
    for i, (key, name, value) in enumerate(req.headers):
        if key != "contact":
            continue
        if value.strip() == "*":
            return False
        parts = split_commas(value)
        try:
            addr = parse_address(parts[0], "Contact")
        except SipParseError:
            return False
        uri = addr.uri
        if not uri.is_sip or (uri.host == src.host and uri.host_port[1] == src.port):
            return True
        new = uri.copy()
        new.host, new.port = src.host, src.port
        new._text = None
        addr.uri = new
        addr._text = None
        req.headers[i] = (key, name, ", ".join([str(addr)] + parts[1:]))
        return True
    return False


class NatPinger:
    """Keepalives to registered contacts every ``interval`` seconds (0: off).

    ``method`` is ``OPTIONS`` (Kamailio's SIP ping, ``sipping_from`` as From)
    or ``CRLF``. UDP contacts get one or the other, sent to their received
    address; TCP/TLS contacts bound to a connection get a CRLF CRLF ping
    on it (RFC 5626 4.4.1); WebSocket connections are left to the browser.
    With ``nated_only`` only contacts marked NATed (``fix_nated_register``)
    are pinged. Replies to the OPTIONS are not matched to anything.
    """

    def __init__(self, location, core, interval=0.0, method="OPTIONS",
                 from_uri="sip:pinger@localhost", nated_only=True):
        self.location = location
        self.core = core
        self.interval = interval
        self.method = method.upper()
        self.from_uri = from_uri
        self.nated_only = nated_only
        self.timers = {}
        self._timer = None
        self._tag = os.urandom(4).hex()
        self._ids = itertools.count(1)
        self.sent = 0

    def start(self, now, timer):
        """Arm the ping round (nothing when interval is 0); ``timer`` is the
        core's (:meth:`~sipdisp.proxy.interface.Core.timer`)."""
        self._timer = timer(self, "natping")
        if self.interval > 0:
            self._timer.arm(now + self.interval)

    def stop(self):
        """Disarm."""
        self.timers.clear()

    def on_timer(self, name, now):
        """One ping round, then re-arm."""
        if name == "natping":
            self.ping_round(now)
            if self._timer is not None and self.interval > 0:
                self._timer.arm(now + self.interval)

    def _listener(self, socket):
        if socket:
            lst = self.core.listener_named(socket)
            if lst is not None:
                return lst
        for lst in self.core.listeners:
            if lst.proto == "udp":
                return lst
        return None

    def targets(self, now):
        """``[(Binding, Target)]`` to ping now."""
        out = []
        flow_target = self.core.flow_target
        for record in list(self.location.records.values()):
            for b in record:
                if b.expires <= now:
                    continue
                if self.nated_only and not b.cflags & FLAG_SIPPING and b.conn_id is None:
                    continue
                if b.conn_id is not None:
                    if b.proto not in ("tcp", "tls"):
                        continue
                    target = flow_target(b.conn_id)
                    if target is not None:
                        out.append((b, target))
                    continue
                if b.proto != "udp":
                    continue
                host, port = self._address(b)
                if host is None:
                    continue
                out.append((b, Target("udp", host, port, None, self._listener(b.socket))))
        return out

    @staticmethod
    def _address(b):
        from ..sip.uri import parse_uri
        try:
            uri = parse_uri(b.received or b.contact)
        except SipParseError:
            return None, None
        if not uri.is_sip:
            return None, None
        return uri.host_port

    def ping_round(self, now):
        """Queue one keepalive per target on the core's transaction layer."""
        send = self.core.send
        count = 0
        for b, target in self.targets(now):
            if target.proto != "udp" or self.method == "CRLF":
                data = b"\r\n\r\n"
            else:
                data = self.options(b, target)
            send(data, target)
            count += 1
        self.sent += count
        return count

    def options(self, b, target):
        """The OPTIONS keepalive for a binding (bytes)."""
        n = next(self._ids)
        lst = target.listener
        via = (lst.via_prefix if lst is not None else "SIP/2.0/UDP 0.0.0.0;branch=")
        return (f"OPTIONS {b.contact} SIP/2.0\r\n"
                f"Via: {via}z9hG4bKnp{self._tag}{n:x}\r\n"
                f"From: <{self.from_uri}>;tag={self._tag}\r\n"
                f"To: <{b.contact}>\r\n"
                f"Call-ID: natping-{self._tag}-{n}\r\n"
                f"CSeq: 1 OPTIONS\r\n"
                f"Max-Forwards: 70\r\n"
                f"Content-Length: 0\r\n\r\n").encode("utf-8", "surrogateescape")
