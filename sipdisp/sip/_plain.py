"""The class decorator that keeps a class an ordinary Python class when the
module is compiled by mypyc (``make accel``).

mypyc turns undecorated classes into native ones, which cannot be created
with ``cls.__new__(cls)`` without running ``__init__``, have no
``__slots__`` to copy by and cannot be subclassed by interpreted code; a
class with any other decorator stays a regular class (its methods are still
compiled). The messages, URIs, Vias and addresses keep exactly their pure
Python behaviour that way.
"""


def python_class(cls):
    """Return ``cls`` unchanged (see the module docstring)."""
    return cls
