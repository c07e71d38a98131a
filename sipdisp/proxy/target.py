"""Where messages come from and go to, as plain values shared with the edge."""

STREAM_PROTOS = frozenset(("tcp", "tls", "ws", "wss"))
VIA_TRANSPORT = {"udp": "UDP", "tcp": "TCP", "tls": "TLS", "ws": "WS", "wss": "WSS"}


class Listener:
    """A local listening socket: ``proto``, bound ``host``/``port`` and the
    address to advertise in Via and Record-Route (RFC 3261 18.1.1, behind NAT)."""

    __slots__ = ("id", "proto", "host", "port", "advertised_host", "advertised_port",
                 "via_prefix", "rr_uri")

    def __init__(self, id, proto, host, port, advertised_host=None, advertised_port=None):
        self.id = id
        self.proto = proto
        self.host = host
        self.port = port
        self.advertised_host = advertised_host or host
        self.advertised_port = advertised_port or port
        self.refresh()

    def refresh(self):
        """Recompute the cached Via prefix and Record-Route URI (after binding port 0)."""
        host = self.advertised_host
        if ":" in host:
            host = f"[{host}]"
        hostport = f"{host}:{self.advertised_port}"
        self.via_prefix = f"SIP/2.0/{VIA_TRANSPORT[self.proto]} {hostport};branch="
        params = "" if self.proto == "udp" else f";transport={self.proto}"
        self.rr_uri = f"sip:{hostport}{params};lr"

    @property
    def reliable(self):
        """True for stream transports (no retransmission timers)."""
        return self.proto in STREAM_PROTOS

    def __repr__(self):
        return f"<Listener {self.proto}:{self.host}:{self.port}>"


class Target:
    """A peer: transport ``proto``, ``host``, ``port``; ``conn`` names the stream
    connection to use (None: any, or a new one); ``listener`` the local socket."""

    __slots__ = ("proto", "host", "port", "conn", "listener")

    def __init__(self, proto, host, port, conn=None, listener=None):
        self.proto = proto
        self.host = host
        self.port = port
        self.conn = conn
        self.listener = listener

    @property
    def reliable(self):
        """True for stream transports."""
        return self.proto in STREAM_PROTOS

    def __eq__(self, other):
        return (isinstance(other, Target) and self.proto == other.proto
                and self.host == other.host and self.port == other.port
                and self.conn == other.conn)

    def __hash__(self):
        return hash((self.proto, self.host, self.port, self.conn))

    def __repr__(self):
        conn = f" conn={self.conn}" if self.conn is not None else ""
        return f"<Target {self.proto}:{self.host}:{self.port}{conn}>"


class Flows:
    """The open stream connections (RFC 5626 flows) by id: the edge adds and
    removes them, the core asks for a Target on one. A connection object has
    ``proto``, ``peer_host``, ``peer_port`` and ``listener``."""

    __slots__ = ("connections",)

    def __init__(self):
        self.connections = {}

    def target(self, conn_id):
        """A Target on live connection ``conn_id``, or None once it is gone."""
        conn = self.connections.get(conn_id)
        if conn is None:
            return None
        return Target(conn.proto, conn.peer_host, conn.peer_port, conn_id, conn.listener)
