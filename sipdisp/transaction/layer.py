"""The transaction table: matching (RFC 3261 17.1.3, 17.2.3), timers, output."""

from collections import deque

from ..sip.via import MAGIC_COOKIE
from .client import ClientTransaction
from .server import Completed, ServerTransaction
from .timers import TimerHeap


def server_key(request):
    """The key a request matches server transactions by (RFC 3261 17.2.3).

    ACK matches its INVITE. Requests from RFC 2543 elements (no magic cookie)
    are matched on Call-ID, From tag, CSeq number and the top Via (17.2.3's
    fall-back, simplified: To tags are not compared)."""
    via = request.via
    method = request.method
    if method == "ACK":
        method = "INVITE"
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE) and len(branch) > 7:
        return (branch, via.host, via.port, method)
    return ("2543", request.call_id, request.from_tag, request.cseq, method,
            str(via).split(";", 1)[0])


class TransactionLayer:
    """Server and client transactions, one timer heap, and the pending output.

    ``send(data, target)`` queues an outgoing datagram/segment; the edge
    collects them with ``drain()`` after each call into the core.
    ``max_transactions`` (``sip.max_transactions``, 0: no limit) bounds the
    table: while server and client transactions together reach it, ``full``
    is true and the core refuses new requests with 503 instead of creating
    more. Client transactions are not refused themselves (a relayed request
    must get its branches), but each needs a server transaction first.

    Completed non-INVITE server transactions over UDP wait out Timer J as
    :class:`~.server.Completed` records in ``servers``, and in ``lingering``
    in order of deadline: Timer J is 64*T1 for all of them, so a FIFO does
    what a heap entry per transaction did, at a fraction of the memory.
    """

    def __init__(self, t1=0.5, t2=4.0, t4=5.0, max_transactions=0):
        self.t1 = t1
        self.t2 = t2
        self.t4 = t4
        self.max_transactions = max_transactions
        self.timers = TimerHeap()
        self.servers = {}
        self.clients = {}
        self.lingering = deque()
        self.out = []
        self.stats_retransmitted = 0

    # -- output --------------------------------------------------------------
    def send(self, data, target):
        """Queue ``data`` for ``target`` (a transport Target)."""
        self.out.append((data, target))

    def drain(self):
        """Return and forget everything queued for sending."""
        out = self.out
        if out:
            self.out = []
        return out

    @property
    def full(self):
        """True while server and client transactions reach ``max_transactions``."""
        cap = self.max_transactions
        return bool(cap) and len(self.servers) + len(self.clients) >= cap

    # -- server side -----------------------------------------------------------
    def find_server(self, request):
        """The server transaction a request belongs to, or None."""
        return self.servers.get(server_key(request))

    def create_server(self, request, source, reliable):
        """A new server transaction for ``request`` received from ``source``."""
        key = server_key(request)
        txn = ServerTransaction(self, key, request, source, reliable)
        self.servers[key] = txn
        return txn

    def linger(self, txn, deadline):
        """Replace the completed non-INVITE ``txn`` in the table by a
        :class:`~.server.Completed` record until ``deadline`` (Timer J); the
        record takes over its TU, told when Timer J runs out."""
        key = txn.key
        owner = txn.owner
        txn.owner = None
        record = Completed(self, key, txn.last_response, txn.source, txn.call_id, owner,
                           deadline)
        servers = self.servers
        if servers.get(key) is txn:  # else out of the table already: only the TU waits
            servers[key] = record
        self.lingering.append(record)

    def find_invite_for_cancel(self, cancel):
        """The INVITE server transaction a CANCEL refers to (RFC 3261 9.2)."""
        key = server_key(cancel)
        if key[0] == "2543":
            key = key[:4] + ("INVITE",) + key[5:]
        else:
            key = key[:3] + ("INVITE",)
        return self.servers.get(key)

    def remove_server(self, txn):
        """Forget a terminated server transaction."""
        if self.servers.get(txn.key) is txn:
            del self.servers[txn.key]

    # -- client side -----------------------------------------------------------
    def add_client(self, txn):
        """Register a client transaction so responses can find it."""
        self.clients[(txn.branch, txn.method)] = txn

    def new_client(self, request, data, target, reliable, branch, fr_timeout,
                   fr_inv_timeout, owner, index=0):
        """Create and register (but do not start) a client transaction."""
        txn = ClientTransaction(self, request, data, target, reliable, branch,
                                fr_timeout, fr_inv_timeout, owner, index)
        self.clients[(branch, txn.method)] = txn
        return txn

    def find_client(self, response):
        """The client transaction a response belongs to (RFC 3261 17.1.3), or None."""
        return self.clients.get((response.via.branch, response.cseq_method))

    def remove_client(self, txn):
        """Forget a terminated client transaction."""
        key = (txn.branch, txn.method)
        if self.clients.get(key) is txn:
            del self.clients[key]

    # -- time ------------------------------------------------------------------
    def next_deadline(self):
        """When the layer next needs ``on_timers``; None if never."""
        deadline = self.timers.next_deadline()
        lingering = self.lingering
        if lingering:
            first = lingering[0].deadline
            if deadline is None or first < deadline:
                return first
        return deadline

    def on_timers(self, now):
        """Fire every timer due by ``now``, earliest first, and forget the
        :class:`~.server.Completed` records whose Timer J ran out."""
        lingering = self.lingering
        if lingering and lingering[0].deadline <= now:
            servers = self.servers
            popleft = lingering.popleft
            while lingering and lingering[0].deadline <= now:
                record = popleft()
                if servers.get(record.key) is record:
                    del servers[record.key]
                if record.owner is not None:
                    record.expire()
        # One at a time, not a batch: when the wake-up is late, a timer cancelled
        # by an earlier one (fr after Timer B ended the branch) must not fire.
        pop = self.timers.pop_next
        item = pop(now)
        while item is not None:
            owner, name = item
            owner.on_timer(name, now)
            item = pop(now)
