"""The dialog module's functions in the YAML route and the ``$DLG_status``,
``$DLG_lifetime`` and ``$DLG_dir`` pseudo-variables, declared in a routing
function table by :func:`register`.

    - if: {not: {create_dialog: B}}          # OpenSIPS create_dialog("B")
      then: [{send_reply: [500, "Internal Server Error"]}, exit]
    - if: {all: [{ne: ["$DLG_status", null]}, {not: validate_dialog}]}
      then: [{xlog: "In-Dialog $rm from $si (callid=$ci) is not valid"}]
    - set_dlg_profile: [caller, "$fU"]
    - get_profile_size: [caller, "$fU", "$var(calls)"]

Python routes call the functions at the end of this module with the
request context first (``create_dialog(ctx, "B")``).
"""

from ..proxy.suspend import RouteSuspended
from ..routing.plugin import RouteError, nargs, setter_arg, value_arg
from .dialog import parse_flags
from .table import DOWNSTREAM, DLG


def _table(ctx):
    table = ctx.core.modules.dialogs
    if table is None:
        raise RuntimeError("the dialog module is not running")
    return table


def _current(ctx):
    """The dialog of this request: the one it created, or the one it belongs to."""
    dlg = ctx.vars.get(DLG)
    if dlg is not None:
        return dlg
    found = _table(ctx).match_ctx(ctx)
    return None if found is None else found[0]


# -- Python API -------------------------------------------------------------------

def create_dialog(ctx, flags="", timeout=None):
    """Track the initial INVITE as a dialog (flags B, P, p); False for other requests."""
    return _table(ctx).create(ctx, parse_flags(flags), timeout) is not None


def validate_dialog(ctx):
    """True if the in-dialog request matches a live dialog with a fitting CSeq;
    with ``dialog.unmatched_reply`` set, a request of no dialog is answered
    with it and the route stops."""
    table = _table(ctx)
    if table.validate(ctx):
        return True
    reply = table.unmatched_reply
    if reply is not None and table.match_ctx(ctx) is None and ctx.request.method != "ACK":
        ctx.reply(*reply)
        raise RouteSuspended()
    return False


def set_dlg_profile(ctx, name, value=None):
    """Put the request's dialog in a profile (with a value for profiles with values)."""
    dlg = _current(ctx)
    if dlg is None:
        return False
    return _table(ctx).profiles.add(dlg, name, value) or True


def unset_dlg_profile(ctx, name, value=None):
    """Take the request's dialog out of a profile."""
    dlg = _current(ctx)
    if dlg is None:
        return False
    return _table(ctx).profiles.remove(dlg, name, value) > 0


def is_in_profile(ctx, name, value=None):
    """True if the request's dialog is in the profile (with that value)."""
    dlg = _current(ctx)
    return dlg is not None and _table(ctx).profiles.contains(dlg, name, value)


def get_profile_size(ctx, name, value=None):
    """Dialogs in a profile (with that value; all values when None)."""
    return _table(ctx).profiles.size(name, value)


# -- route functions ----------------------------------------------------------------

def _create_dialog(args, where, env):
    """Track this INVITE as a dialog: ``create_dialog: B`` (B BYE at timeout, P/p ping caller/callee), optional timeout in s."""
    if isinstance(args, list) and len(args) == 1 and args[0] is None:
        args = []
    nargs("create_dialog", args, where, 0, 2)
    try:
        flags = parse_flags(args[0] if args else "")
    except ValueError as exc:
        raise RouteError(where, str(exc)) from None
    timeout = None
    if len(args) > 1:
        try:
            timeout = float(args[1])
        except (TypeError, ValueError):
            raise RouteError(where, f"the timeout must be a number of seconds, "
                                    f"got {args[1]!r}") from None
        if timeout <= 0:
            raise RouteError(where, "the timeout must be > 0")

    def create(ctx):
        return _table(ctx).create(ctx, flags, timeout) is not None
    return create


def _validate_dialog(args, where, env):
    """True if the in-dialog request belongs to a live dialog (CSeq checked); see dialog.unmatched_reply."""
    nargs("validate_dialog", args, where, 0, 0)
    return validate_dialog


def _profile_args(name, args, where, env, lo=1):
    nargs(name, args, where, lo, 2)
    profile = str(args[0])
    _check_profile(profile, where, env)
    value = value_arg(args[1], where, env) if len(args) > 1 else (lambda ctx: None)
    return profile, value


def _check_profile(profile, where, env):
    """A RouteError unless ``profile`` is configured (dialog.profiles_with_value / _no_value)."""
    cfg = env.config
    section = getattr(cfg, "dialog", None) if cfg is not None else None
    if section is None:
        return
    known = set(section.profiles_with_value) | set(section.profiles_no_value)
    if profile not in known:
        raise RouteError(where, f"no dialog profile {profile!r} (define it in "
                                "dialog.profiles_with_value or dialog.profiles_no_value)")


def _set_dlg_profile(args, where, env):
    """Put the dialog in a profile: ``set_dlg_profile: [name, "$fU"]`` (value for profiles with values)."""
    profile, value = _profile_args("set_dlg_profile", args, where, env)
    return lambda ctx: set_dlg_profile(ctx, profile, value(ctx))


def _unset_dlg_profile(args, where, env):
    """Take the dialog out of a profile: ``unset_dlg_profile: [name(, value)]``."""
    profile, value = _profile_args("unset_dlg_profile", args, where, env)
    return lambda ctx: unset_dlg_profile(ctx, profile, value(ctx))


def _is_in_profile(args, where, env):
    """True if the dialog is in a profile: ``is_in_profile: [name(, value)]``."""
    profile, value = _profile_args("is_in_profile", args, where, env)
    return lambda ctx: is_in_profile(ctx, profile, value(ctx))


def _get_profile_size(args, where, env):
    """Store a profile's size in a variable: ``get_profile_size: [name, (value,) "$var(n)"]``."""
    nargs("get_profile_size", args, where, 2, 3)
    profile = str(args[0])
    _check_profile(profile, where, env)
    value = value_arg(args[1], where, env) if len(args) == 3 else (lambda ctx: None)
    setter = setter_arg(str(args[-1]), where)

    def size(ctx):
        setter(ctx, get_profile_size(ctx, profile, value(ctx)))
    return size


# -- pseudo-variables -----------------------------------------------------------------

def _dlg_status(ctx):
    table = ctx.core.modules.dialogs
    if table is None:
        return None
    found = table.match_ctx(ctx)
    return None if found is None else found[0].state


def _dlg_lifetime(ctx):
    table = ctx.core.modules.dialogs
    found = table.match_ctx(ctx) if table is not None else None
    if found is None or found[0].answered is None:
        return None
    return int(ctx.now - found[0].answered)


def _dlg_dir(ctx):
    table = ctx.core.modules.dialogs
    found = table.match_ctx(ctx) if table is not None else None
    if found is None:
        return None
    return "DOWNSTREAM" if found[1] == DOWNSTREAM else "UPSTREAM"


def register(table):
    """Declare the dialog module's functions and pseudo-variables in ``table``."""
    table.add(("create_dialog", "dlg_manage"), _create_dialog, action=True, condition=True)
    table.add("validate_dialog", _validate_dialog, action=True, condition=True)
    table.add("set_dlg_profile", _set_dlg_profile, action=True, condition=True)
    table.add("unset_dlg_profile", _unset_dlg_profile, action=True, condition=True)
    table.add("is_in_profile", _is_in_profile, action=False, condition=True)
    table.add("get_profile_size", _get_profile_size, action=True, condition=False)
    table.add_variable("DLG_status", _dlg_status)
    table.add_variable("DLG_lifetime", _dlg_lifetime)
    table.add_variable("DLG_dir", _dlg_dir)
