"""
sipdisp configuration: one YAML file validated against a declarative schema.

    from sipdisp.config import load_config, ConfigError
    cfg = load_config("etc/sipdisp.yaml")
    cfg.listen.udp      # [("127.0.0.1", 5060)]
    cfg.sip.t1          # 0.5

The keys are declared in L{sipdisp.config.schema}; the reference in
C{docs/configuration.md} is generated from it by C{python -m sipdisp.config.docs}.
"""

from sipdisp.config.loader import config_from_dict, load_config
from sipdisp.config.model import Config, ConfigError
from sipdisp.config.schema import SCHEMA

__all__ = ["Config", "ConfigError", "SCHEMA", "config_from_dict", "load_config"]
