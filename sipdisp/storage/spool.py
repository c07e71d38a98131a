"""
The on-disk journal of writes that must survive a restart during an outage.

One append-only file of JSON lines per database: a write record
``{"seq": N, "kind": ..., "table": ..., "row": ...}`` for each journalled
write, and ``{"ack": N}`` once writes up to N are committed (writes commit
in sequence order, so one watermark says it all), and
``{"batch": TOKEN, "upto": N}`` when a batch is sent, so a restart can ask
the database whether that batch was committed. Each line is flushed to
the OS at once, so a crash of sipdisp loses nothing; ``fsync`` runs at most
every ``fsync_interval`` seconds (and on close) to bound what a power loss
can take. The file is deleted when nothing in it is left to commit.
"""

import json
import os

from sipdisp.logs import Logger


class Spool:
    """Append-only write journal at ``<directory>/<name>.spool``."""

    log = Logger()

    def __init__(self, directory, name, reactor, fsync_interval=0.2):
        self.path = os.path.join(directory, name + ".spool")
        self._reactor = reactor
        self.fsync_interval = fsync_interval
        self._file = None
        self._dirty = False
        self._timer = None

    @property
    def is_open(self):
        """True while the journal file is open for appending."""
        return self._file is not None

    def load(self):
        """Return ``(records not yet acknowledged, highest seq seen, batch)``
        where *batch* is ``(token, upto)`` of the last batch sent and not
        acknowledged (it may have been committed), or None."""
        if not os.path.exists(self.path):
            return [], 0, None
        records, acked, last, bad, batch = [], 0, 0, 0, None
        with open(self.path, "r", encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    data = json.loads(line)
                except ValueError:
                    bad += 1  # a line torn by a crash mid-write
                    continue
                if "ack" in data:
                    acked = max(acked, data["ack"])
                elif "batch" in data:
                    batch = (data["batch"], data["upto"])
                else:
                    records.append(data)
                    last = max(last, data["seq"])
        if bad:
            self.log.warn("storage spool {path}: skipped {n} unreadable line(s)",
                          path=self.path, n=bad)
        if batch is not None and batch[1] <= acked:
            batch = None
        return [r for r in records if r["seq"] > acked], max(last, acked), batch

    def open(self):
        """Open (or reopen) the journal for appending."""
        if self._file is not None:
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._file = open(self.path, "a+b")
        self._file.seek(0, os.SEEK_END)
        if self._file.tell() > 0:
            self._file.seek(-1, os.SEEK_END)
            if self._file.read(1) != b"\n":
                self._file.write(b"\n")  # end a torn last line

    def _write(self, data):
        self.open()
        self._file.write(json.dumps(data, separators=(",", ":")).encode() + b"\n")
        self._file.flush()
        self._dirty = True
        if self.fsync_interval <= 0:
            self._fsync()
        elif self._timer is None:
            self._timer = self._reactor.callLater(self.fsync_interval, self._fsync)

    def append(self, record):
        """Journal one write record (a dict from ``WriteOp.to_json``)."""
        self._write(record)

    def note_batch(self, token, upto):
        """Record that the batch *token* (writes up to seq *upto*) is sent."""
        if self._file is not None:
            self._write({"batch": token, "upto": upto})

    def ack(self, seq):
        """Record that every write up to *seq* is committed."""
        if self._file is not None:
            self._write({"ack": seq})

    def _fsync(self):
        self._timer = None
        if self._file is not None and self._dirty:
            os.fsync(self._file.fileno())
            self._dirty = False

    def _cancel_timer(self):
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def close(self):
        """fsync and close, keeping the file (it still holds writes)."""
        self._cancel_timer()
        if self._file is not None:
            self._fsync()
            self._file.close()
            self._file = None

    def remove(self):
        """Close and delete the journal: everything in it is committed."""
        self._cancel_timer()
        if self._file is not None:
            self._file.close()
            self._file = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
