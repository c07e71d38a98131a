"""
The C{accounting} section: acc records, missed calls and CDRs (the acc module
parameters).  The check of C{accounting.extra} needs the pseudo-variables of
every shipped route function, so L{sipdisp.schema} attaches it.
"""

from ..config.model import Bool, ConfigError, Enum, Key, Nullable, Section, Str


ACCOUNTING = Section(
    "accounting",
    "Accounting records, missed calls and CDRs written through storage (Kamailio/OpenSIPS acc module, docs/accounting.md).",
    Key("flag", Nullable(Str()), None,
        "Request flag (setflag) that accounts a transaction in acc, as Kamailio's db_flag (the Kamailio seed's FLT_ACC with WITH_ACCDB); null: only do_accounting accounts."),
    Key("missed_flag", Nullable(Str()), None,
        "Request flag that records a failed INVITE in missed_calls, as Kamailio's db_missed_flag (FLT_ACCMISSED); do_accounting \"missed\" does it too."),
    Key("failed_transaction_flag", Nullable(Str()), None,
        "Request flag that also accounts transactions ending with a failure (FLT_ACCFAILED); do_accounting \"failed\" does it too."),
    Key("extra", Str(), "src_user=$fU;src_domain=$fd;src_ip=$si;dst_ouser=$tU;dst_user=$rU;dst_domain=$rd",
        "Extra columns of acc, missed_calls and cdrs, as column=$pseudo-variable pairs (the seeds' db_extra)."),
    Key("cdr", Bool(), True,
        "Write one CDR per answered call whose INVITE was accounted, when its dialog ends (create_dialog needed)."),
    Key("cdr_table", Enum("cdrs", "acc_cdrs"), "cdrs",
        "Table of the CDRs: sipdisp's cdrs (with setup time, identity and extras) or Kamailio's acc_cdrs (times only)."),
    Key("local_bye", Bool(), True,
        "Write an acc row '200 Dialog Timeout' for the BYEs sipdisp sends itself at a dialog's timeout (the OpenSIPS seed's local_route)."),
    Key("log_flag", Nullable(Str()), None,
        "Request flag (setflag) that writes the transaction's acc record as a log line, as Kamailio's log_flag (the Kamailio seed's FLT_ACC); null: no log accounting by flag."),
    Key("log_missed_flag", Nullable(Str()), None,
        "Request flag that writes a failed INVITE as an 'ACC: call missed' log line, as Kamailio's log_missed_flag (FLT_ACCMISSED)."),
    Key("log_extra", Str(), "",
        "Extra name=$pseudo-variable pairs appended to acc log lines, as Kamailio's log_extra (the seed's src_user=$fU;...)."),
    Key("log_level", Enum("debug", "info", "notice", "warn", "error"), "notice",
        "Level of acc log lines, as Kamailio's acc log_level (notice: info in sipdisp's own log, notice in syslog)."),
    Key("log_facility", Nullable(Str()), None,
        "Syslog facility of acc log lines, as Kamailio's log_facility (LOG_LOCAL0 ... LOG_DAEMON); null: they go to sipdisp's own log."),
    Key("syslog_address", Str(), "/dev/log",
        "Where acc log lines go when log_facility is set: a unix datagram socket path or host:port (UDP)."),
)


def acc_syslog(cfg):
    """`accounting.log_facility` names a syslog facility (LOG_LOCAL0 ...) and `accounting.syslog_address` is a socket path or host:port."""
    from .acclog import facility_code, syslog_target
    a = cfg.accounting
    if a.log_facility is not None:
        try:
            facility_code(a.log_facility)
        except ValueError as exc:
            raise ConfigError("accounting.log_facility", str(exc)) from None
    try:
        syslog_target(a.syslog_address)
    except ValueError as exc:
        raise ConfigError("accounting.syslog_address", str(exc)) from None
