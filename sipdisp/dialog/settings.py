"""
The C{dialog} section: dialog tracking, timeouts, keepalives, persistence and
profiles (the dialog module parameters).
"""

from ..config.model import (
    Bool,
    ConfigError,
    Int,
    Key,
    ListOf,
    Nullable,
    Seconds,
    Section,
    Str,
)
from ..config.values import parse_status_line


DIALOG = Section(
    "dialog",
    "Dialog tracking for INVITEs whose route calls create_dialog (OpenSIPS/Kamailio dialog module, docs/dialog.md).",
    Key("default_timeout", Seconds(positive=True), 21600.0,
        "Lifetime of an answered call (the OpenSIPS seed's 6 hours); when it passes the dialog ends."),
    Key("bye_on_timeout", Bool(), True,
        "At the timeout sipdisp sends a BYE to both parties (create_dialog flag B does it per call when false)."),
    Key("early_timeout", Seconds(positive=True), 300.0,
        "An INVITE still unanswered after this long stops being tracked (and counted by the load balancer)."),
    Key("keepalive_interval", Seconds(min=0), 0.0,
        "Seconds between in-dialog OPTIONS to the parties of dialogs created with flags P (caller) and p (callee); 0 sends none."),
    Key("keepalive_timeout", Seconds(positive=True), 4.0,
        "A keepalive unanswered after this long has failed."),
    Key("keepalive_failed_limit", Int(min=1), 1,
        "Failed keepalives in a row (no reply, 408 or 481) after which sipdisp ends the call with BYEs."),
    Key("max_dialogs", Int(min=0), 100000,
        "Most dialogs tracked at once; past it create_dialog answers the INVITE 503 Server Busy with Retry-After and ends the route (0: no limit)."),
    Key("db_mode", Int(min=0, max=2), 0,
        "0 memory only; 1 write answered dialogs to the dialog table at every change; 2 write them every db_update_period (the seed's db_mode 2); 1 and 2 keep calls across restarts."),
    Key("db_update_period", Seconds(positive=True), 60.0,
        "Seconds between the writes of db_mode 2."),
    Key("profiles_with_value", ListOf(Str()), [],
        "Dialog profiles counting calls per value (set_dlg_profile: [name, \"$fU\"]), such as calls per user."),
    Key("profiles_no_value", ListOf(Str()), [],
        "Dialog profiles counting calls without a value (set_dlg_profile: name)."),
    Key("unmatched_reply", Nullable(Str()), None,
        "Reply such as \"481 Call/Transaction Does Not Exist\" that validate_dialog sends (ending the route) to an in-dialog request of no dialog; null: it only returns false."),
)


def dialog_rules(cfg):
    """`dialog.early_timeout` is at least `sip.fr_inv_timer`, profile names are unique, and `dialog.unmatched_reply` is "CODE reason"."""
    d = cfg.dialog
    if d.early_timeout < cfg.sip.fr_inv_timer:
        raise ConfigError("dialog.early_timeout",
                          f"must be >= sip.fr_inv_timer ({cfg.sip.fr_inv_timer:g}), got {d.early_timeout:g}")
    names = list(d.profiles_with_value) + list(d.profiles_no_value)
    for name in names:
        if names.count(name) > 1 or name.startswith("lb-") or not name.strip():
            raise ConfigError("dialog.profiles_with_value",
                              f"profile {name!r} is empty, defined twice or uses the load balancer's lb- prefix")
    if d.unmatched_reply is not None:
        try:
            parse_status_line(d.unmatched_reply)
        except ValueError as exc:
            raise ConfigError("dialog.unmatched_reply", str(exc)) from None
