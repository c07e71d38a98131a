"""The sans-IO SIP wire layer: parse, inspect, change and serialize messages.

``BUILD`` says whether the parser modules run compiled (``make accel``) or as
pure Python (see _build.py).
"""

from ._build import choose as _choose

#: "compiled", or "pure" (with the reason when a compiled build was skipped)
BUILD = _choose()

from .address import Address, parse_address
from .errors import SipParseError
from .headers import display_name, header_key, split_commas
from .message import Message, Request, Response, make_response
from .parser import KEEPALIVE, StreamFramer, parse_message
from .uri import URI, format_hostport, parse_hostport, parse_uri
from .via import MAGIC_COOKIE, Via, parse_via

__all__ = [
    "BUILD", "Address", "parse_address", "SipParseError", "display_name", "header_key",
    "split_commas", "Message", "Request", "Response", "make_response",
    "KEEPALIVE", "StreamFramer", "parse_message", "URI", "format_hostport",
    "parse_hostport", "parse_uri", "MAGIC_COOKIE", "Via", "parse_via",
]
