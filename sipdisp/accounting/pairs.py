"""The ``name=$pv;name=$pv`` lists of the acc module (``db_extra``, ``log_extra``)."""

from ..routing.pv import RouteError, compile_value


def parse_pairs(text, variables, where, reserved, kind, check=None):
    """``"src_user=$fU;src_ip=$si"`` -> ``[(name, getter)]``, the values compiled
    against ``variables``. RouteError (naming ``where``) for a malformed pair, a
    name in ``reserved`` (written by sipdisp itself), a name given twice, or
    one ``check(name)`` refuses by returning the reason."""
    out = []
    seen = set()
    for part in (text or "").split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise RouteError(where, f"{part!r}: expected {kind}=$pv")
        if name in reserved:
            raise RouteError(where, f"{name} is written by sipdisp itself")
        if name in seen:
            raise RouteError(where, f"{name} is given twice")
        reason = check(name) if check is not None else None
        if reason:
            raise RouteError(where, reason)
        seen.add(name)
        out.append((name, compile_value(value, where, variables)))
    return out
