"""A shorter way from epoll to the SIP UDP sockets' ``doRead``.

Twisted's epoll reactor hands every ready descriptor to its ``doRead``
through ``log.callWithLogger`` (three nested calls and a context dict, so
that log lines carry the descriptor's prefix) and ``_doReadOrWrite`` (a
``fileno()`` call and the disconnect checks). On this machine that is about
7 of the 37 µs of CPU a wake-up for one datagram costs (measured with a
no-op UDP protocol: docs/benchmarks.md); a proxy wakes up to once per
datagram at low rates (about 910 times a second at 800 calls/s). sipdisp
logs through its own namespaced loggers and a UDP port never disconnects on
a read event, so for the ports marked with :func:`mark` a plain read event
goes straight to ``doRead``;
everything else (stream connections, errors, hang-ups, other reactors'
descriptors) takes Twisted's own path, unchanged.
"""

import select

from twisted.python import log as legacy_log

from sipdisp.logs import Logger

log = Logger()

_ATTRIBUTE = "_sipdisp_fast_read"


def mark(port):
    """Let ``port`` (a Twisted UDP port) be read by the short path."""
    setattr(port, _ATTRIBUTE, True)
    return port


def install(reactor):
    """Give ``reactor`` (an epoll reactor; any other is left as it is) the
    short path for marked ports. Returns True when installed."""
    poller = getattr(reactor, "_poller", None)
    selectables = getattr(reactor, "_selectables", None)
    if not isinstance(poller, select.epoll) or selectables is None:
        return False
    if getattr(reactor, "_sipdisp_fast_poll", False):
        return True
    slow = reactor._doReadOrWrite
    call_with_logger = legacy_log.callWithLogger
    epollin = select.EPOLLIN

    def do_poll(timeout):
        # as EPollReactor.doPoll, with the short path for marked UDP ports
        if timeout is None:
            timeout = -1
        try:
            events = poller.poll(timeout, len(selectables))
        except InterruptedError:
            return
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if event == epollin and getattr(selectable, _ATTRIBUTE, False):
                try:
                    selectable.doRead()
                    continue
                except BaseException as exc:
                    # as Twisted would: the failure logged, the port dropped
                    log.failure("reading {port!r} failed", port=selectable)
                    reactor._disconnectSelectable(selectable, exc, True)
                    continue
            call_with_logger(selectable, slow, selectable, fd, event)

    reactor.doPoll = reactor.doIteration = do_poll
    reactor._sipdisp_fast_poll = True
    return True
