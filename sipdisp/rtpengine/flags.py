"""The flags string of ``rtpengine_offer`` and friends, translated into ng
dictionary entries the way Kamailio's rtpengine module does (``parse_flags``).

    "ICE=remove RTP/AVP DTLS=off SDES-off replace-origin replace-session-connection"

- ``RTP/AVP``, ``RTP/SAVP``, ``RTP/AVPF``, ``RTP/SAVPF``, ``UDP/TLS/RTP/SAVP``,
  ``UDP/TLS/RTP/SAVPF`` set ``transport-protocol``; ``RTP``, ``SRTP``,
  ``AVP``, ``AVPF`` combine into one as Kamailio's do;
- ``internal``, ``external`` and ``direction=X`` add to the ``direction`` list;
- ``replace-origin``, ``replace-session-connection`` (and ``-SDP-version``,
  ``-username``, ``-zero-address``, ``-session-name``) add to ``replace``;
- ``SDES-X`` adds ``X`` to the ``SDES`` list, ``rtcp-mux-X`` to ``rtcp-mux``;
- ``via-branch=1|2|auto`` sends the Via branch (1: the message's first Via,
  2: its second, auto: the first in a request, the second in a reply);
- ``to-tag`` sends the To tag in an offer too; ``call-id=``, ``from-tag=``,
  ``to-tag=`` override the message's; ``force-answer`` turns an offer into an answer;
- ``repacketize=N`` and ``delete-delay=N`` are integers; ``address-family=IP4|IP6``
  becomes ``address family``;
- any other ``key=value`` is a dictionary entry (``ICE=remove``,
  ``DTLS=passive``, ``record-call=on``), any other word goes to ``flags``
  (``trust-address``, ``symmetric``, ``asymmetric``, ``strict-source``).

The rtpproxy module's one-letter flags (``rtpproxy_offer("co")``) map as
rtpengine's own rtpproxy compatibility maps them: ``a`` asymmetric, ``i``
/ ``e`` direction internal / external, ``r`` trust-address, ``o``
replace-origin, ``c`` replace-session-connection, ``w`` symmetric, ``f``
force (an rtpproxy flag rtpengine ignores), ``x`` and ``2`` ignored.
"""

_TRANSPORTS = {0: "RTP/AVP", 1: "RTP/SAVP", 2: "RTP/AVPF", 3: "RTP/SAVPF",
               4: "UDP/TLS/RTP/SAVP", 5: "UDP/TLS/RTP/SAVPF"}
_TRANSPORT_WORDS = {"RTP/AVP": 0x100, "RTP/SAVP": 0x101, "RTP/AVPF": 0x102, "RTP/SAVPF": 0x103,
                    "UDP/TLS/RTP/SAVP": 0x104, "UDP/TLS/RTP/SAVPF": 0x105}
_REPLACE = {"replace-origin": "origin", "replace-session-connection": "session-connection",
            "replace-SDP-version": "SDP version", "replace-username": "username",
            "replace-zero-address": "zero address", "replace-session-name": "session name"}
_VIA = {"1": 1, "2": 2, "auto": 3}


class FlagError(ValueError):
    """A flag the module refuses (a missing or invalid value)."""


class Flags:
    """One parsed flags string: ``dict`` (ng entries to add), ``via``
    (0 none, 1, 2, 3 auto), ``to`` (send the To tag in an offer), the
    overrides ``call_id``, ``from_tag``, ``to_tag`` and ``force_answer``."""

    __slots__ = ("dict", "via", "to", "call_id", "from_tag", "to_tag", "force_answer", "text")

    def __init__(self, text=""):
        self.text = text
        self.dict = {}
        self.via = 0
        self.to = False
        self.call_id = self.from_tag = self.to_tag = None
        self.force_answer = False

    def entries(self, op):
        """The ng entries for command ``op`` (``replace`` and ``direction`` go
        only with offer and answer, as Kamailio sends them)."""
        if op in ("offer", "answer"):
            return self.dict
        return {k: v for k, v in self.dict.items()
                if k not in ("replace", "direction", "transport-protocol", "SDES", "rtcp-mux")}


def _add(d, key, value):
    d.setdefault(key, []).append(value)


def parse_flags(text):
    """The :class:`Flags` of a Kamailio flags string; FlagError on a bad value."""
    f = Flags(text)
    d = f.dict
    transport = 0
    for word in (text or "").split():
        key, sep, val = word.partition("=")
        has_val = bool(sep)
        if key in _TRANSPORT_WORDS and not has_val:
            transport = _TRANSPORT_WORDS[key]
        elif key == "RTP" and not has_val:
            transport = (transport | 0x100) & ~0x001
        elif key == "AVP" and not has_val:
            transport = (transport | 0x100) & ~0x002
        elif key == "SRTP" and not has_val:
            transport |= 0x101
        elif key == "AVPF" and not has_val:
            transport |= 0x102
        elif key in ("internal", "external") and not has_val:
            _add(d, "direction", key)
        elif key == "direction":
            if not val:
                raise FlagError("direction needs a value")
            _add(d, "direction", val)
        elif key in _REPLACE and not has_val:
            _add(d, "replace", _REPLACE[key])
        elif key.startswith("SDES-") and len(key) > 5 and not has_val:
            _add(d, "SDES", key[5:])
        elif key.startswith("rtcp-mux-") and len(key) > 9 and not has_val:
            _add(d, "rtcp-mux", key[9:])
        elif key == "via-branch":
            if val not in _VIA:
                raise FlagError(f"via-branch={val}: 1, 2 or auto")
            f.via = _VIA[val]
        elif key == "to-tag":
            f.to = True
            if val:
                f.to_tag = val
        elif key in ("call-id", "callid"):
            if not val:
                raise FlagError(f"{key} needs a value")
            f.call_id = val
        elif key == "from-tag":
            if not val:
                raise FlagError("from-tag needs a value")
            f.from_tag = val
        elif key == "force-answer" and not has_val:
            f.force_answer = True
        elif key in ("repacketize", "delete-delay"):
            try:
                d[key] = int(val)
            except ValueError:
                raise FlagError(f"{key}={val}: a number") from None
        elif key == "address-family":
            if val not in ("IP4", "IP6"):
                raise FlagError(f"address-family={val}: IP4 or IP6")
            d["address family"] = val
        elif has_val:
            d[key] = val
        else:
            _add(d, "flags", key)
    if transport & 0x100:
        d["transport-protocol"] = _TRANSPORTS[transport & 0x007]
    return f


_RTPPROXY = {"a": "asymmetric", "i": "internal", "e": "external", "r": "trust-address",
             "o": "replace-origin", "c": "replace-session-connection", "w": "symmetric",
             "f": "force"}


def rtpproxy_flags(letters):
    """The rtpengine flags string of rtpproxy's one-letter flags (``"co"``);
    FlagError on a letter neither maps nor ignores."""
    words = []
    for ch in letters or "":
        if ch in _RTPPROXY:
            words.append(_RTPPROXY[ch])
        elif ch in "x2lz0123456789 ":
            continue  # address-family bridging, lookup-only, repacketizing: rtpengine decides
        else:
            raise FlagError(f"rtpproxy flag {ch!r} has no rtpengine equivalent")
    return " ".join(words)
