"""Who this proxy is: the hosts, ports and addresses of its listeners and
domains, and which listener sends to where."""


class Identity:
    """The proxy's own names (RFC 3261 16.4 "this proxy") and listeners."""

    __slots__ = ("listeners", "domains", "_hosts", "_ports", "_addresses", "_adopted")

    def __init__(self, listeners, domains=()):
        self.domains = set(d.lower() for d in domains)
        # (host, port) of cluster nodes whose dialogs this one took over
        self._adopted = set()
        self.set_listeners(listeners)

    def set_listeners(self, listeners):
        """Replace the listener list (after the edge bound its sockets)."""
        self.listeners = list(listeners)
        hosts = set(self.domains)
        ports = set()
        for lst in self.listeners:
            hosts.add(lst.host.lower())
            hosts.add(lst.advertised_host.lower())
            ports.add(lst.port)
            ports.add(lst.advertised_port)
        self._hosts = hosts
        self._ports = ports
        # (host, port) pairs a request must never be sent to: the proxy itself
        addresses = set()
        for lst in self.listeners:
            for host in (lst.host, lst.advertised_host):
                host = host.lower()
                if host in ("0.0.0.0", "::"):
                    addresses.update((h, lst.port) for h in hosts)
                    addresses.update((h, lst.port) for h in ("127.0.0.1", "::1", "localhost"))
                addresses.add((host, lst.port))
                addresses.add((host, lst.advertised_port))
        self._addresses = addresses

    def is_myself(self, uri):
        """True if ``uri`` names this proxy (host is ours; port, if any, is ours)."""
        if not uri.is_sip:
            return False
        host = uri.host
        if host not in self._hosts:
            return False
        if host in self.domains and uri.port is None:
            return True
        port = uri.port
        if port is None:
            port = 5061 if uri.scheme == "sips" else 5060
        return port in self._ports

    def adopt(self, host, port):
        """Count ``host``:``port`` (a dead cluster node's address, its dialogs
        taken over here) as this proxy's in the route sets it record-routed
        (:meth:`is_adopted`); nothing else about "myself" changes."""
        self._adopted.add((host.lower(), int(port)))

    @property
    def adopted(self):
        """The ``(host, port)`` pairs :meth:`adopt` added, sorted."""
        return sorted(self._adopted)

    def is_adopted(self, uri):
        """True if ``uri`` names a node whose dialogs this one took over."""
        if not self._adopted or not uri.is_sip:
            return False
        port = uri.port
        if port is None:
            port = 5061 if uri.scheme == "sips" else 5060
        return (uri.host, port) in self._adopted

    def is_own_address(self, host, port):
        """True if sending to ``host``:``port`` would reach this proxy itself."""
        host = host.lower()
        return (host, port) in self._addresses or (host in self.domains and port in self._ports)

    def listener_named(self, socket):
        """The listener ``socket`` names (``proto:host:port``, as Kamailio and
        OpenSIPS write a send socket), or None."""
        for lst in self.listeners:
            if f"{lst.proto}:{lst.host}:{lst.port}" == socket:
                return lst
        return None

    def listener_for(self, proto, host):
        """A listener of ``proto`` in the address family of ``host`` (any of ``proto`` else)."""
        v6 = ":" in host
        fallback = None
        for lst in self.listeners:
            if lst.proto == proto:
                if (":" in lst.host) == v6:
                    return lst
                fallback = fallback or lst
        return fallback
