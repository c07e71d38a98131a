"""The routing core: stateful proxy (RFC 3261 section 16), route API, built-in routes."""

from .context import RequestContext
from .core import ProxyCore, ProxyTransaction
from .routes import make_seed_route
from .target import Listener, Target

__all__ = ["RequestContext", "ProxyCore", "ProxyTransaction", "make_seed_route",
           "Listener", "Target"]
