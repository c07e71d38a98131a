"""
sipdisp configuration: the engine that validates one YAML file against a
declarative schema.

    from sipdisp.config import load_config, ConfigError
    cfg = load_config("etc/sipdisp.yaml", schema)
    cfg.listen.udp      # [("127.0.0.1", 5060)]
    cfg.sip.t1          # 0.5

Each package declares its own sections (keys, types, defaults, docs and
checks) in its C{settings} module with the vocabulary of
L{sipdisp.config.model}, and shared value syntaxes from
L{sipdisp.config.values}; L{sipdisp.schema} assembles the whole schema and
generates C{docs/configuration.md} from it.  Importing this package loads no
other part of sipdisp.
"""

from sipdisp.config.loader import load_config
from sipdisp.config.model import Config, ConfigError, Schema

__all__ = ["Config", "ConfigError", "Schema", "load_config"]
