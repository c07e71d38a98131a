"""The ``message-summary`` event package (RFC 3842): voicemail waiting
indication in ``application/simple-message-summary``, notified as the
newest publication stands, as Kamailio's presence_mwi does."""

import re

from .base import BadBody, EventPackage

SUMMARY = "application/simple-message-summary"
#: RFC 3842 section 5.2: message-context-class "new/old (new-urgent/old-urgent)"
_COUNTS = re.compile(r"^\d{1,9}/\d{1,9}(\s*\(\d{1,9}/\d{1,9}\))?$")
#: RFC 3458 message-context classes
CLASSES = frozenset(("voice-message", "fax-message", "pager-message", "multimedia-message",
                     "text-message", "none"))
NOTHING = b"Messages-Waiting: no\r\n"


class MessageSummaryPackage(EventPackage):
    """``message-summary``: a ``Messages-Waiting: yes|no`` status line, an
    optional ``Message-Account`` and per-class counts."""

    name = "message-summary"
    content_types = (SUMMARY,)
    publishable = True

    def validate(self, content_type, body):
        """BadBody unless the body's first line is ``Messages-Waiting: yes``
        or ``no`` and the summary lines after it are ``Name: value`` with
        the RFC 3842 counts for a known message class."""
        self.check_type(content_type)
        self.check_size(body)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadBody("message-summary body is not UTF-8") from None
        lines = text.replace("\r\n", "\n").split("\n")
        while lines and not lines[0].strip():
            lines.pop(0)
        if not lines:
            raise BadBody("Empty message-summary body")
        name, sep, value = lines[0].partition(":")
        if not sep or name.strip().lower() != "messages-waiting" \
                or value.strip().lower() not in ("yes", "no"):
            raise BadBody("message-summary without a Messages-Waiting: yes|no line")
        for line in lines[1:]:
            if not line.strip():
                break  # optional message headers follow a blank line (RFC 3842 5.2)
            name, sep, value = line.partition(":")
            if not sep or not name.strip():
                raise BadBody("Malformed message-summary line")
            if name.strip().lower() in CLASSES and not _COUNTS.match(value.strip()):
                raise BadBody(f"Malformed message-summary counts for {name.strip()}")

    def notify_body(self, presentity, publications, **kwargs):
        """The newest publication as it is; ``Messages-Waiting: no`` without one."""
        if not publications:
            return SUMMARY, NOTHING
        return SUMMARY, publications[-1][2]
