"""Server transactions (RFC 3261 section 17.2, with RFC 6026's Accepted state).

A server transaction absorbs retransmitted requests by re-sending its last
response, retransmits non-2xx INVITE finals until the ACK (timers G/H),
and lingers to absorb late retransmissions (timers I, J, L).

A non-INVITE transaction over UDP that sent its final is handed over to a
:class:`Completed` record for Timer J: its key, the response bytes, where
they go and the Call-ID, expired by the layer in order of arrival (every
Timer J lasts 64*T1), without a timer entry of its own.
"""

TRYING = "trying"
PROCEEDING = "proceeding"
COMPLETED = "completed"
CONFIRMED = "confirmed"
ACCEPTED = "accepted"
TERMINATED = "terminated"


class ServerTransaction:
    """One server transaction. ``owner`` (the TU) gets ``on_server_timeout``
    and ``on_server_terminated``.

    ``request`` is dropped (None) once a final response is sent: from then on
    the transaction only matches and re-sends, and a finished call should not
    keep its parsed request for the 32 s of Timer J or L. ``method`` and
    ``call_id`` stay for listings."""

    __slots__ = ("layer", "key", "request", "method", "call_id", "source", "reliable",
                 "is_invite", "state", "last_response", "timers", "owner", "g_interval",
                 "to_tag", "canceled")

    def __init__(self, layer, key, request, source, reliable):
        self.layer = layer
        self.key = key
        self.request = request
        self.method = request.method
        self.call_id = request.call_id
        self.source = source
        self.reliable = reliable
        self.is_invite = request.method == "INVITE"
        self.state = PROCEEDING if self.is_invite else TRYING
        self.last_response = None
        self.timers = {}
        self.owner = None
        self.g_interval = 0.0
        self.to_tag = None
        self.canceled = False

    # -- inputs from the network ------------------------------------------
    def on_request(self, now):
        """A retransmission of the request: re-send the last response (17.2.1, 17.2.2)."""
        if self.state in (PROCEEDING, COMPLETED) and self.last_response is not None:
            self.layer.send(self.last_response, self.source)
            self.layer.stats_retransmitted += 1

    def on_ack(self, now):
        """ACK for a non-2xx final: stop retransmitting, linger for Timer I."""
        if self.state != COMPLETED:
            return
        timers = self.layer.timers
        timers.cancel(self, "G")
        timers.cancel(self, "H")
        self.state = CONFIRMED
        if self.reliable:
            self._terminate()
        else:
            timers.arm(self, "I", now + self.layer.t4)

    # -- inputs from the TU -----------------------------------------------
    def respond(self, data, status, now):
        """Send a response (already serialized) through this transaction.

        Returns False when the state no longer allows it (a late final).
        """
        state = self.state
        layer = self.layer
        if self.is_invite:
            if state == PROCEEDING:
                if status < 200:
                    self.last_response = data
                elif status < 300:
                    self.state = ACCEPTED
                    self.last_response = None
                    self.request = None
                    layer.timers.arm(self, "L", now + 64 * layer.t1)
                else:
                    self.state = COMPLETED
                    self.last_response = data
                    self.request = None
                    if not self.reliable:
                        self.g_interval = layer.t1
                        layer.timers.arm(self, "G", now + layer.t1)
                    layer.timers.arm(self, "H", now + 64 * layer.t1)
            elif state == ACCEPTED and 200 <= status < 300:
                pass  # other forks' 2xx and 2xx retransmissions pass through
            else:
                return False
        else:
            if state in (TRYING, PROCEEDING):
                if status < 200:
                    self.state = PROCEEDING
                    self.last_response = data
                else:
                    self.state = COMPLETED
                    self.last_response = data
                    self.request = None
                    if self.reliable:
                        self._terminate()
                    else:
                        # a Completed record takes this transaction's place
                        # (and its TU) in the table for Timer J
                        layer.linger(self, now + 64 * layer.t1)
            else:
                return False
        layer.send(data, self.source)
        return True

    # -- timers -------------------------------------------------------------
    def on_timer(self, name, now):
        """Timer G re-sends the final; H, I, J and L end the transaction."""
        if name == "G":
            if self.state == COMPLETED:
                self.layer.send(self.last_response, self.source)
                self.layer.stats_retransmitted += 1
                self.g_interval = min(2 * self.g_interval, self.layer.t2)
                self.layer.timers.arm(self, "G", now + self.g_interval)
        elif name == "H":
            # no ACK ever came (RFC 3261 17.2.1): the TU is told, then we end.
            if self.owner is not None:
                self.owner.on_server_timeout(self, now)
            self._terminate()
        else:  # I, J, L
            self._terminate()

    def _terminate(self):
        self.state = TERMINATED
        timers = self.layer.timers
        for name in list(self.timers):
            timers.cancel(self, name)
        self.layer.remove_server(self)
        owner = self.owner
        if owner is not None:
            # the TU and this transaction point at each other: let go here so
            # reference counting frees a finished call, not a full GC pass
            self.owner = None
            owner.on_server_terminated(self)

    def __repr__(self):
        return f"<ServerTransaction {self.method} {self.key[0]} {self.state}>"


class Completed:
    """What is left of a non-INVITE server transaction over UDP for Timer J
    (RFC 3261 17.2.2): its key, the final response's bytes, the target they
    go to, the Call-ID (for listings), the TU and the deadline. A
    retransmitted request that matches it gets the final again; at
    ``deadline`` the layer forgets it and tells the TU
    (``on_server_terminated``), as Timer J did. It answers what the core and
    the listings ask of a server transaction; it takes no further response
    (a late final is refused)."""

    __slots__ = ("layer", "key", "last_response", "source", "call_id", "owner", "deadline")

    state = COMPLETED
    is_invite = False
    reliable = False
    request = None
    canceled = False

    def __init__(self, layer, key, last_response, source, call_id, owner, deadline):
        self.layer = layer
        self.key = key
        self.last_response = last_response
        self.source = source
        self.call_id = call_id
        self.owner = owner
        self.deadline = deadline

    @property
    def method(self):
        """The request's method: the key's last part (an RFC 2543 key's last but one)."""
        key = self.key
        return key[3] if len(key) == 4 else key[4]

    def on_request(self, now):
        """A retransmission of the request: re-send the final (17.2.2)."""
        layer = self.layer
        layer.send(self.last_response, self.source)
        layer.stats_retransmitted += 1

    def respond(self, data, status, now):
        """A late response: refused, as by a Completed transaction."""
        return False

    def expire(self):
        """Timer J ran out (the layer calls this): the TU is told, then let go."""
        owner = self.owner
        if owner is not None:
            self.owner = None
            owner.on_server_terminated(self)

    def __repr__(self):
        return f"<Completed {self.method} {self.key[0]}>"
