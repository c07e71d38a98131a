"""Route functions that need the database: suspend the request, re-run its
route when the data is there (Kamailio's ``t_suspend`` / ``t_continue``).

Routes are synchronous, storage is asynchronous. A route function asks
:meth:`Suspender.fetch` for a value by key; if the storage already answered
(the memory backend, or the second run) the value is returned at once.
Otherwise the request is marked handled (its server transaction stays,
absorbing retransmissions), :class:`RouteSuspended`
stops the route, and when the Deferred fires the value is stored in
``ctx.vars`` and the whole route runs again with
:meth:`~sipdisp.proxy.core.ProxyCore.resume`. The second run finds the value
and goes on. Route functions that change state keep their outcome in
``ctx.vars`` too, so running the steps before the suspension point again has
no further effect (an accepted nonce-count is not taken for a replay).
"""

import itertools

from twisted.python.failure import Failure

from ..logs import Logger

log = Logger(namespace="sipdisp.proxy")


class RouteSuspended(Exception):
    """Raised by a route function to stop the route quietly: the request was
    answered, or it waits for data (a database read) and the function's
    owner continues it later with :meth:`ProxyCore.resume`."""


class FetchFailed(Exception):
    """The storage could not provide what a route function needed."""


class Suspender:
    """Suspends and resumes requests of one core.

    ``clock()`` gives the current time for the resumed run (``ctx.now`` is
    kept when None); ``wake()`` sends what the resumed run queued (the
    switchboard's ``wake``; tests drain the layer themselves). A request
    whose data has not come after ``timeout`` seconds is answered 500 (a
    timer in the core's heap: this object is its owner) and never resumed.
    """

    def __init__(self, core, clock=None, wake=None, timeout=10.0):
        self.core = core
        self.clock = clock
        self.wake = wake
        self.timeout = timeout
        self.timers = {}  # the core's heap keeps this owner's deadlines here
        self._pending = {}
        self._ids = itertools.count(1)
        self.suspended = 0
        self.resumed = 0
        self.timed_out = 0

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
        tid = next(self._ids)
        self._pending[tid] = ctx
        self.core.timer(self, tid).arm(ctx.now + self.timeout)
        d.addCallback(lambda _: self._resume(tid, ctx, key, done[0]))
        d.addErrback(lambda f: log.failure("resuming {ctx!r}", f, ctx=ctx))
        raise RouteSuspended()

    def on_timer(self, tid, now):
        """A suspended request waited ``timeout`` seconds: answer 500, forget it."""
        ctx = self._pending.pop(tid, None)
        if ctx is None:
            return
        self.timed_out += 1
        log.warn("no answer from the database in {t} s for {ctx!r}: 500", t=self.timeout, ctx=ctx)
        ctx.now = now
        ctx.reply(500, "Server Internal Error")

    @property
    def pending(self):
        """How many requests wait for data now."""
        return len(self._pending)

    def fetch_reply(self, rctx, key, start):
        """:meth:`fetch` for a reply route (``rctx`` a
        :class:`~sipdisp.proxy.context.ReplyContext`): the reply is held by
        its transaction (neither relayed nor counted) while ``start()``'s
        Deferred is pending, and when it fires the reply route runs again
        on the same reply (its earlier steps replay their results) and the
        reply goes on as it would have. The result is kept in
        ``rctx.results[key]``. ``start()`` must fire in bounded time (the
        rtpengine client always does): a held reply has no timer of its own."""
        results = rctx.results
        if results is not None and key in results:
            return _value(results[key])
        done = []

        def got(result):
            done.append(result)
            return None

        try:
            d = start()
        except Exception as exc:
            done.append(Failure(exc))
        else:
            d.addBoth(got)
        if done:
            if rctx.results is None:
                rctx.results = {}
            rctx.results[key] = done[0]
            return _value(done[0])
        rctx.held = True
        self.suspended += 1
        d.addCallback(lambda _: self._continue_reply(rctx, key, done[0]))
        d.addErrback(lambda f: log.failure("continuing {rctx!r}", f, rctx=rctx))
        raise RouteSuspended()

    def _continue_reply(self, rctx, key, result):
        if rctx.results is None:
            rctx.results = {}
        rctx.results[key] = result
        self.resumed += 1
        now = self.clock() if self.clock is not None else rctx.now
        txn = rctx.holder
        if txn is not None:
            txn.continue_reply(rctx, now)
        if self.wake is not None:
            self.wake()

    def _resume(self, tid, ctx, key, result):
        if self._pending.pop(tid, None) is None:
            return  # timed out and answered already
        self.core.timer(self, tid).cancel()
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
