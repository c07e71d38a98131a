"""Accounting (Kamailio/OpenSIPS acc): transaction records, missed calls and
one CDR per call, written through the storage API so a database outage
loses nothing (docs/accounting.md)."""

from .acc import SEED_EXTRA, Accounting, parse_extra

__all__ = ["Accounting", "SEED_EXTRA", "parse_extra"]
