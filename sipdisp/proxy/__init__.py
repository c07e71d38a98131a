"""The routing core: stateful proxy (RFC 3261 section 16) and the route API."""

from .context import RequestContext
from .core import ProxyCore, ProxyTransaction
from .target import Listener, Target

__all__ = ["RequestContext", "ProxyCore", "ProxyTransaction", "Listener", "Target"]
