"""What a subsystem may use of the proxy core, declared.

Subsystems (dispatcher, registrar, dialogs, load balancer, accounting,
the prober) are handed a core and use it only through :class:`Core`: send
a request as a new client transaction, arm and cancel timers through a
:class:`Timer` handle, find a listener, make a branch or a To tag, reply.
Whatever else :class:`~sipdisp.proxy.core.ProxyCore` has (the transaction
layer, its parsing and dispatch) is the core's own business, so it can
change without touching a subsystem.

The owners of timers and client transactions implement :class:`TimerOwner`
and :class:`ClientOwner`; both are plain methods, called by the core with
the current time, never a clock read.
"""

from collections import Counter
from typing import Optional, Protocol

from ..sip.message import Request
from ..sip.uri import URI
from .target import Listener, Target


class TimerOwner(Protocol):
    """An object with named timers in the core's heap.

    ``timers`` is the owner's own dict the heap keeps its live entries in
    (name -> entry); the owner may clear it to forget every timer at once.
    """

    timers: dict

    def on_timer(self, name, now: float) -> None:
        """Timer ``name`` fired at ``now``."""


class ClientOwner(Protocol):
    """The owner of a client transaction started with :meth:`Core.start_client`."""

    def on_branch_response(self, txn, response, now: float) -> None:
        """A response (provisional or final) arrived on ``txn``."""

    def on_branch_timeout(self, txn, now: float) -> None:
        """``txn`` got no final response in time."""


class Timer:
    """One named timer of one owner: ``arm(when)`` (re)arms it, ``cancel()``
    disarms it. A handle is cheap; keep it for as long as the owner lives."""

    __slots__ = ("_heap", "_owner", "name")

    def __init__(self, heap, owner, name):
        self._heap = heap
        self._owner = owner
        self.name = name

    def arm(self, when: float) -> None:
        """Fire ``owner.on_timer(name, now)`` at ``when``, replacing an earlier arming."""
        self._heap.arm(self._owner, self.name, when)

    def cancel(self) -> None:
        """Disarm; a no-op when not armed."""
        self._heap.cancel(self._owner, self.name)

    @property
    def armed(self) -> bool:
        """True while the timer is set to fire."""
        return self.name in self._owner.timers


class Core(Protocol):
    """The proxy core as subsystems see it."""

    #: counters shown in /metrics and the console (``stats[name] += 1``)
    stats: Counter
    #: the Server / User-Agent header value of locally made messages ("" for none)
    server_header: str
    #: default final-response timeouts of new transactions, in seconds
    fr_timer: float
    fr_inv_timer: float

    def timer(self, owner: TimerOwner, name) -> Timer:
        """A handle on ``owner``'s timer ``name`` in the core's heap."""

    def start_client(self, request: Request, target: Target, branch: str, owner: ClientOwner,
                     timeout: float, now: float, index: int = 0):
        """Send ``request`` (its top Via carries ``branch``) to ``target`` as a new
        client transaction whose events go to ``owner``; returns the transaction."""

    def send(self, data: bytes, target: Target) -> None:
        """Send ``data`` to ``target`` outside any transaction (keepalives)."""

    def new_branch(self) -> str:
        """A unique RFC 3261 branch for a new client transaction."""

    def local_tag(self, request: Request) -> str:
        """A To tag for locally generated replies, stable across retransmissions."""

    def listener_for(self, proto: str, host: str) -> Optional[Listener]:
        """The listener to send ``proto`` to ``host`` from, or None."""

    def listener_named(self, socket: str) -> Optional[Listener]:
        """The listener ``proto:host:port`` names, or None."""

    def flow_target(self, conn_id: int) -> Optional[Target]:
        """A Target on the open connection ``conn_id``, or None when it is gone."""

    def rr_signature(self, call_id: str, tag: str, params: str = "") -> str:
        """A keyed hash of the node secret over a dialog's Call-ID, one
        party's tag and ``params``: stable across restarts and cluster nodes
        (signs Record-Route, and topology hiding's dialog ids)."""

    def flow_token(self, conn_id: int) -> str:
        """A signed token naming this run's connection ``conn_id``, for a Route
        another node of the cluster sends back (``;flow=TOKEN``, issue 16)."""

    def is_myself(self, uri: URI) -> bool:
        """True if ``uri`` names this proxy."""

    def has_transaction(self, request: Request) -> bool:
        """True if ``request`` (a CANCEL or an ACK) matches a live INVITE transaction."""

    def reply(self, ctx, status: int, reason: str, headers=()) -> None:
        """Answer the request of ``ctx`` (statefully when it has a transaction)."""

    def resume(self, ctx, now: float) -> None:
        """Run the route again for a request suspended by :class:`RouteSuspended`."""
