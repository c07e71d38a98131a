"""
Value syntaxes that several packages' settings share: reply-code rules,
status lines and the rules every prober's keys follow.

They parse the text an operator writes in the YAML file; the packages that
act on the values import them from here, so a syntax is defined once.
"""

from sipdisp.config.model import ConfigError

#: methods a prober may not send: they would start a call or act on one
NOT_PROBE_METHODS = ("INVITE", "ACK", "CANCEL")


class ReplyCodes:
    """
    Kamailio's C{ds_ping_reply_codes} syntax: which replies to a probe mean
    "up" besides 200.  C{"class=2;code=403;code=404;class=3"} accepts every
    2xx and 3xx plus 403 and 404; call C{accepts(status)}.

    Only replies that arrived count: a probe that times out is a failure even
    when 408 (or class 4) is accepted here, unlike Kamailio, where the
    locally generated 408 would match such a rule.
    """

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
        """True if a received final reply with C{status} means the destination is up."""
        return status in self.codes or status // 100 in self.classes

    def __repr__(self):
        return f"<ReplyCodes {self.text!r}>"


def parse_status_line(text):
    """C{"481 Call/Transaction Does Not Exist"} -> C{(481, "Call/...")}; ValueError if malformed."""
    code, _, reason = str(text).strip().partition(" ")
    if not (code.isdigit() and 300 <= int(code) <= 699) or not reason.strip():
        raise ValueError(f"expected \"CODE reason\" with a code of 300..699, got {text!r}")
    return int(code), reason.strip()


def check_probing(cfg, section, method_key, codes_key, parse_codes=ReplyCodes):
    """
    The rules of a prober's keys, for a check of the section that declares
    them: C{section.method_key} is a method other than INVITE, ACK and
    CANCEL, and C{section.codes_key} parses with C{parse_codes}.  Raises
    L{ConfigError} naming the key at fault.
    """
    values = getattr(cfg, section)
    method = getattr(values, method_key)
    if not method.isalpha() or method.upper() in NOT_PROBE_METHODS:
        raise ConfigError(f"{section}.{method_key}",
                          f"must be a method such as OPTIONS or INFO (not INVITE, ACK or CANCEL), "
                          f"got {method!r}")
    try:
        parse_codes(getattr(values, codes_key))
    except ValueError as exc:
        raise ConfigError(f"{section}.{codes_key}", str(exc)) from None
