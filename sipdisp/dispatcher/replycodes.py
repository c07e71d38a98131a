"""Kamailio's ``ds_ping_reply_codes`` syntax: which replies to a ping mean
"up" besides 200. ``"class=2;code=403;code=404;class=3"`` accepts every
2xx and 3xx plus 403 and 404.

Only replies that arrived count: a ping that times out is a failure even
when 408 (or class 4) is accepted here, unlike Kamailio, where the
locally generated 408 would match such a rule.
"""


class ReplyCodes:
    """An accepted-reply rule parsed from Kamailio syntax; call ``accepts(status)``."""

    __slots__ = ("classes", "codes", "text")

    def __init__(self, text=""):
        self.text = text or ""
        classes = set()
        codes = {200}
        for part in self.text.replace(",", ";").split(";"):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            name = name.strip().lower()
            value = value.strip()
            if not sep or not value.isdigit():
                raise ValueError(f"{part!r} is not class=N or code=NNN")
            number = int(value)
            if name == "class":
                if not 1 <= number <= 6:
                    raise ValueError(f"class must be 1..6, got {number}")
                classes.add(number)
            elif name == "code":
                if not 100 <= number <= 699:
                    raise ValueError(f"code must be 100..699, got {number}")
                codes.add(number)
            else:
                raise ValueError(f"{part!r}: expected class= or code=")
        self.classes = frozenset(classes)
        self.codes = frozenset(codes)

    def accepts(self, status):
        """True if a received final reply with ``status`` means the destination is up."""
        return status in self.codes or status // 100 in self.classes

    def __repr__(self):
        return f"<ReplyCodes {self.text!r}>"
