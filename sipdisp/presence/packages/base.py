"""What every event package shares: the error a bad body raises and the
package interface the presence server codes against."""


class BadBody(ValueError):
    """A PUBLISH body (or its Content-Type) the package refuses; ``str()`` is
    the reason phrase of the 400 (or 415 for a wrong type, see ``status``)."""

    def __init__(self, reason, status=400):
        super().__init__(reason)
        #: the status the sender deserves: 400, or 415 for an unsupported Content-Type
        self.status = status


#: defaults of the body bounds (``build_packages`` keyword arguments)
MAX_BODY_SIZE = 65536
MAX_DEPTH = 32


def media_type(content_type):
    """``"Application/PIDF+XML; charset=utf-8"`` -> ``"application/pidf+xml"``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


class EventPackage:
    """One event package (RFC 6665 section 7): its ``name`` (the Event
    header), ``content_types`` (the first is what NOTIFY carries), whether
    PUBLISH is allowed (``publishable``). Each package adds
    ``validate(content_type, body)`` (raises :class:`BadBody`) and
    ``notify_body(presentity, publications)`` -> ``(content_type, body)``
    with ``publications`` ``[(etag, content_type, body), ...]`` oldest
    first, ``[]`` giving the package's "nothing known" body."""

    name = ""
    content_types = ()
    publishable = True

    def __init__(self, *, max_body_size=MAX_BODY_SIZE, max_depth=MAX_DEPTH):
        self.max_body_size = max_body_size
        self.max_depth = max_depth

    def check_type(self, content_type):
        """BadBody (415) unless ``content_type`` is one this package accepts."""
        if media_type(content_type) not in self.content_types:
            raise BadBody(f"Unsupported Content-Type for event {self.name} "
                          f"(expected {self.content_types[0]})", status=415)

    def check_size(self, body):
        """BadBody if ``body`` is over the package's size bound."""
        if len(body) > self.max_body_size:
            raise BadBody(f"{self.name} body larger than {self.max_body_size} bytes")

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"
