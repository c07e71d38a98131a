"""The dispatcher: destination sets, Kamailio's selection algorithms,
failover, health probing and the ``dispatcher.*`` commands.

- ``destination``: destinations, sets, state bits and letters (``AP``, ``IP``)
- ``sources``: the list file and the ``dispatcher`` table
- ``algorithms``: the selection algorithms as pure functions
- ``probing``: the destination state machine as pure functions
- ``replycodes``: ``ds_ping_reply_codes`` syntax
- ``dispatcher``: the sans-IO module routes call (``ds_select_dst`` ...)
- ``service``: the Twisted service that loads the sets and registers the commands
"""

from .algorithms import ALGORITHMS
from .destination import Destination, DestinationSet, state_letters
from .dispatcher import Dispatcher
from .replycodes import ReplyCodes
from .sources import FileSource, ListFileError, TableSource, parse_list

__all__ = ["ALGORITHMS", "Destination", "DestinationSet", "Dispatcher", "FileSource",
           "ListFileError", "ReplyCodes", "TableSource", "parse_list", "state_letters"]
