"""The Manhole namespace: live objects with readable reprs, commands as functions."""

import pytest
from twisted.internet.defer import Deferred

from sipdisp.commands import CommandError
from sipdisp.console.namespace import CommandFunction, CommandNamespace, build_namespace, settle
from sipdisp.proxy.target import Listener, Target
from tests.support.console import make_root
from tests.support.sipmsg import request


class FakeDispatcher:
    """A stand-in dispatcher module with a repr and an attribute of its own."""

    sets = {1: ["sip:10.0.0.1"]}

    def __repr__(self):
        return "<dispatcher: 1 set>"


@pytest.fixture
def root(tmp_path):
    return make_root(tmp_path)


def test_commands_are_functions_grouped_by_module(root):
    """core.version() runs the registered command and returns its result at once."""
    ns = build_namespace(root)
    assert isinstance(ns["core"], CommandNamespace)
    assert isinstance(ns["core"].version, CommandFunction)
    assert ns["core"].version() == root.registry.get("core.version").func()
    assert ns["core"].version().startswith("sipdisp ")


def test_every_registered_command_is_reachable(root):
    """Each registered module.verb is an attribute path in the namespace."""
    ns = build_namespace(root)
    for name in root.registry.names():
        module, verb = name.split(".", 1)
        assert getattr(ns[module], verb).name == name


def test_command_help_text_is_its_docstring(root):
    """A command function's doc shows its signature and docstring; its repr the help line."""
    ns = build_namespace(root)
    func = ns["stats"].get
    assert func.__doc__.startswith("stats.get(prefix: str = '')")
    assert "optionally filtered by prefix" in func.__doc__
    assert repr(func) == ("<command stats.get(prefix: str = ''): Core counters (messages, "
                          "transactions, errors), optionally filtered by prefix.>")


def test_pending_deferred_is_returned_for_the_console_to_show(root):
    """A command whose Deferred has not fired returns that Deferred, result intact."""
    pending = Deferred()
    root.registry.register("dispatcher.reload", lambda: pending)
    ns = build_namespace(root)
    d = ns["dispatcher"].reload()
    assert d is pending
    pending.callback({"reloaded": 2})
    got = []
    d.addCallback(got.append)
    assert got == [{"reloaded": 2}]


def test_bad_arguments_raise_in_the_console(root):
    """Wrong arguments raise CommandError straight away."""
    ns = build_namespace(root)
    with pytest.raises(CommandError, match="at most 1"):
        ns["stats"].get("a", "b")


def test_a_failed_command_raises_its_exception(root):
    """A command that failed synchronously raises its own exception in the console."""
    def broken():
        """Fails."""
        raise KeyError("gone")
    root.registry.register("dlg.broken", broken)
    with pytest.raises(KeyError, match="gone"):
        build_namespace(root)["dlg"].broken()


def test_settle_leaves_no_unhandled_failure():
    """settle() raises a fired failure and leaves the Deferred handled."""
    d = Deferred()
    d.errback(ValueError("x"))
    with pytest.raises(ValueError):
        settle(d)
    assert d.result is None


def test_module_objects_come_from_root_modules(root):
    """dispatcher, registrations and dialogs are the live modules, or None when absent."""
    for name in ("dispatcher", "usrloc", "registrar", "dialogs"):
        setattr(root.modules, name, None)
    ns = build_namespace(root)
    assert ns["registrations"] is None and ns["dialogs"] is None
    assert ns["dispatcher"] is None or ns["dispatcher"]._target is None
    usrloc, dialog = object(), object()
    root.modules.dispatcher, root.modules.usrloc = FakeDispatcher(), usrloc
    root.modules.dialogs = dialog
    ns = build_namespace(root)
    assert repr(ns["dispatcher"]).startswith("<dispatcher: 1 set>")
    assert ns["registrations"] is usrloc and ns["dialogs"] is dialog


def test_module_commands_lay_over_the_live_module(root):
    """dispatcher.list() is the command; other attributes come from the dispatcher object."""
    root.modules.dispatcher = FakeDispatcher()
    root.registry.register("dispatcher.list", lambda: [{"set": 1}])
    ns = build_namespace(root)
    assert ns["dispatcher"].list() == [{"set": 1}]
    assert ns["dispatcher"].sets == {1: ["sip:10.0.0.1"]}
    assert repr(ns["dispatcher"]).startswith("<dispatcher: 1 set>\n(commands: ")
    assert "dispatcher.list()" in repr(ns["dispatcher"])
    assert "list" in dir(ns["dispatcher"]) and "sets" in dir(ns["dispatcher"])
    with pytest.raises(AttributeError):
        ns["dispatcher"].nothing_here


def test_nested_command_names_become_nested_namespaces(root):
    """A.b.c is reachable as a.b.c()."""
    root.registry.register("lb.res.list", lambda: "ok")
    assert build_namespace(root)["lb"].res.list() == "ok"


def test_proxy_and_transactions_have_summary_reprs(root):
    """proxy and transactions show counts; transactions lists each live one."""
    core = root.sip.core
    ns = build_namespace(root)
    assert "0 server / 0 client transactions" in repr(ns["proxy"])
    assert repr(ns["transactions"]) == "<transactions: 0 server, 0 client>"
    assert ns["proxy"].stats is core.stats  # attributes are the live core's


def test_stats_repr_lists_counters_by_readable_name(root):
    """Counters keyed by tuples print as rcv_request:OPTIONS, one per line."""
    core = root.sip.core
    core.stats["rcv_requests"] += 2
    core.stats["rcv_request", "OPTIONS"] += 2
    text = repr(build_namespace(root)["stats"])
    assert "rcv_request:OPTIONS  2" in text
    assert "rcv_requests" in text
    assert "stats.get()" in text


def test_live_views_follow_the_running_proxy(root):
    """The stats and transactions views read the live tables, not a copy."""
    ns = build_namespace(root)
    core = root.sip.core
    listener = Listener(1, "udp", "127.0.0.1", 5060)
    core.set_listeners([listener])
    core.receive(request("INVITE", "sip:bob@example.com"),
                 Target("udp", "127.0.0.1", 5070, None, listener), 0.0)
    assert ns["stats"]["rcv_request", "INVITE"] == 1
    assert len(ns["transactions"]) >= 1
    assert "server INVITE" in repr(ns["transactions"])


def test_config_is_pretty_printed_and_read_only(root):
    """config shows the loaded values and keeps attribute access."""
    ns = build_namespace(root)
    assert ns["config"].sip.t1 == 0.5
    assert "'console':" in repr(ns["config"])


def test_help_lists_objects_and_commands(root, capsys):
    """help() prints the objects and every command with its help line."""
    ns = build_namespace(root)
    ns["help"]()
    out = capsys.readouterr().out
    assert "core.version()" in out and "The sipdisp version." in out
    assert "transactions" in out and "stats" in out


def test_help_of_a_command_prints_its_doc(root, capsys):
    """help(core.uptime) prints the command's signature and docstring."""
    ns = build_namespace(root)
    ns["help"](ns["core"].uptime)
    assert capsys.readouterr().out.startswith("core.uptime()\n\nSeconds since start-up.")
