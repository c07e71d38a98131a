"""The Manhole: a Python console inside the running proxy, over SSH.

Built from Twisted's public conch API rather than ``manhole_tap.makeService``
(which knows only password files and RSA keys):

- logins are public keys listed in an OpenSSH ``authorized_keys`` file,
  re-read at every attempt; an absent or empty file lets nobody in;
- passwords only if ``console.password_file`` is set, and then only bcrypt
  hashes (``user:$2b$...``, made by ``python -m sipdisp.console.credentials
  password USER``); plain-text lines are ignored;
- the host key is Ed25519, generated on first start (mode 0600, with a
  ``.pub`` beside it) and kept;
- each session gets a fresh namespace (``namespace.build_namespace``);
- at most ``console.max_connections`` connections are open at once (more
  are closed at accept), and one that has not logged in within
  ``console.login_timeout`` seconds is disconnected (Twisted's own default
  is 10 hours: 1,100 idle connections used to exhaust the descriptors of the
  whole process, SIP over TCP included).  Both are counted in ``core.stats``
  and logged when they first happen, then at most once a minute.
"""

import os
import pprint

import bcrypt
from twisted.conch import error as conch_error
from twisted.conch import manhole, manhole_ssh
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker
from twisted.conch.insults import insults
from twisted.conch.ssh import keys, transport, userauth
from twisted.cred import credentials as cred_credentials
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer, threads
from twisted.internet.error import ConnectionDone, ProcessDone
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import __version__
from ..logs import Logger
from .listening import ConnectionCap, ListeningService, core_stats, make_alarms
from .namespace import build_namespace


log = Logger()

# bcrypt of a random string: unknown users cost as much time as known ones
_DUMMY_HASH = b"$2b$12$R4BV4KLYbu.zhC3maB76Delm99qzciRljQ5hy8fs4s8crV8/Qs/pa"
_BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")


# -- host key --------------------------------------------------------------------


def load_host_key(path):
    """The console's host key from ``path``; a new Ed25519 key is generated
    there (mode 0600, public half in ``path.pub``) when the file is absent."""
    if not os.path.exists(path):
        _generate_host_key(path)
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        log.warn("console host key {path} is readable by others (mode {mode:o}); chmod 600 it",
                 path=path, mode=mode)
    return keys.Key.fromFile(path)


def _generate_host_key(path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use that one
        return
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = keys.Key(private).public().toString("openssh") + b" sipdisp-console\n"
    with open(path + ".pub", "wb") as f:
        f.write(public)
    log.info("console: generated Ed25519 host key {path} ({fp})", path=path,
             fp=keys.Key(private).fingerprint(keys.FingerprintFormats.SHA256_BASE64))


# -- credentials ------------------------------------------------------------------


@implementer(IAuthorizedKeysDB)
class AuthorizedKeysFile:
    """The keys of an OpenSSH ``authorized_keys`` file, valid for any user
    name; read at every call so edits apply to the next login.  Lines with
    options (``from=...``) or that do not parse are ignored (refused)."""

    def __init__(self, path):
        self.path = path

    def keys(self):
        """The public keys in the file now (empty if the file is absent)."""
        try:
            with open(self.path, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.error("console: cannot read {path}: {err}", path=self.path, err=exc.strerror)
            return []
        found = []
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith(b"#"):
                continue
            try:
                key = keys.Key.fromString(line)
            except (keys.BadKeyError, ValueError, IndexError):
                log.warn("console: {path}:{n} is not a public key line; ignored",
                         path=self.path, n=number)
                continue
            if key.isPublic():
                found.append(key)
        return found

    def getAuthorizedKeys(self, username):
        """Every key of the file (the console has one set of keys for all names)."""
        return self.keys()


@implementer(ICredentialsChecker)
class HashedPasswordChecker:
    """Passwords checked against ``user:bcrypt-hash`` lines of a file, read at
    every attempt; lines without a bcrypt hash never match.  ``run(f, *args)``
    returns a Deferred of ``f(*args)``; the service passes one running the slow
    hash in the reactor's thread pool (the default runs it in place)."""

    credentialInterfaces = (cred_credentials.IUsernamePassword,)

    def __init__(self, path, run=None):
        self.path = path
        self._run = run or defer.maybeDeferred

    def hashes(self):
        """``{user: hash}`` of the usable lines of the file now."""
        out = {}
        try:
            with open(self.path, "rb") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            log.error("console: cannot read {path}: {err}", path=self.path, err=exc.strerror)
            return out
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith(b"#"):
                continue
            user, sep, digest = line.partition(b":")
            if not sep or not digest.startswith(_BCRYPT_PREFIXES):
                log.warn("console: {path}:{n} has no bcrypt hash; ignored (plain-text "
                         "passwords are not accepted)", path=self.path, n=number)
                continue
            out[user] = digest
        return out

    def requestAvatarId(self, credentials):
        """A Deferred user name if the password matches its bcrypt hash, else UnauthorizedLogin."""
        digest = self.hashes().get(credentials.username)
        known = digest is not None
        d = self._run(_checkpw, credentials.password, digest or _DUMMY_HASH)

        def decide(ok):
            if ok and known:
                return credentials.username
            raise UnauthorizedLogin("bad user name or password")
        return d.addCallback(decide)


def _checkpw(password, digest):
    try:
        return bcrypt.checkpw(password, digest)
    except ValueError:  # a malformed hash
        return False


@implementer(ICredentialsChecker)
class LoggingChecker:
    """Wraps a checker to log each login and each refusal, with the key's fingerprint."""

    def __init__(self, checker):
        self._checker = checker
        self.credentialInterfaces = checker.credentialInterfaces

    def requestAvatarId(self, credentials):
        """The wrapped checker's answer, logged."""
        user = credentials.username.decode("utf-8", "replace")
        blob = getattr(credentials, "blob", None)
        how = "password"
        if blob is not None:
            try:
                key = keys.Key.fromString(blob)
                how = "key " + key.fingerprint(keys.FingerprintFormats.SHA256_BASE64)
            except keys.BadKeyError:
                how = "an unreadable key"
        final = blob is None or getattr(credentials, "signature", None) is not None

        def ok(avatar_id):
            log.info("console: {user} logged in with {how}", user=user, how=how)
            return avatar_id

        def refused(failure):
            if final and not failure.check(conch_error.ValidPublicKey):
                log.info("console: login refused for {user} with {how}", user=user, how=how)
            return failure

        d = defer.maybeDeferred(self._checker.requestAvatarId, credentials)
        return d.addCallbacks(ok, refused)


# -- the interactive console -------------------------------------------------------


class ConsoleInterpreter(manhole.ManholeInterpreter):
    """The Manhole interpreter with results pretty-printed."""

    def displayhook(self, obj):
        """Show a value pretty-printed (Deferreds as the Manhole shows them)."""
        if obj is None or isinstance(obj, defer.Deferred):
            return super().displayhook(obj)
        self.locals["_"] = obj
        self.write(pprint.pformat(obj, width=100, sort_dicts=False))

    def _cbDisplayDeferred(self, result, k, obj):
        text = pprint.pformat(result, width=100, sort_dicts=False)
        self.write(f"Deferred #{k} called back:\n{text}", True)
        del self._pendingDeferreds[id(obj)]
        return result


class ConsoleManhole(manhole.ColoredManhole):
    """The Manhole line editor with a banner and pretty-printed results."""

    banner = (f"sipdisp {__version__} console. help() lists objects and commands; "
              f"^D leaves.")

    def connectionMade(self):
        """Set up the line editor with the pretty-printing interpreter."""
        super().connectionMade()
        self.interpreter = ConsoleInterpreter(self, self.namespace)

    def initializeScreen(self):
        """Greet with the banner and the prompt, without clearing the screen."""
        self.terminal.write(self.banner.encode("utf-8"))
        self.terminal.nextLine()
        self.terminal.write(self.ps[self.pn])
        self.setInsertMode()


class _Link:
    """A minimal transport: ``write`` and ``loseConnection`` as given."""

    def __init__(self, write, loseConnection):
        self.write = write
        self.loseConnection = loseConnection

    def writeSequence(self, data):
        """Write each of ``data``."""
        self.write(b"".join(data))


class ConsoleTerminal(insults.ServerProtocol):
    """The terminal of a console session; leaving it restores the typing
    mode instead of resetting (and clearing) the operator's screen."""

    def loseConnection(self):
        """Restore replace mode, end the line and close."""
        self.resetModes([insults.modes.IRM])
        self.nextLine()
        self.transport.loseConnection()


class ConsoleSessionTransport:
    """Joins the SSH channel to the console's terminal; leaving the console
    (^D) ends the channel with exit status 0, so ``ssh`` exits 0."""

    def __init__(self, proto, terminal, width, height):
        self.proto = proto
        self.terminal = terminal
        proto.makeConnection(_Link(terminal.dataReceived, self.close))
        terminal.makeConnection(_Link(proto.write, self.close))
        terminal.terminalProtocol.terminalSize(width, height)

    closed = False

    def close(self):
        """End the session with exit status 0 (once)."""
        if not self.closed:
            self.closed = True
            self.proto.processEnded(Failure(ProcessDone(0)))

    def lost(self):
        """The channel is gone (the client left): tell the console, send nothing more."""
        self.closed = True
        self.terminal.connectionLost(Failure(ConnectionDone()))


class ConsoleSession(manhole_ssh.TerminalSession):
    """An SSH session running the console: takes window changes and EOF
    instead of raising, and refuses ``ssh host COMMAND`` (use sipdisp-ctl)."""

    width, height = 80, 24
    _transport = None

    def openShell(self, proto):
        """Start the console on the session's channel."""
        self._transport = ConsoleSessionTransport(proto, self.chainedProtocolFactory(),
                                                  self.width, self.height)

    def execCommand(self, proto, cmd):
        """Refuse ``ssh host COMMAND``."""
        raise conch_error.ConchError("the console is interactive; use sipdisp-ctl for commands")

    def windowChanged(self, newWindowSize):
        """Follow the client's terminal size."""
        height, width = newWindowSize[:2]
        if self._transport is not None:
            console = self._transport.terminal.terminalProtocol
            console.width, console.height = width, height

    def eofReceived(self):
        """The client closed its input: end the session (exit status 0)."""
        if self._transport is not None:
            self._transport.close()

    def closed(self):
        """The channel is closed: let the console go."""
        if self._transport is not None:
            self._transport.lost()


class ConsoleRealm(manhole_ssh.TerminalRealm):
    """Gives every login a console on a fresh namespace of the live service tree."""

    sessionFactory = ConsoleSession

    def __init__(self, namespace_factory):
        super().__init__()
        self.chainedProtocolFactory = lambda: ConsoleTerminal(ConsoleManhole, namespace_factory())


class _QuietConchLog(Logger):
    """Conch's per-connection chatter ("connection lost", disconnect reasons)
    at info level would write a line per connection a stranger opens: only
    its warnings and errors are kept."""

    def emit(self, level, format=None, **kwargs):
        if level < LogLevel.warn:
            return
        super().emit(level, format, **kwargs)


class ConsoleUserAuth(userauth.SSHUserAuthServer):
    """The userauth service with the console's login timeout and clock
    (the transport's own deadline, from accept, normally fires first)."""

    def serviceStarted(self):
        """Take the login timeout and clock from the factory, then start."""
        factory = self.transport.factory
        self.loginTimeout = factory.login_timeout
        self.clock = factory.clock
        super().serviceStarted()


class ConsoleTransport(transport.SSHServerTransport):
    """The SSH server transport; a client's ordinary goodbye is not an error.
    Counts itself against the factory's connection cap and is disconnected if
    it has not logged in ``factory.login_timeout`` seconds after accept."""

    _log = _QuietConchLog()
    _login_deadline = None
    _abort_call = None
    _counted = False
    # seconds a timed-out client gets to take the DISCONNECT before the socket is dropped
    ABORT_GRACE = 2.0

    def connectionMade(self):
        """Count the connection and start its login deadline."""
        super().connectionMade()
        factory = getattr(self, "factory", None)
        if isinstance(factory, ConsoleFactory):
            factory.connections.opened()
            self._counted = True
            self._login_deadline = factory.clock.callLater(factory.login_timeout,
                                                           self._login_too_slow)

    def setService(self, service):
        """Start ``service``; reaching ssh-connection means the login succeeded."""
        super().setService(service)
        if service.name == b"ssh-connection":
            self._cancel_login_deadline()

    def connectionLost(self, reason=None):
        """Release the connection's place and timers."""
        self._cancel_login_deadline()
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        if self._counted:
            self._counted = False
            self.factory.connections.closed()
        super().connectionLost(reason)

    def _cancel_login_deadline(self):
        if self._login_deadline is not None:
            if self._login_deadline.active():
                self._login_deadline.cancel()
            self._login_deadline = None

    def _login_too_slow(self):
        self._login_deadline = None
        factory = self.factory
        peer = self.transport.getPeer()
        factory.alarms["login_timeout"].trip(timeout=factory.login_timeout,
                                             peer=f"{getattr(peer, 'host', '?')}:"
                                                  f"{getattr(peer, 'port', '?')}")
        self.sendDisconnect(transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
                            b"login timeout")
        # a peer that does not read could hold the close: drop it after a grace
        self._abort_call = factory.clock.callLater(self.ABORT_GRACE,
                                                   self.transport.abortConnection)

    def receiveError(self, reasonCode, description):
        """Log a client's disconnect message; an ordinary goodbye only at debug level."""
        if reasonCode == transport.DISCONNECT_BY_APPLICATION:
            log.debug("console: client disconnected: {why}", why=description)
            return
        super().receiveError(reasonCode, description)


# refusal kind -> (core.stats counter, the warning written when it first trips)
_ALARMS = {
    "connections": ("console_refused_connections",
                    "console: {limit} SSH connections open (console.max_connections); "
                    "closing new ones at accept, from {peer}"),
    "login_timeout": ("console_login_timeouts",
                      "console: disconnected {peer}, not logged in within {timeout:g} s "
                      "(console.login_timeout)"),
}


class ConsoleFactory(manhole_ssh.ConchFactory):
    """The SSH server factory with the console's own host key, a cap on open
    connections (checked at accept) and a login timeout."""

    noisy = False
    _log = _QuietConchLog()  # "cannot find moduli file" at info, for every connection
    protocol = ConsoleTransport
    services = dict(manhole_ssh.ConchFactory.services)
    services[b"ssh-userauth"] = ConsoleUserAuth

    def __init__(self, portal, host_key, max_connections=16, login_timeout=10.0,
                 clock=None, stats=None):
        super().__init__(portal)
        if clock is None:
            from twisted.internet import reactor as clock
        self.privateKeys = {host_key.sshType(): host_key}
        self.publicKeys = {host_key.sshType(): host_key.public()}
        self.clock = clock
        self.login_timeout = login_timeout
        stats = stats if stats is not None else core_stats(None)
        self.alarms = make_alarms(stats, clock, _ALARMS)
        self.connections = ConnectionCap(max_connections, self.alarms["connections"])

    def buildProtocol(self, addr):
        """A transport, or None (the socket is closed at accept) past the cap."""
        if not self.connections.admit(addr):
            return None
        return super().buildProtocol(addr)


def make_portal(root, authorized_keys, password_file=None, run=None):
    """The cred portal of the console: public keys, plus hashed passwords if a file is given."""
    checkers = [LoggingChecker(SSHPublicKeyChecker(AuthorizedKeysFile(authorized_keys)))]
    if password_file is not None:
        checkers.append(LoggingChecker(HashedPasswordChecker(password_file, run)))
    return Portal(ConsoleRealm(lambda: build_namespace(root)), checkers)


class ConsoleService(ListeningService):
    """Listens for SSH logins to the console (``console.*`` in the config)."""

    name = "console"

    def __init__(self, root, cfg, reactor=None):
        super().__init__(root, cfg, reactor)
        self.factory = None

    def _listen(self):
        cfg = self.cfg
        host_key = load_host_key(cfg.host_key)
        run = None
        if cfg.password_file is not None:
            def run(f, *args):
                return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(),
                                                 f, *args)
        portal = make_portal(self.root, cfg.authorized_keys, cfg.password_file, run)
        self.factory = ConsoleFactory(portal, host_key, cfg.max_connections, cfg.login_timeout,
                                      self._reactor, core_stats(self.root))
        host, port = cfg.listen
        self.port = self._reactor.listenTCP(port, self.factory, interface=host)
        bound = self.port.getHost()
        log.info("listening on ssh:{host}:{port}", host=bound.host, port=bound.port)
        if not AuthorizedKeysFile(cfg.authorized_keys).keys() and cfg.password_file is None:
            log.warn("console: no keys in {path}; nobody can log in until one is added",
                     path=cfg.authorized_keys)
