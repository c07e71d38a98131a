"""Offline messages (Kamailio's and OpenSIPS' msilo module): ``m_store``
keeps a MESSAGE for a user with no contact in the ``silo`` table,
``m_dump`` delivers it at her next REGISTER (docs/msilo.md)."""

from .silo import MessageSilo, SiloParams

__all__ = ["MessageSilo", "SiloParams"]
