"""Accounting as a Twisted service: builds :class:`Accounting` from
``cfg.accounting``, writing through the root's storage (queued in order,
spooled to disk while the database is away), hooks it to the core and the
dialog table, and registers ``acc.stats``.
"""

from twisted.application.service import Service

from .acc import Accounting
from .acclog import AccLog, LoggerWriter, SyslogWriter


def log_writer_from_config(cfg):
    """Where acc log lines go: syslog with ``accounting.log_facility`` when
    set (at ``accounting.syslog_address``), else sipdisp's own log."""
    a = cfg.accounting
    if a.log_facility is None:
        return LoggerWriter(a.log_level)
    return SyslogWriter(a.log_facility, a.log_level, a.syslog_address)


def accounting_from_config(cfg, write, variables, log_writer=None):
    """An :class:`Accounting` with the parameters of ``cfg.accounting``, whose
    extras may read the pseudo-variables ``variables`` (name -> getter);
    ``log_writer(line)`` takes its log lines (default: from the config)."""
    a = cfg.accounting
    acclog = AccLog(log_writer or log_writer_from_config(cfg), variables, flag=a.log_flag,
                    missed_flag=a.log_missed_flag, extra=a.log_extra)
    return Accounting(write, variables=variables, flag=a.flag, missed_flag=a.missed_flag,
                      failed_flag=a.failed_transaction_flag, extra=a.extra, cdr=a.cdr,
                      cdr_table=a.cdr_table, local_bye=a.local_bye, acclog=acclog)


class AccountingService(Service):
    """Owns the accounting module of the service tree ``root`` (after the dialog service)."""

    name = "accounting"

    def __init__(self, root, reactor=None):
        self.root = root
        self.accounting = accounting_from_config(root.cfg, root.modules.storage.insert,
                                                 root.functions.variables)
        self.accounting.attach(root.sip.core, root.modules.dialogs)
        root.modules.accounting = self.accounting
        register_commands(root.registry, self)

    def stopService(self):
        super().stopService()
        close = getattr(self.accounting.acclog.writer, "close", None)
        if close is not None:
            close()


def register_commands(registry, service):
    """``acc.stats``."""
    acc = service.accounting

    @registry.command("acc.stats")
    def acc_stats() -> dict:
        """Records queued for the database by table, and records that could not be written."""
        return dict(acc.stats)
