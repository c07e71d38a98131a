"""The routing core: stateful proxy (RFC 3261 section 16) and the route API."""

from .context import RequestContext
from .core import ProxyCore
from .interface import Core, Timer
from .response_context import ProxyTransaction
from .suspend import RouteSuspended
from .target import Flows, Listener, Target

__all__ = ["Core", "Flows", "Listener", "ProxyCore", "ProxyTransaction", "RequestContext",
           "RouteSuspended", "Target", "Timer"]
