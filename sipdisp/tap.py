"""twistd glue: ``twistd -n sipdisp -c etc/sipdisp.yaml``."""

from twisted.python import usage

from .config import ConfigError
from .logs import set_level, set_repeat_limit
from .reload import Reloader
from .schema import load_config
from .service import make_service


class Options(usage.Options):
    """Command-line options of the sipdisp twistd plugin."""

    optParameters = [
        ["config", "c", "etc/sipdisp.yaml", "the YAML configuration file"],
    ]


def makeService(options):
    """Load and validate the configuration, then build the service tree.

    A bad configuration stops start-up with one line naming the key."""
    path = options["config"]
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        raise SystemExit(f"sipdisp: {path}: {exc}")
    except OSError as exc:
        raise SystemExit(f"sipdisp: cannot read {path}: {exc.strerror}")
    set_level(cfg.log.level)
    set_repeat_limit(cfg.log.repeat_limit, cfg.log.repeat_interval)
    try:
        root = make_service(cfg)
    except ConfigError as exc:  # e.g. a bad dispatcher list file or routing.module
        raise SystemExit(f"sipdisp: {path}: {exc}")
    root.reloader = Reloader(root, path)
    root.reloader.install(_reactor())
    return root


def _reactor():
    from twisted.internet import reactor
    return reactor
