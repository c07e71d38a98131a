"""The ul.*, subscriber.* and domain.* management commands in the shared registry."""

import pytest

from sipdisp.commands import CommandError
from tests.support.registrar import Stack


def call(stack, name, *args):
    """Run a command and return its (synchronous) result, or raise its error."""
    got = []
    stack.registry.call(name, *args).addBoth(got.append)
    stack.clock.advance(0)
    result = got[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def test_ul_dump_lookup_and_rm():
    """ul.dump lists AORs and contacts, ul.lookup one AOR (both argument forms), ul.rm removes it."""
    s = Stack({})
    s.ua("alice", host="10.0.0.1").register()
    s.ua("alice", host="10.0.0.2").register()
    s.ua("bob").register()
    dump = call(s, "ul.dump")
    assert (dump["AORs"], dump["Contacts"]) == (2, 3)
    assert call(s, "ul.dump", True)["Records"] == {"alice": 2, "bob": 1}
    got = call(s, "ul.lookup", "location", "sip:alice@example.com")
    assert sorted(c["Contact"] for c in got["Contacts"]) == ["sip:alice@10.0.0.1:5070",
                                                             "sip:alice@10.0.0.2:5070"]
    assert call(s, "ul.lookup", "alice")["Contacts"][0]["Expires"] == 3600
    assert call(s, "ul.rm", "location", "alice")["removed"] == 2
    with pytest.raises(CommandError):
        call(s, "ul.lookup", "alice")
    with pytest.raises(CommandError):
        call(s, "ul.rm", "nobody")
    assert call(s, "ul.stats")["contacts"] == 1


def test_subscriber_add_list_rm():
    """subscriber.add stores kamctl-style rows that then authenticate; list and rm work."""
    s = Stack({"auth": {"enabled": True}})
    assert call(s, "subscriber.add", "carol@example.com", "pw1")["added"]
    assert call(s, "subscriber.add", "carol@example.com", "pw2")["updated"]
    assert call(s, "subscriber.list") == ["carol@example.com"]
    assert s.ua("carol", password="pw2").register().status == 200
    assert call(s, "subscriber.rm", "carol@example.com")["removed"] == 1
    with pytest.raises(CommandError):
        call(s, "subscriber.rm", "carol@example.com")
    with pytest.raises(CommandError):
        call(s, "subscriber.add", "no-domain", "pw")


def test_domain_commands():
    """domain.dump shows configured and listener domains; domain.reload needs auth.domain_table."""
    s = Stack({})
    dump = call(s, "domain.dump")
    assert dump["configured"] == ["example.com"] and "127.0.0.1" in dump["listeners"]
    with pytest.raises(CommandError):
        call(s, "domain.reload")
