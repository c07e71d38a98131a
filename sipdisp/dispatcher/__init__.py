"""The dispatcher: destination sets, Kamailio's selection algorithms,
failover, health probing and the ``dispatcher.*`` commands.

- ``destination``: destinations and sets (their health state is a
  :class:`~sipdisp.probing.ProbeTarget`'s)
- ``sources``: the list file and the ``dispatcher`` table
- ``algorithms``: the selection algorithms as pure functions
- ``dispatcher``: the sans-IO module routes call (``ds_select_dst`` ...)
- ``service``: the Twisted service that loads the sets and registers the commands
"""

from .algorithms import ALGORITHMS
from .destination import Destination, DestinationSet
from .dispatcher import Dispatcher
from .sources import FileSource, ListFileError, TableSource, parse_list

__all__ = ["ALGORITHMS", "Destination", "DestinationSet", "Dispatcher", "FileSource",
           "ListFileError", "TableSource", "parse_list"]
