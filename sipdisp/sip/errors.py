"""Errors raised by the SIP wire layer."""


class SipParseError(ValueError):
    """A message that cannot be accepted, with the answer the sender deserves.

    ``status`` and ``reason`` are the response to send when the offending
    message is a request (RFC 3261 section 16.3 / 21.4). Responses that fail
    to parse are dropped, never answered. ``message`` is the partially parsed
    message when the header section could be split, so that an answer can
    still copy Via, From, To, Call-ID and CSeq. ``limit`` is the config key
    of the limit the message broke (``"sip.max_via_headers"``), None for a
    grammar error, so that the core can log and count limits apart.
    """

    def __init__(self, reason, status=400, message=None, limit=None):
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message
        self.limit = limit
