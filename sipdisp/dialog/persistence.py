"""Dialogs in the database: rows of Kamailio's ``dialog`` and ``dialog_vars``
tables (OpenSIPS/Kamailio compatible columns, sipdisp's own data in
``xdata``), the write-back of ``db_mode`` 1 (at once) and 2 (at each flush),
and the dialogs those rows give back after a restart.

Only confirmed dialogs are written, so calls that never answer cost no
database write.
"""

import json

from ..sip.headers import split_commas
from .dialog import Dialog, bits_to_flags, flags_to_bits
from .states import CONFIRMED, DELETED

#: columns of the dialog table that are strings of a bounded size
_SIZES = {"callid": 255, "from_uri": 255, "from_tag": 128, "to_uri": 255, "to_tag": 128,
          "caller_route_set": 512, "callee_route_set": 512, "caller_contact": 255,
          "callee_contact": 255, "caller_sock": 64, "callee_sock": 64, "req_uri": 255,
          "xdata": 512}


class DialogWriter:
    """Writes dialogs through ``storage`` (the storage API): ``db_mode`` 1 at
    every change, 2 at each :meth:`flush`, 0 never. Counts ``db_writes`` and
    ``db_errors`` in ``stats``."""

    def __init__(self, storage, db_mode, stats, log):
        if db_mode not in (0, 1, 2):
            raise ValueError(f"db_mode must be 0, 1 or 2, got {db_mode!r}")
        self.storage = storage
        self.db_mode = db_mode
        self.stats = stats
        self.log = log
        self._dirty = {}

    def persist(self, dlg):
        """Write (or, once deleted, remove) a confirmed dialog: now (db_mode 1)
        or at the next flush (db_mode 2)."""
        if self.db_mode == 0 or self.storage is None:
            return
        if self.db_mode == 1:
            self._write(dlg)
        else:
            self._dirty[dlg.key] = dlg

    def write_now(self, dlg):
        """Write a dialog at once whatever the ``db_mode`` (1 or 2): a dialog
        taken over from another node is re-owned before anything else."""
        if self.db_mode == 0 or self.storage is None:
            return
        self._dirty.pop(dlg.key, None)
        self._write(dlg)

    def flush(self):
        """Write every dialog changed since the last flush (db_mode 2); returns how many."""
        dirty, self._dirty = self._dirty, {}
        for dlg in dirty.values():
            self._write(dlg)
        return len(dirty)

    def _write(self, dlg):
        storage = self.storage
        where = {"hash_entry": dlg.h_entry, "hash_id": dlg.h_id}
        if dlg.state == DELETED:
            if dlg.stored:
                dlg.stored = False
                self._track(storage.delete("dialog", where=dict(where)), "delete")
                self._track(storage.delete("dialog_vars", where=dict(where)), "delete vars of")
            return
        if dlg.state != CONFIRMED:
            return
        self._track(storage.upsert("dialog", dialog_row(dlg), keys=["hash_entry", "hash_id"]),
                    "write")
        if not dlg.vars_stored:
            if dlg.stored:
                self._track(storage.delete("dialog_vars", where=dict(where)), "rewrite vars of")
            for name, value in dlg.vars.items():
                self._track(storage.insert("dialog_vars", dict(
                    where, dialog_key=name[:128], dialog_value=value[:512])), "write a var of")
            dlg.vars_stored = True
        dlg.stored = True
        self.stats["db_writes"] += 1

    def _track(self, d, what):
        def failed(f):
            self.stats["db_errors"] += 1
            self.log.warn("dialog: cannot {what} a dialog row: {err}", what=what,
                          err=f.getErrorMessage())
        d.addErrback(failed)


def dialog_row(dlg):
    """The ``dialog`` table row of a confirmed dialog (Kamailio's columns;
    sipdisp's own data, such as both parties' addresses and the cluster node
    owning it, in ``xdata``)."""
    xdata = {"c": round(dlg.created, 3), "a": round(dlg.answered, 3),
             "ca": list(dlg.caller_addr[:3]) if dlg.caller_addr else None,
             "ce": list(dlg.callee_addr[:3]) if dlg.callee_addr else None,
             "p": [list(p) for p in dlg.profiles]}
    if dlg.answer_code is not None:
        xdata["r"] = [dlg.answer_code, dlg.answer_reason]
    if dlg.owner is not None:
        xdata["n"] = dlg.owner
    row = {
        "hash_entry": dlg.h_entry, "hash_id": dlg.h_id, "callid": dlg.callid,
        "from_uri": dlg.from_uri, "from_tag": dlg.from_tag or "", "to_uri": dlg.to_uri,
        "to_tag": dlg.to_tag or "", "caller_cseq": str(dlg.caller_cseq),
        "callee_cseq": str(dlg.callee_cseq),
        "caller_route_set": ",".join(dlg.caller_routes) or None,
        "callee_route_set": ",".join(dlg.callee_routes) or None,
        "caller_contact": dlg.caller_contact or "", "callee_contact": dlg.callee_contact or "",
        "caller_sock": dlg.caller_sock or "", "callee_sock": dlg.callee_sock or "",
        "state": dlg.state, "start_time": int(dlg.answered),
        "timeout": int(dlg.answered + dlg.lifetime), "sflags": flags_to_bits(dlg.flags),
        "iflags": 0, "toroute_name": None, "req_uri": dlg.req_uri or "",
        "xdata": json.dumps(xdata, separators=(",", ":")),
    }
    for name, size in _SIZES.items():
        value = row.get(name)
        if isinstance(value, str) and len(value) > size:
            row[name] = value[:size]
    return row


def dialog_from_row(row, vars_of=None):
    """A confirmed Dialog from a ``dialog`` table row (None for other states);
    ``vars_of`` maps dialog keys to their ``dialog_vars``."""
    if int(row["state"]) != CONFIRMED:
        return None
    xdata = json.loads(row.get("xdata") or "{}")
    answered = float(xdata.get("a", row["start_time"]))
    lifetime = float(row["timeout"]) - int(row["start_time"]) if row.get("timeout") else 0.0
    lifetime = max(lifetime, 0.0)

    def addr(value):
        return (value[0], value[1], int(value[2]), None) if value else None

    dlg = Dialog(int(row["hash_entry"]), int(row["hash_id"]), row["callid"], row["from_uri"],
                 row["from_tag"], row["to_uri"], row.get("req_uri") or "",
                 int(row.get("caller_cseq") or 0), row["caller_contact"],
                 addr(xdata.get("ca")), row.get("caller_sock") or "",
                 float(xdata.get("c", answered)), lifetime, bits_to_flags(row.get("sflags")))
    dlg.to_tag = row["to_tag"]
    dlg.callee_cseq = int(row.get("callee_cseq") or 0)
    dlg.callee_contact = row["callee_contact"]
    dlg.callee_addr = addr(xdata.get("ce"))
    dlg.callee_sock = row.get("callee_sock") or ""
    dlg.caller_routes = split_commas(row["caller_route_set"]) if row.get("caller_route_set") else []
    dlg.callee_routes = split_commas(row["callee_route_set"]) if row.get("callee_route_set") else []
    dlg.state = CONFIRMED
    dlg.answered = answered
    if xdata.get("r"):
        dlg.answer_code, dlg.answer_reason = xdata["r"][0], xdata["r"][1]
    dlg.vars = dict((vars_of or {}).get(dlg.key, {}))
    dlg.owner = xdata.get("n")
    dlg.stored = True
    dlg.vars_stored = True
    return dlg


def restored_dialogs(rows, var_rows, log):
    """``(dialog, profile pairs)`` for each confirmed dialog of ``dialog``
    rows, with its variables from ``dialog_vars`` rows; a bad row is logged
    and skipped."""
    vars_of = {}
    for row in var_rows:
        key = (int(row["hash_entry"]), int(row["hash_id"]))
        vars_of.setdefault(key, {})[row["dialog_key"]] = row["dialog_value"] or ""
    for row in rows:
        try:
            dlg = dialog_from_row(row, vars_of)
        except Exception as exc:
            log.warn("dialog: skipping a bad row of the dialog table: {err}", err=exc)
            continue
        if dlg is None:
            continue
        try:
            pairs = json.loads(row.get("xdata") or "{}").get("p") or []
        except ValueError:
            pairs = []
        yield dlg, [tuple(p) for p in pairs]
