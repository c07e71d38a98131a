"""The sans-IO SIP wire layer: parse, inspect, change and serialize messages."""

from .address import Address, parse_address
from .errors import SipParseError
from .headers import display_name, header_key, split_commas
from .message import Message, Request, Response, make_response
from .parser import KEEPALIVE, StreamFramer, parse_message
from .uri import URI, format_hostport, parse_hostport, parse_uri
from .via import MAGIC_COOKIE, Via, parse_via

__all__ = [
    "Address", "parse_address", "SipParseError", "display_name", "header_key",
    "split_commas", "Message", "Request", "Response", "make_response",
    "KEEPALIVE", "StreamFramer", "parse_message", "URI", "format_hostport",
    "parse_hostport", "parse_uri", "MAGIC_COOKIE", "Via", "parse_via",
]
