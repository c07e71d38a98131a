"""The function table of everything sipdisp ships: the core's functions and
those of every subsystem, each declared by its own ``register(table)``.

This is the assembly: it sits above every subsystem. The service tree
(``SipdispService``) compiles its route against this table, the
configuration check compiles the route against it, and
``python -m sipdisp.routedocs`` documents it.
"""

from .accounting import routefuncs as accounting_functions
from .aliases import routefuncs as aliases_functions
from .dialplan import routefuncs as dialplan_functions
from .cache import routefuncs as cache_functions
from .dialog import routefuncs as dialog_functions
from .dispatcher import routefuncs as dispatcher_functions
from .drouting import routefuncs as drouting_functions
from .flood import routefuncs as flood_functions
from .loadbalancer import routefuncs as loadbalancer_functions
from .msilo import routefuncs as msilo_functions
from .presence import routefuncs as presence_functions
from .registrar import routefuncs as registrar_functions
from .routing import builtins
from .rtpengine import routefuncs as rtpengine_functions
from .topoh import routefuncs as topoh_functions
from .routing.plugin import FunctionTable

#: the ``register(table)`` of the core and of each subsystem, in declaration order
REGISTRARS = (builtins.register, aliases_functions.register, dialplan_functions.register,
              dispatcher_functions.register, registrar_functions.register,
              dialog_functions.register, loadbalancer_functions.register,
              accounting_functions.register, drouting_functions.register, cache_functions.register,
              msilo_functions.register, flood_functions.register,
              rtpengine_functions.register, topoh_functions.register,
              presence_functions.register)


def shipped_functions():
    """A new :class:`FunctionTable` holding every route function sipdisp ships."""
    table = FunctionTable()
    for register in REGISTRARS:
        register(table)
    return table
