"""The SSH Manhole: host key, logins, and the console on a fake terminal."""

import os
import re

import bcrypt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.checkers import SSHPublicKeyChecker
from twisted.conch.error import ConchError, ValidPublicKey
from twisted.conch.interfaces import IConchUser, ISession
from twisted.conch.ssh import keys
from twisted.cred.credentials import SSHPrivateKey, UsernamePassword
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.testing import StringTransport

from sipdisp.console.manhole import (
    AuthorizedKeysFile,
    ConsoleManhole,
    ConsoleRealm,
    ConsoleService,
    ConsoleSessionTransport,
    ConsoleTerminal,
    ConsoleTransport,
    HashedPasswordChecker,
    load_host_key,
    make_portal,
)
from sipdisp.console.namespace import build_namespace
from tests.support.console import make_root

ANSI = re.compile(rb"\x1b(\[[0-9;?]*[A-Za-z]|[()][A-Z0-9]|[A-Za-z=>])")


def new_key():
    """A fresh Ed25519 key as a twisted.conch Key."""
    return keys.Key(ed25519.Ed25519PrivateKey.generate())


def key_credentials(key, user=b"admin", signed=True):
    """SSH public-key credentials for ``key``, signed as a client would."""
    data = b"session id and userauth request"
    return SSHPrivateKey(user, b"ssh-ed25519", key.public().blob(), data,
                         key.sign(data) if signed else None)


def login(portal, credentials):
    """The result (or Failure) of a portal login, which must fire at once."""
    box = []
    portal.login(credentials, None, IConchUser).addBoth(box.append)
    assert box, "login did not finish synchronously"
    return box[0]


def texts(events):
    from twisted.logger import formatEvent
    return [formatEvent(e) for e in events]


# -- host key ------------------------------------------------------------------


def test_host_key_is_generated_ed25519_with_mode_0600(tmp_path):
    """The first start creates an Ed25519 key readable by its owner only, and a .pub."""
    path = str(tmp_path / "var" / "host_key")
    key = load_host_key(path)
    assert key.sshType() == b"ssh-ed25519"
    assert not key.isPublic()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "var").st_mode & 0o777 == 0o700
    pub = (tmp_path / "var" / "host_key.pub").read_bytes().split()
    assert keys.Key.fromString(b" ".join(pub[:2])) == key.public()


def test_host_key_is_kept_across_starts(tmp_path):
    """A second start loads the same key instead of making a new one."""
    path = str(tmp_path / "host_key")
    first = load_host_key(path)
    assert load_host_key(path) == first


def test_loose_host_key_permissions_are_warned_about(tmp_path, logged):
    """A host key readable by others is used, with a warning to chmod it."""
    path = str(tmp_path / "host_key")
    load_host_key(path)
    os.chmod(path, 0o644)
    load_host_key(path)
    assert any("readable by others" in t for t in texts(logged))


# -- public keys ---------------------------------------------------------------


def test_absent_authorized_keys_file_means_no_keys(tmp_path):
    """With no authorized_keys file nobody's key is accepted."""
    assert AuthorizedKeysFile(str(tmp_path / "nope")).keys() == []


def test_authorized_keys_skips_comments_garbage_and_option_lines(tmp_path):
    """Only plain key lines count; lines with options or junk are ignored."""
    good, optioned = new_key(), new_key()
    path = tmp_path / "authorized_keys"
    path.write_bytes(b"# operators\n\n" + good.public().toString("openssh") + b" ops@example\n"
                     + b'from="10.0.0.1" ' + optioned.public().toString("openssh") + b"\n"
                     + b"not a key at all\n")
    assert AuthorizedKeysFile(str(path)).keys() == [good.public()]


def test_listed_key_logs_in_and_is_logged(tmp_path, logged):
    """A key in authorized_keys with a valid signature gets a console avatar."""
    key = new_key()
    path = tmp_path / "authorized_keys"
    path.write_bytes(key.public().toString("openssh") + b"\n")
    portal = make_portal(make_root(tmp_path), str(path))
    iface, avatar, logout = login(portal, key_credentials(key))
    assert iface is IConchUser
    assert b"session" in avatar.channelLookup
    fp = key.fingerprint(keys.FingerprintFormats.SHA256_BASE64)
    assert f"console: admin logged in with key {fp}" in texts(logged)


def test_unlisted_key_is_refused_and_logged(tmp_path, logged):
    """A key not in authorized_keys is refused, and the refusal logged once."""
    (tmp_path / "authorized_keys").write_bytes(new_key().public().toString("openssh") + b"\n")
    portal = make_portal(make_root(tmp_path), str(tmp_path / "authorized_keys"))
    result = login(portal, key_credentials(new_key(), user=b"mallory"))
    assert result.check(UnauthorizedLogin)
    assert sum("login refused for mallory" in t for t in texts(logged)) == 1


def test_empty_authorized_keys_refuses_everyone(tmp_path):
    """An empty authorized_keys file lets nobody in."""
    (tmp_path / "authorized_keys").write_bytes(b"")
    portal = make_portal(make_root(tmp_path), str(tmp_path / "authorized_keys"))
    assert login(portal, key_credentials(new_key())).check(UnauthorizedLogin)


def test_keys_added_later_work_without_restart(tmp_path):
    """authorized_keys is re-read at each login."""
    path = tmp_path / "authorized_keys"
    portal = make_portal(make_root(tmp_path), str(path))
    key = new_key()
    assert login(portal, key_credentials(key)).check(UnauthorizedLogin)
    path.write_bytes(key.public().toString("openssh") + b"\n")
    assert login(portal, key_credentials(key))[0] is IConchUser


def test_unsigned_key_query_is_not_a_login(tmp_path):
    """The client's unsigned "would this key do?" query gets ValidPublicKey, not an avatar."""
    portal = make_portal(make_root(tmp_path), str(tmp_path / "authorized_keys"))
    assert login(portal, key_credentials(new_key(), signed=False)).check(ValidPublicKey)


def test_passwords_are_refused_without_a_password_file(tmp_path):
    """With password_file null the portal has no password checker at all."""
    portal = make_portal(make_root(tmp_path), str(tmp_path / "authorized_keys"))
    assert login(portal, UsernamePassword(b"admin", b"admin")).check(UnhandledCredentials)
    assert portal.listCredentialsInterfaces() == list(SSHPublicKeyChecker.credentialInterfaces)


# -- hashed passwords ------------------------------------------------------------


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "passwords"
    digest = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    path.write_text(f"# console users\nadmin:{digest}\nplain:s3cret\n")
    return str(path)


@pytest.mark.parametrize("user, password, ok", [
    (b"admin", b"s3cret", True),
    (b"admin", b"wrong", False),
    (b"plain", b"s3cret", False),  # a plain-text line never matches
    (b"nobody", b"s3cret", False),
])
def test_hashed_password_file(tmp_path, password_file, user, password, ok):
    """Only the right password against a bcrypt line logs in."""
    portal = make_portal(make_root(tmp_path), str(tmp_path / "authorized_keys"), password_file)
    result = login(portal, UsernamePassword(user, password))
    if ok:
        assert result[0] is IConchUser
    else:
        assert result.check(UnauthorizedLogin)


def test_plain_text_password_lines_are_warned_about(password_file, logged):
    """A line without a bcrypt hash is ignored with a warning naming the line."""
    assert set(HashedPasswordChecker(password_file).hashes()) == {b"admin"}
    assert any("passwords:3 has no bcrypt hash" in t for t in texts(logged))


def test_password_hash_runs_through_the_given_runner(password_file):
    """The slow bcrypt check goes through ``run`` (the service's thread pool)."""
    calls = []

    def run(f, *args):
        calls.append(f)
        d = Deferred()
        d.callback(f(*args))
        return d

    checker = HashedPasswordChecker(password_file, run)
    box = []
    checker.requestAvatarId(UsernamePassword(b"admin", b"s3cret")).addBoth(box.append)
    assert box == [b"admin"] and len(calls) == 1


# -- the console on a terminal -----------------------------------------------------


class Console:
    """A console on a fake terminal: type() lines, read the cleaned output."""

    def __init__(self, ns):
        self.transport = StringTransport()
        self.terminal = ConsoleTerminal(ConsoleManhole, ns)
        self.terminal.makeConnection(self.transport)
        self.terminal.terminalProtocol.terminalSize(200, 24)

    def type(self, line):
        self.transport.clear()
        self.terminal.dataReceived(line.encode() + b"\r")
        return self.output()

    def output(self):
        return ANSI.sub(b"", self.transport.value()).decode().replace("\r", "")


def test_console_evaluates_a_command_and_prints_the_result(tmp_path):
    """Typing core.version() prints the version string."""
    root = make_root(tmp_path)
    console = Console(build_namespace(root))
    expected = root.registry.get("core.version").func()
    assert f"\n{expected!r}\n" in console.type("core.version()")


def test_console_shows_a_deferred_result_when_it_fires(tmp_path):
    """A command still running shows <Deferred #0>, then its result when it fires."""
    root = make_root(tmp_path)
    pending = Deferred()
    root.registry.register("dispatcher.reload", lambda: pending)
    console = Console(build_namespace(root))
    assert "<Deferred #0>" in console.type("dispatcher.reload()")
    console.transport.clear()
    pending.callback({"sets": 2})
    assert "Deferred #0 called back:\n{'sets': 2}" in console.output()


def test_console_pretty_prints_long_results(tmp_path):
    """A long list is printed one item per line."""
    console = Console(build_namespace(make_root(tmp_path)))
    out = console.type("[{'destination': 'sip:10.0.0.%d:5060' % i} for i in range(5)]")
    assert "[{'destination': 'sip:10.0.0.0:5060'},\n {'destination': 'sip:10.0.0.1:5060'}," in out


def test_console_help_does_not_read_the_server_stdin(tmp_path):
    """help() prints the overview instead of starting pydoc's interactive help."""
    console = Console(build_namespace(make_root(tmp_path)))
    out = console.type("help()")
    assert "Objects:" in out and "core.version()" in out


def test_console_greets_with_a_banner_and_keeps_the_screen(tmp_path):
    """The console greets with a banner and does not clear the operator's screen."""
    console = Console(build_namespace(make_root(tmp_path)))
    raw = console.transport.value()
    assert b"console. help() lists objects and commands" in raw
    assert b"\x1bc" not in raw


class FakeChannel:
    """What ConsoleSessionTransport uses of SSHSessionProcessProtocol."""

    def __init__(self):
        self.written = []
        self.ended = []
        self.transport = None

    def makeConnection(self, transport):
        self.transport = transport

    def write(self, data):
        self.written.append(data)

    def processEnded(self, reason):
        self.ended.append(reason)


def test_ctrl_d_ends_the_session_with_exit_status_0(tmp_path):
    """^D on an empty line closes the channel once, with exit status 0."""
    channel = FakeChannel()
    link = ConsoleSessionTransport(channel, ConsoleTerminal(ConsoleManhole,
                                                            build_namespace(make_root(tmp_path))),
                                   80, 24)
    channel.transport.write(b"\x04")
    link.close()  # an EOF arriving too must not end it twice
    assert len(channel.ended) == 1
    assert channel.ended[0].check(ProcessDone) and channel.ended[0].value.exitCode == 0


def test_session_takes_window_changes_and_eof(tmp_path):
    """The SSH session resizes the console on window-change and ends it on EOF."""
    realm = ConsoleRealm(lambda: build_namespace(make_root(tmp_path)))
    _, avatar, _ = realm.requestAvatar(b"admin", None, IConchUser)
    session = ISession(avatar)
    session.getPty(b"xterm", (30, 100, 0, 0), [])
    channel = FakeChannel()
    session.openShell(channel)
    session.windowChanged((40, 132, 0, 0))
    assert session._transport.terminal.terminalProtocol.width == 132
    session.eofReceived()
    assert len(channel.ended) == 1


def test_exec_requests_are_refused(tmp_path):
    """``ssh host COMMAND`` is refused: the console is interactive."""
    realm = ConsoleRealm(lambda: build_namespace(make_root(tmp_path)))
    _, avatar, _ = realm.requestAvatar(b"admin", None, IConchUser)
    with pytest.raises(ConchError, match="sipdisp-ctl"):
        ISession(avatar).execCommand(FakeChannel(), b"core.version()")


def test_client_goodbye_is_not_logged_as_an_error(logged):
    """A client's normal disconnect message is not logged as an error."""
    from twisted.conch.ssh import transport
    from twisted.logger import LogLevel
    ConsoleTransport().receiveError(transport.DISCONNECT_BY_APPLICATION, b"disconnected by user")
    assert not [e for e in logged if e.get("log_level") == LogLevel.error]


# -- the service ---------------------------------------------------------------------


def test_service_listens_where_configured_with_the_host_key(tmp_path, logged):
    """Starting binds the configured address with the Ed25519 host key, and warns when
    nobody can log in."""
    root = make_root(tmp_path)
    service = root.getServiceNamed("console")
    assert isinstance(service, ConsoleService)
    service.startService()
    try:
        port, factory, _, interface = root._reactor.tcpServers[-1]
        assert (port, interface) == (0, "127.0.0.1")
        assert list(factory.privateKeys) == [b"ssh-ed25519"]
        assert factory.publicKeys[b"ssh-ed25519"].isPublic()
        assert any("nobody can log in" in t for t in texts(logged))
    finally:
        service.stopService()


def test_console_defaults_are_loopback_and_key_only():
    """By default the console listens on 127.0.0.1:2222 with keys only."""
    from sipdisp.schema import config_from_dict
    cfg = config_from_dict({})
    assert cfg.console.listen == ("127.0.0.1", 2222)
    assert cfg.console.password_file is None
    assert cfg.console.authorized_keys == "etc/manhole_authorized_keys"


def test_channel_closed_by_the_client_ends_the_console_quietly(tmp_path):
    """When the client drops the channel the console is told, and nothing more is sent."""
    realm = ConsoleRealm(lambda: build_namespace(make_root(tmp_path)))
    _, avatar, _ = realm.requestAvatar(b"admin", None, IConchUser)
    session = ISession(avatar)
    channel = FakeChannel()
    session.openShell(channel)
    lost = []
    session._transport.terminal.terminalProtocol.connectionLost = lost.append
    session.closed()
    session.eofReceived()
    assert len(lost) == 1
    assert channel.ended == []
