"""Reload on SIGHUP: re-read the configuration file and apply what can change
safely in a running proxy (dispatcher sets, log level, trusted addresses),
refusing the rest with one clear log line.

Subsystems say what they can apply by adding hooks to ``root.reload_hooks``:
``{"dispatcher": hook}`` where ``hook(new_cfg)`` applies the section's new
values (it may return a Deferred). A hook registered under ``"*"``-free name
``X`` covers every key under ``X.``; ``always_hooks`` run on every SIGHUP
even when no key changed (the dispatcher re-reads its list file that way).
"""

import signal

from twisted.internet.defer import gatherResults, maybeDeferred

from .config import ConfigError
from .logs import Logger, get_level, set_level, set_repeat_limit
from .schema import config_from_dict, load_config

log = Logger()


def flatten(tree, prefix=""):
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


class Reloader:
    """Applies a re-read configuration to ``root`` (a SipdispService)."""

    def __init__(self, root, path, adapt=None):
        self.root = root
        self.path = path
        # what a worker process changes in the file's config (its node id)
        self.adapt = adapt or (lambda cfg: cfg)
        hooks = root.reload_hooks
        hooks.setdefault("log.level", lambda cfg: set_level(cfg.log.level))
        repeat = lambda cfg: set_repeat_limit(cfg.log.repeat_limit, cfg.log.repeat_interval)  # noqa: E731
        hooks.setdefault("log.repeat_limit", repeat)
        hooks.setdefault("log.repeat_interval", repeat)

    def install(self, reactor):
        """Reload when the process gets SIGHUP (the handler defers to the reactor)."""
        def on_hup(signum, frame):
            reactor.callFromThread(self.reload)
        signal.signal(signal.SIGHUP, on_hup)

    def reload(self):
        """Re-read the file and apply it; returns a Deferred firing with the summary line."""
        try:
            new = self.adapt(load_config(self.path))
        except (ConfigError, OSError) as exc:
            line = f"reload refused, configuration kept: {self.path}: {exc}"
            log.error(line)
            return maybeDeferred(lambda: line)
        old_flat = flatten(self.root.cfg.as_dict())
        new_flat = flatten(new.as_dict())
        changed = sorted(k for k in set(old_flat) | set(new_flat)
                         if old_flat.get(k) != new_flat.get(k))
        hooks = self.root.reload_hooks
        applied, refused, work = [], [], []
        for key in changed:
            hook = None
            for prefix, candidate in hooks.items():
                if key == prefix or key.startswith(prefix + "."):
                    hook = candidate
                    break
            if hook is None:
                refused.append(key)
            else:
                applied.append(f"{key} ({old_flat.get(key)!r} -> {new_flat.get(key)!r})")
                if hook not in work:
                    work.append(hook)
        calls = [maybeDeferred(hook, new) for hook in work]
        calls += [maybeDeferred(hook, new) for hook in self.root.always_hooks]
        if applied:
            self.root.cfg = _merge_applied(self.root.cfg, new, changed, refused)

        def summarize(results):
            extra = [str(r) for r in results[len(work):] if r]
            parts = [f"applied {', '.join(applied)}" if applied else "no setting changed"]
            parts += extra
            if refused:
                parts.append(f"needs a restart, not applied: {', '.join(refused)}")
            line = "reload: " + "; ".join(parts) + f" (log level {get_level()})"
            (log.warn if refused else log.info)(line)
            return line

        d = gatherResults(calls, consumeErrors=True)
        d.addCallback(summarize)

        def failed(failure):
            line = f"reload failed: {failure.value}"
            log.error(line)
            return line
        d.addErrback(failed)
        return d


def _merge_applied(old, new, changed, refused):
    """The running configuration after a reload: new values only where applied."""
    if not refused:
        return new
    tree = old.as_dict()
    new_flat = flatten(new.as_dict())
    for key in changed:
        if key in refused or key not in new_flat:
            continue
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = new_flat[key]
    return config_from_dict(tree)
