"""The command registry shared by the Manhole, JSON-RPC and sipdisp-ctl."""

import pytest
from twisted.internet.defer import Deferred

from sipdisp.commands import CommandError, CommandRegistry


def result_of(d):
    """The result of an already fired Deferred (re-raising its failure)."""
    box = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


@pytest.fixture
def registry():
    reg = CommandRegistry()

    @reg.command("ul.lookup")
    def lookup(aor: str, limit: int = 10, active: bool = True) -> dict:
        """Contacts of an address of record.

        Longer text that is not the help line."""
        return {"aor": aor, "limit": limit, "active": active}

    @reg.command("dispatcher.list")
    def listing() -> list:
        """Destination sets."""
        return [1, 2]

    return reg


def test_help_is_the_docstring_first_line(registry):
    """A command's help text is the first line of its docstring."""
    assert registry.get("ul.lookup").help == "Contacts of an address of record."


def test_explicit_help_wins_over_the_docstring():
    """A help text given at registration replaces the docstring's."""
    reg = CommandRegistry()
    reg.register("core.x", lambda: 1, help="Explicit.")
    assert reg.get("core.x").help == "Explicit."


def test_names_are_sorted_and_iteration_follows_them(registry):
    """names() is sorted and iterating gives the Command objects in that order."""
    assert registry.names() == ["dispatcher.list", "ul.lookup"]
    assert [c.name for c in registry] == registry.names()
    assert len(registry) == 2 and "ul.lookup" in registry and "ul.nope" not in registry


def test_names_must_be_module_dot_verb():
    """A name without a dot is refused at registration."""
    with pytest.raises(ValueError):
        CommandRegistry().register("version", lambda: 1)


def test_reregistering_replaces_the_command():
    """Registering a name again replaces the earlier function."""
    reg = CommandRegistry()
    reg.register("core.x", lambda: 1)
    reg.register("core.x", lambda: 2)
    assert result_of(reg.call("core.x")) == 2


def test_call_returns_a_deferred_with_the_result(registry):
    """call() always returns a Deferred, even for a synchronous command."""
    d = registry.call("dispatcher.list")
    assert isinstance(d, Deferred)
    assert result_of(d) == [1, 2]


def test_string_arguments_are_converted_to_the_annotations(registry):
    """Text arguments (as a CLI sends them) become int and bool per the annotations."""
    out = result_of(registry.call("ul.lookup", "alice@example.com", "5", active="no"))
    assert out == {"aor": "alice@example.com", "limit": 5, "active": False}


def test_defaults_apply_to_missing_optional_arguments(registry):
    """Optional parameters take their defaults when not given."""
    assert result_of(registry.call("ul.lookup", aor="bob")) == {"aor": "bob", "limit": 10,
                                                                 "active": True}


@pytest.mark.parametrize("args, kwargs, text", [
    ((), {}, "missing argument 'aor'"),
    (("a", "1", "yes", "extra"), {}, "at most 3"),
    (("a",), {"aor": "b"}, "given twice"),
    (("a",), {"colour": "red"}, "unknown argument"),
    (("a", "many"), {}, "must be int"),
    (("a", "1", "perhaps"), {}, "must be a boolean"),
])
def test_bad_arguments_raise_command_error(registry, args, kwargs, text):
    """Wrong arguments raise CommandError naming the problem, before the command runs."""
    with pytest.raises(CommandError, match=text):
        registry.call("ul.lookup", *args, **kwargs)


def test_unknown_command_raises_command_error(registry):
    """An unknown name raises CommandError."""
    with pytest.raises(CommandError, match="unknown command 'ul.nope'"):
        registry.call("ul.nope")


def test_a_raising_command_gives_a_failed_deferred():
    """An exception inside the command becomes the Deferred's failure."""
    reg = CommandRegistry()

    @reg.command("core.boom")
    def boom():
        """Fails."""
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        result_of(reg.call("core.boom"))


def test_describe_is_json_friendly(registry):
    """describe() names each parameter with its type, whether required, and default."""
    assert registry.get("ul.lookup").describe() == {
        "name": "ul.lookup", "help": "Contacts of an address of record.",
        "params": [{"name": "aor", "type": "str", "required": True, "default": None},
                   {"name": "limit", "type": "int", "required": False, "default": 10},
                   {"name": "active", "type": "bool", "required": False, "default": True}]}


def test_unannotated_parameters_are_strings():
    """A parameter without annotation is taken as a string."""
    reg = CommandRegistry()
    reg.register("core.echo", lambda value: value)
    assert reg.get("core.echo").params == [("value", str, True, None)]
    assert result_of(reg.call("core.echo", 7)) == "7"
