"""twistd glue: ``twistd -n sipdisp -c etc/sipdisp.yaml``."""

import os
import signal

from twisted.python import usage

from .config import ConfigError
from .logs import set_level, set_repeat_limit
from .reload import Reloader
from .schema import load_config
from .service import make_service
from .workers import private_port, worker_config, worker_count, worker_number


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
    worker = worker_number()
    if worker is None and worker_count(cfg) > 1:
        return _supervisor(cfg, path)
    if worker is not None:
        cfg = worker_config(cfg, worker)
    refused = database_refusal(cfg.storage.url)
    if refused:
        raise SystemExit(f"sipdisp: {path}: storage.url: the database refuses sipdisp: {refused}")
    try:
        root = make_service(cfg)
        if worker is not None:
            root.sip.worker_ports = lambda port: private_port(cfg, port, worker)
            root.sip.handoff = _handoff(cfg, worker, root.sip)
        # bind the SIP sockets now, before twistd starts logging, so a port in
        # use is one line here rather than a traceback in the log
        root.sip.privilegedStartService()
    except ConfigError as exc:  # e.g. a bad dispatcher list file, routing.module, a port in use
        raise SystemExit(f"sipdisp: {path}: {exc}")
    root.reloader = Reloader(root, path, adapt=(
        None if worker is None else lambda new: worker_config(new, worker)))
    root.reloader.install(_reactor())
    return root


def _handoff(cfg, worker, sip):
    """Worker ``worker``'s UDP hand-off (``workers.handoff``), or None."""
    count = worker_count(cfg)
    if count < 2 or not cfg.workers.handoff:
        return None
    from .transport.handoff import Handoff
    from .workers.control import worker_handoff_path
    paths = {k: worker_handoff_path(cfg, k) for k in range(1, count + 1)}
    return Handoff(_reactor(), sip.switchboard, worker, count, paths, cfg.sip.max_message_size,
                   buffer_size=cfg.workers.handoff_buffer)


def _supervisor(cfg, path):
    """The service of ``workers.processes`` > 1: the workers' supervisor. The
    node secret is read (or created) here first, so the workers never race
    to create it."""
    from .nodesecret import load_node_secret
    from .workers.supervisor import SupervisorService, register_supervisor_commands
    refused = database_refusal(cfg.storage.url)
    if refused:
        raise SystemExit(f"sipdisp: {path}: storage.url: the database refuses sipdisp: {refused}")
    try:
        load_node_secret(cfg.proxy.secret, cfg.proxy.secret_file)
    except OSError as exc:
        raise SystemExit(f"sipdisp: {path}: proxy.secret_file: {exc}")
    from twisted.application.service import MultiService
    from .workers.control import add_node_management
    reactor = _reactor()
    root = MultiService()
    root.cfg = cfg
    root.worker_count = worker_count(cfg)
    root.workers = SupervisorService(cfg, os.path.abspath(path), reactor)
    root.workers.setServiceParent(root)
    # the console, JSON-RPC and /metrics of the whole node, over the workers' control sockets
    node = add_node_management(root, reactor)
    register_supervisor_commands(node.registry, root.workers)
    signal.signal(signal.SIGHUP,
                  lambda signum, frame: reactor.callFromThread(root.workers.reload))
    return root


#: what PostgreSQL and MariaDB say when they refuse a login or a database
#: (unlike an unreachable server, which the storage waits for and reconnects to)
_PG_REFUSALS = ("authentication failed", "does not exist", "no pg_hba.conf entry",
                "permission denied")
_MYSQL_REFUSALS = (1044, 1045, 1049, 1698)  # access denied (db, user), unknown database


def database_refusal(url, timeout=3):
    """Why the server database at ``url`` refuses sipdisp's login (wrong
    password, unknown role or database), or None: it accepted, is SQLite or
    memory, or cannot be reached (then the storage keeps retrying as during
    an outage). One blocking attempt of at most ``timeout`` seconds, before
    the reactor runs."""
    from .storage.url import DatabaseURL
    try:
        parsed = DatabaseURL(url)
    except ValueError:
        return None  # the service reports it, naming storage.url
    if parsed.backend == "postgres":
        import psycopg2
        try:
            psycopg2.connect(host=parsed.host or "localhost", port=parsed.port or 5432,
                             user=parsed.user, password=parsed.password,
                             dbname=parsed.database, connect_timeout=timeout).close()
        except psycopg2.Error as exc:
            text = " ".join(str(exc).split())
            return text if any(r in text for r in _PG_REFUSALS) else None
    elif parsed.backend == "mysql":
        import pymysql
        try:
            pymysql.connect(host=parsed.host or "localhost", port=parsed.port or 3306,
                            user=parsed.user or "", password=parsed.password or "",
                            database=parsed.database, connect_timeout=timeout).close()
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else None
            return " ".join(str(exc.args[-1]).split()) if code in _MYSQL_REFUSALS else None
    return None


def _reactor():
    from twisted.internet import reactor
    return reactor
