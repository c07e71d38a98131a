"""The dialog state machine as a table, in the manner of h2's stream states:
``(state, event) -> next state``; a pair not in the table is an error
(:class:`DialogStateError`), which the dialog table logs and ignores, so a
late or duplicated event never corrupts a call.

State numbers are Kamailio's (the ``state`` column of the ``dialog`` table):
1 unconfirmed (INVITE seen, no reply with a To tag), 2 early (a provisional
reply with a To tag), 4 confirmed (2xx), 5 deleted. Kamailio's 3
(2xx seen, ACK not yet) is not used: sipdisp relays the ACK statelessly.
"""

UNCONFIRMED = 1
EARLY = 2
CONFIRMED = 4
DELETED = 5

STATE_NAMES = {UNCONFIRMED: "unconfirmed", EARLY: "early", CONFIRMED: "confirmed",
               DELETED: "deleted"}

#: events: a provisional reply with a To tag, a 2xx, a final failure of the
#: INVITE, a BYE through the proxy, the dialog timeout, an operator's or a
#: keepalive's end (sipdisp sends the BYEs), and the expiry of an unanswered one
EVENTS = ("provisional", "answer", "failure", "bye", "timeout", "end", "expire")

TRANSITIONS = {
    (UNCONFIRMED, "provisional"): EARLY,
    (UNCONFIRMED, "answer"): CONFIRMED,
    (UNCONFIRMED, "failure"): DELETED,
    (UNCONFIRMED, "expire"): DELETED,
    (EARLY, "provisional"): EARLY,
    (EARLY, "answer"): CONFIRMED,
    (EARLY, "failure"): DELETED,
    (EARLY, "expire"): DELETED,
    (CONFIRMED, "provisional"): CONFIRMED,  # a late 18x from another fork
    (CONFIRMED, "answer"): CONFIRMED,       # a 2xx retransmission or a second fork
    (CONFIRMED, "bye"): DELETED,
    (CONFIRMED, "timeout"): DELETED,
    (CONFIRMED, "end"): DELETED,
}


class DialogStateError(Exception):
    """An event that the dialog's current state does not allow."""

    def __init__(self, state, event):
        super().__init__(f"event {event!r} not allowed in state "
                         f"{STATE_NAMES.get(state, state)}")
        self.state = state
        self.event = event


def transition(state, event):
    """The state after ``event`` in ``state``; DialogStateError if not allowed."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise DialogStateError(state, event) from None
