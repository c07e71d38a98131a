"""
The whole configuration schema, assembled from each package's section, in the
order docs/configuration.md shows it; and the functions that load the
sipdisp configuration against it.

Each package declares its keys and their checks in its own C{settings}
module.  Checks that need every shipped route function (the routing
compiles; the accounting extras name known pseudo-variables) are attached
here.  Regenerate the reference with C{make docs}, which runs
C{python -m sipdisp.schema}.
"""

import sys

from .accounting import settings as accounting
from .accounting.acc import parse_extra
from .aliases import settings as aliases
from .accounting.acclog import parse_log_extra
from .auth import settings as auth
from .cache import settings as cache
from .config import loader
from .config import settings as base
from .config.docs import render
from .config.model import Schema
from .console import settings as console
from .dialog import settings as dialog
from .dialplan import settings as dialplan
from .dispatcher import settings as dispatcher
from .dns import settings as dns
from .drouting import settings as drouting
from .flood import settings as flood
from .loadbalancer import settings as loadbalancer
from .msilo import settings as msilo
from .rtpengine import settings as rtpengine
from .presence import settings as presence
from .proxy import settings as proxy
from .registrar import settings as registrar
from .routing import settings as routing
from .routing import validate_routing
from .routing.pv import compile_template
from .shipped import shipped_functions
from .shared import settings as shared
from .sip import settings as sip
from .storage import settings as storage
from .topoh import settings as topoh
from .transport import settings as transport
from .workers import settings as workers


def routing_compiles(cfg):
    """The routing compiles: every step and condition is a known function with valid arguments, every route named exists, and `log.prefix` names known pseudo-variables."""
    validate_routing(cfg, shipped_functions())
    compile_template(cfg.log.prefix, "log.prefix", shipped_functions().variables)


def accounting_extra(cfg):
    """`accounting.extra` names columns that acc, missed_calls and cdrs have, and `accounting.log_extra` pairs, with pseudo-variables sipdisp knows."""
    tables = ("acc", "missed_calls") + (("cdrs",) if cfg.accounting.cdr_table == "cdrs" else ())
    parse_extra(cfg.accounting.extra, shipped_functions().variables, "accounting.extra", tables)
    parse_log_extra(cfg.accounting.log_extra, shipped_functions().variables)


SCHEMA = Schema()
SCHEMA.add(transport.LISTEN)
SCHEMA.add(transport.ADVERTISE)
SCHEMA.add(transport.TLS, transport.tls_files_for_tls_listeners)
SCHEMA.add(transport.CONNECTIONS, transport.connections_write_buffer)
SCHEMA.add(transport.WEBSOCKET, transport.websocket_rules)
SCHEMA.add(sip.SIP, sip.t2_not_below_t1)
SCHEMA.add(proxy.PROXY)
SCHEMA.add(storage.STORAGE)
SCHEMA.add(base.LOG)
SCHEMA.add(console.CONSOLE)
SCHEMA.add(console.HTTP, console.http_token_rules)
SCHEMA.add(dispatcher.DISPATCHER, dispatcher.dispatcher_ping_rules)
SCHEMA.add(routing.ROUTING, routing_compiles)
SCHEMA.add(registrar.REGISTRAR)
SCHEMA.add(registrar.USRLOC)
SCHEMA.add(auth.AUTH, auth.auth_networks)
SCHEMA.add(registrar.NAT)
SCHEMA.add(dialog.DIALOG, dialog.dialog_rules)
SCHEMA.add(accounting.ACCOUNTING, accounting_extra, accounting.acc_syslog)
SCHEMA.add(loadbalancer.LOAD_BALANCER, loadbalancer.load_balancer_probing)
SCHEMA.add(aliases.ALIASES, aliases.aliases_table)
SCHEMA.add(dialplan.DIALPLAN, dialplan.dialplan_rules)
SCHEMA.add(msilo.MSILO)
SCHEMA.add(drouting.DROUTING, drouting.drouting_rules)
SCHEMA.add(cache.CACHE)
SCHEMA.add(dns.DNS, dns.dns_ttls)
SCHEMA.add(flood.FLOOD, flood.flood_tables)
SCHEMA.add(rtpengine.RTPENGINE)
SCHEMA.add(topoh.TOPOLOGY_HIDING, topoh.topoh_rules)
SCHEMA.add(presence.PRESENCE)
SCHEMA.add(shared.CLUSTER)
SCHEMA.add(workers.WORKERS, workers.workers_rules)


def load_config(path):
    """Read and validate the sipdisp configuration file at C{path}; see L{sipdisp.config.load_config}."""
    return loader.load_config(path, SCHEMA)


def config_from_dict(raw):
    """
    Validate a mapping shaped like the YAML file and return a L{Config}.

    Missing keys take their defaults; C{None} or C{{}} gives the defaults.
    Raises L{ConfigError}.
    """
    return SCHEMA.validate(raw)


def main():
    """Write the configuration reference (docs/configuration.md) to standard output."""
    sys.stdout.write(render(SCHEMA))


if __name__ == "__main__":
    main()
