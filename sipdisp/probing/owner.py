"""What the load balancer and drouting share around the :class:`Prober`:
OpenSIPS' reply-code syntax and the wiring of a table whose entries are
pinged (attach to a core, start and stop the rounds).
"""

from ..config.values import ReplyCodes
from .prober import Prober


def parse_reply_codes(text):
    """OpenSIPS' ``probing_reply_codes`` (``"501, 403"``) or Kamailio's
    ``class=2;code=403`` syntax, as ReplyCodes."""
    text = (text or "").strip()
    if text and "=" not in text:
        parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
        for part in parts:
            if not part.isdigit():
                raise ValueError(f"{part!r} is not a reply code")
        text = ";".join(f"code={p}" for p in parts)
    return ReplyCodes(text)


class ProbedTable:
    """Mixin of a table whose entries one :class:`Prober` pings in OpenSIPS'
    way: mode 1 and thresholds 1 (one failed probe disables, one good reply
    enables). The table implements ``_probe_targets()`` and
    ``_on_state_change(event)``; it calls :meth:`_init_prober` in its
    constructor, before :meth:`attach`."""

    prober = None
    core = None

    def _init_prober(self, *, interval, timeout, method, from_uri, reply_codes, call_id_prefix, rng):
        self.prober = Prober(self._probe_targets, interval=interval, timeout=timeout,
                             method=method, from_uri=from_uri,
                             reply_codes=parse_reply_codes(reply_codes), mode=1,
                             call_id_prefix=call_id_prefix, rng=rng)
        self.prober.listeners.append(self._on_state_change)

    def attach(self, core):
        """Probes go through ``core``."""
        self.core = core
        self.prober.core = core

    def start_probing(self, now):
        """Arm the probing rounds in the core's timer heap."""
        self.prober.start(now)

    def stop_probing(self):
        """Disarm the probing rounds."""
        self.prober.stop()
