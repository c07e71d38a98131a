"""Route functions that need the database: suspend the request, re-run its
route when the data is there (Kamailio's ``t_suspend`` / ``t_continue``).

Routes are synchronous, storage is asynchronous. A route function asks
:meth:`Suspender.fetch` for a value by key; if the storage already answered
(the memory backend, or the second run) the value is returned at once.
Otherwise the request is marked handled (its server transaction stays,
absorbing retransmissions), :class:`~sipdisp.proxy.core.RouteSuspended`
stops the route, and when the Deferred fires the value is stored in
``ctx.vars`` and the whole route runs again with
:meth:`~sipdisp.proxy.core.ProxyCore.resume`. The second run finds the value
and goes on. Route functions that change state keep their outcome in
``ctx.vars`` too, so running the steps before the suspension point again has
no further effect (an accepted nonce-count is not taken for a replay).
"""

from twisted.python.failure import Failure

from ..logs import Logger
from ..proxy.core import RouteSuspended

log = Logger(namespace="sipdisp.registrar")


class FetchFailed(Exception):
    """The storage could not provide what a route function needed."""


class Suspender:
    """Suspends and resumes requests of one core.

    ``clock()`` gives the current time for the resumed run (``ctx.now`` is
    kept when None); ``wake()`` sends what the resumed run queued (the
    switchboard's ``wake``; tests drain the layer themselves).
    """

    def __init__(self, core, clock=None, wake=None):
        self.core = core
        self.clock = clock
        self.wake = wake
        self.suspended = 0
        self.resumed = 0

    def fetch(self, ctx, key, start):
        """The result of ``start()`` (a Deferred) for this request, kept in
        ``ctx.vars[key]``; suspends the route while it is pending. Raises
        FetchFailed when the Deferred failed."""
        vars_ = ctx.vars
        if key in vars_:
            return _value(vars_[key])
        done = []

        def got(result):
            done.append(result)
            return None

        try:
            d = start()
        except Exception as exc:  # a programming error or a closed storage
            vars_[key] = Failure(exc)
            return _value(vars_[key])
        d.addBoth(got)
        if done:
            vars_[key] = done[0]
            return _value(done[0])
        ctx.handled = True
        self.suspended += 1
        d.addCallback(lambda _: self._resume(ctx, key, done[0]))
        d.addErrback(lambda f: log.failure("resuming {ctx!r}", f, ctx=ctx))
        raise RouteSuspended()

    def _resume(self, ctx, key, result):
        ctx.vars[key] = result
        self.resumed += 1
        now = self.clock() if self.clock is not None else ctx.now
        self.core.resume(ctx, now)
        if self.wake is not None:
            self.wake()


def _value(result):
    if isinstance(result, Failure):
        raise FetchFailed(result.getErrorMessage())
    return result


def stop_route():
    """Stop the route quietly (after the function answered the request itself)."""
    raise RouteSuspended()
