"""Flood detection and bans (Kamailio pike + htable ``ipban``, OpenSIPS
pike): a per-source request rate over a sliding window, a ban table the
transport edge checks before parsing, a scanner filter, and the small
shared hash tables (``$sht(name=>key)``) the route reads and writes."""
