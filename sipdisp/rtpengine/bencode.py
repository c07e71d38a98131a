"""Bencoding, as rtpengine's ``ng`` control protocol uses it (sans-IO).

Dictionaries, lists, integers and byte strings. :func:`encode` takes
``str`` (UTF-8, surrogate escapes kept), ``bytes``, ``int``, ``list`` /
``tuple`` and ``dict``; :func:`decode` gives ``str`` for every string
(UTF-8 with surrogate escapes, so an SDP that is not UTF-8 survives the
round trip), ``int``, ``list`` and ``dict``. Malformed input raises
:class:`BencodeError`, never anything else.
"""


class BencodeError(ValueError):
    """The bytes are not one well-formed bencoded value."""


def encode(value):
    """The bencoding of ``value`` (bytes); dictionary keys sorted as the format asks."""
    out = []
    _encode(value, out)
    return b"".join(out)


def _encode(value, out):
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray)):
        out.append(b"%d:" % len(value))
        out.append(bytes(value))
    elif isinstance(value, bool):
        raise BencodeError("booleans have no bencoding")
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        items = [(k.encode("utf-8", "surrogateescape") if isinstance(k, str) else k, v)
                 for k, v in value.items()]
        for key, item in sorted(items):
            _encode(key, out)
            _encode(item, out)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot bencode {type(value).__name__}")


def decode(data):
    """The one value ``data`` (bytes) holds; BencodeError when malformed or followed by more."""
    try:
        value, end = _decode(data, 0, 0)
    except (IndexError, ValueError) as exc:
        if isinstance(exc, BencodeError):
            raise
        raise BencodeError(f"malformed bencoding: {exc}") from None
    if end != len(data):
        raise BencodeError(f"{len(data) - end} byte(s) after the value")
    return value


#: nesting allowed before a reply is taken for garbage (rtpengine nests 4-5 deep)
MAX_DEPTH = 32


def _decode(data, pos, depth):
    if depth > MAX_DEPTH:
        raise BencodeError("nested too deep")
    c = data[pos:pos + 1]
    if c == b"i":
        end = data.index(b"e", pos)
        text = data[pos + 1:end]
        if not text or text == b"-" or (text[:1] == b"0" and len(text) > 1) or text.startswith(b"-0"):
            raise BencodeError(f"bad integer {text!r}")
        return int(text), end + 1
    if c == b"l":
        pos += 1
        items = []
        while data[pos:pos + 1] != b"e":
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        return items, pos + 1
    if c == b"d":
        pos += 1
        result = {}
        while data[pos:pos + 1] != b"e":
            key, pos = _decode(data, pos, depth + 1)
            if not isinstance(key, str):
                raise BencodeError("a dictionary key is not a string")
            result[key], pos = _decode(data, pos, depth + 1)
        return result, pos + 1
    if c.isdigit():
        colon = data.index(b":", pos)
        length = int(data[pos:colon])
        start = colon + 1
        if start + length > len(data):
            raise BencodeError("string runs past the end")
        return data[start:start + length].decode("utf-8", "surrogateescape"), start + length
    raise BencodeError(f"unexpected {c!r} at {pos}")
