"""The sans-IO transaction layer (RFC 3261 section 17, RFC 6026)."""

from .client import ClientTransaction
from .layer import TransactionLayer, server_key
from .server import ServerTransaction
from .timers import TimerHeap

__all__ = ["ClientTransaction", "ServerTransaction", "TransactionLayer",
           "TimerHeap", "server_key"]
