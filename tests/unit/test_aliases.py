"""alias_db: the query a lookup makes and the URI it writes (sans-IO), and
alias_db_lookup in a route over the memory storage, suspended while a slow
table is read, with use_domain, flags, commands and failures."""

import itertools

import pytest
from twisted.internet import defer

from sipdisp.aliases import Aliases, lookup_query, parse_flags, split_address, target_uri
from sipdisp.aliases.service import AliasService
from sipdisp.config import ConfigError
from sipdisp.schema import config_from_dict
from sipdisp.storage import StorageUnavailable, open_storage
from sipdisp.storage.backends.memory import drop_database
from tests.support.registrar import Stack, final, invite, requests

NODE = ("127.0.0.1", 5080)
_names = itertools.count(1)

ROUTE = {"request_route": [
    {"if": {"is_method": "REGISTER"}, "then": [{"save": "location"}, "exit"]},
    {"if": {"alias_db_lookup": "dbaliases"}, "then": [{"xlog": "aliased to $ru"}]},
    {"if": {"lookup": "location"}, "then": ["t_relay", "exit"]},
    {"sl_send_reply": [404, "Not Found"]},
]}


@pytest.fixture
def db():
    """A fresh named memory database."""
    name = f"aliases{next(_names)}"
    yield f"memory://{name}"
    drop_database(name)


def stack(db, slow=False, route=ROUTE, **aliases):
    """A proxy with the registrar and the alias service on ``db`` running ``route``."""
    s = Stack({"aliases": dict({"enabled": True}, **aliases), "routing": route,
               "usrloc": {"db_mode": 3 if slow else 0}}, db=db, slow=slow)
    s.alias_service = AliasService(s.root, s.clock)
    s.aliases = s.alias_service.aliases
    return s


def add(s, alias, target):
    d = s.aliases.add(alias, target)
    s.clock.advance(0.1)
    return d


# -- sans-IO ------------------------------------------------------------------------

def test_lookup_query_asks_for_the_alias_user_and_with_use_domain_its_domain():
    """A lookup keys on alias_username (and alias_domain, lower case) and reads username, domain."""
    assert lookup_query("1000", "Example.COM", False) == (
        {"alias_username": "1000"}, ["username", "domain"])
    assert lookup_query("1000", "Example.COM", True) == (
        {"alias_username": "1000", "alias_domain": "example.com"}, ["username", "domain"])


def test_reverse_lookup_keys_on_the_user_and_reads_the_alias():
    """Flag r turns the query around: user to alias."""
    where, columns = lookup_query("alice", "example.com", True, reverse=True)
    assert where == {"username": "alice", "domain": "example.com"}
    assert columns == ["alias_username", "alias_domain"]


def test_domain_prefix_is_taken_off_before_matching():
    """aliases.domain_prefix 'sip.' matches sip.example.com as example.com (never to nothing)."""
    assert lookup_query("1", "sip.example.com", True, domain_prefix="sip.")[0][
        "alias_domain"] == "example.com"
    assert lookup_query("1", "sip.", True, domain_prefix="sip.")[0]["alias_domain"] == "sip."


def test_target_uri_is_sip_user_at_domain_and_keeps_the_ruri_domain_when_empty():
    """The row becomes sip:user@domain as alias_db writes it; an empty domain keeps the R-URI's."""
    cols = ["username", "domain"]
    assert target_uri({"username": "alice", "domain": "example.com"}, cols, "x") == \
        "sip:alice@example.com"
    assert target_uri({"username": "alice", "domain": ""}, cols, "pbx.local") == \
        "sip:alice@pbx.local"
    assert target_uri({"username": "", "domain": "x"}, cols, "y") is None


@pytest.mark.parametrize("flags, parsed", [("", (None, False)), ("d", (False, False)),
                                           ("u", (True, False)), ("rd", (False, True))])
def test_flags_choose_domain_matching_and_direction(flags, parsed):
    """Flags d, u and r parse as alias_db documents them."""
    assert parse_flags(flags) == parsed


@pytest.mark.parametrize("flags", ["x", "du"])
def test_bad_flags_are_refused(flags):
    """An unknown flag, or d with u, is a ValueError."""
    with pytest.raises(ValueError):
        parse_flags(flags)


def test_split_address_takes_sip_uris_and_bare_users():
    """user@domain, sip:user@domain;params and a bare user all split."""
    assert split_address("sip:1000@Example.com;user=phone") == ("1000", "example.com")
    assert split_address("1000") == ("1000", "")
    with pytest.raises(ValueError):
        split_address("@example.com")


# -- in a route -----------------------------------------------------------------------

def test_an_aliased_number_reaches_the_user_it_points_to(db):
    """INVITE sip:1000@example.com goes to alice's contact when 1000 is her alias."""
    s = stack(db)
    assert s.ua("alice").register().status == 200
    add(s, "1000@example.com", "alice@example.com")
    out = s.send(invite("sip:1000@example.com"), source=NODE)
    (fwd, target), = requests(out, "INVITE")
    assert str(fwd.uri) == "sip:alice@10.0.0.1:5070" and (target.host, target.port) == (
        "10.0.0.1", 5070)
    assert s.aliases.stats["found"] == 1


def test_a_number_that_is_no_alias_is_false_and_the_route_goes_on(db):
    """No alias row: alias_db_lookup is false, the R-URI stays, the route answers 404."""
    s = stack(db)
    add(s, "1000@example.com", "alice@example.com")
    out = s.send(invite("sip:2000@example.com"), source=NODE)
    assert final(out).status == 404
    assert s.aliases.stats["not_found"] == 1


def test_use_domain_matches_the_alias_domain_too(db):
    """With aliases.use_domain an alias of another domain does not match; without, it does."""
    for use_domain, status in ((True, 404), (False, None)):
        s = stack(db, use_domain=use_domain)
        s.ua("alice").register()
        add(s, "3000@other.org", "alice@example.com")
        out = s.send(invite("sip:3000@example.com"), source=NODE)
        if status:
            assert final(out).status == status
        else:
            assert requests(out, "INVITE")
        add(s, "3000@other.org", "bob@example.com")  # repoint, for the next round's table


def test_a_slow_table_suspends_the_route_and_a_later_suspension_does_not_look_up_again(db):
    """The route waits for the alias row, then for usrloc (db_mode 3); the re-run keeps the alias."""
    s = stack(db, slow=True)
    assert s.ua("alice").register().status == 200
    add(s, "1000@example.com", "alice@example.com")
    reads = s.root.modules.storage.reads
    out = s.send(invite("sip:1000@example.com"), source=NODE)
    (fwd, _), = requests(out, "INVITE")
    assert str(fwd.uri) == "sip:alice@10.0.0.1:5070"
    # one read of dbaliases and one of location: the canonical URI is never looked up
    assert s.root.modules.storage.reads - reads == 2
    assert s.alias_service.module.suspender.resumed == 1
    assert s.aliases.stats == {"lookups": 1, "found": 1, "not_found": 0, "errors": 0}


def test_a_table_that_cannot_be_read_is_no_alias_and_is_counted(db):
    """A failed read makes alias_db_lookup false with a warning; the call goes on."""
    s = stack(db)

    class Down:
        url = "memory://down"

        def select(self, *args, **kwargs):
            return defer.fail(StorageUnavailable("database down"))
    s.aliases.storage = Down()
    out = s.send(invite("sip:1000@example.com"), source=NODE)
    assert final(out).status == 404
    assert s.aliases.stats["errors"] == 1


def test_alias_db_find_writes_the_alias_into_a_variable_without_touching_the_ruri(db):
    """alias_db_find with flag r finds the alias of the From user into $var(alias)."""
    route = {"request_route": [
        {"if": {"alias_db_find": ["dbaliases", "$fu", "$var(alias)", "r"]},
         "then": [{"sl_send_reply": [299, "alias $var(alias) for $ru"]}, "exit"]},
        {"sl_send_reply": [404, "none"]}]}
    s = stack(db, route=route)
    add(s, "1000@example.com", "bob@fs.example.net")
    out = s.send(invite("sip:someone@example.com"), source=NODE)
    assert final(out).reason == "alias sip:1000@example.com for sip:someone@example.com"


# -- commands and configuration ---------------------------------------------------------

def test_alias_commands_add_list_and_remove(db):
    """alias.add, alias.list and alias.rm manage the rows the lookups read."""
    s = stack(db)
    call = s.registry.call
    assert call("alias.add", "1000@example.com", "alice@example.com").result["added"]
    assert call("alias.add", "1000@example.com", "bob@example.com").result["updated"]
    s.clock.advance(0.1)
    assert call("alias.list").result == [{"alias": "1000@example.com",
                                          "target": "bob@example.com"}]
    assert call("alias.rm", "1000@example.com").result["removed"] == 1
    s.clock.advance(0.1)
    missing = call("alias.rm", "1000@example.com")
    assert "no alias 1000@example.com" in str(missing.result.value)
    missing.addErrback(lambda f: None)


@pytest.mark.parametrize("routing, message", [
    ({"request_route": [{"alias_db_lookup": "nosuch"}]}, "no alias table 'nosuch'"),
    ({"request_route": [{"alias_db_lookup": ["dbaliases", "q"]}]}, "unknown alias flag"),
    ({"request_route": [{"alias_db_find": ["dbaliases", "$fu", "$fU"]}]}, "cannot be assigned"),
])
def test_bad_arguments_are_one_line_route_errors(routing, message):
    """A table not in the schema, an unknown flag or an unassignable output is refused at compile."""
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"aliases": {"enabled": True}, "routing": routing})


def test_alias_db_lookup_needs_aliases_enabled():
    """The route may only call alias_db_lookup with aliases.enabled: true."""
    with pytest.raises(ConfigError, match="alias_db_lookup needs aliases.enabled: true"):
        config_from_dict({"routing": {"request_route": [{"alias_db_lookup": "dbaliases"}]}})


def test_aliases_over_storage_find_reverse_and_list(db):
    """Aliases.find goes both ways and list filters by target, over a real (memory) storage."""
    from twisted.internet.task import Clock
    clock = Clock()
    storage = open_storage(db, reactor=clock, ping_interval=0)
    storage.start()
    aliases = Aliases(storage, use_domain=True)
    aliases.add("1000@example.com", "alice@example.com")
    aliases.add("1001@example.com", "alice@example.com")
    aliases.add("2000@example.com", "bob@example.com")
    clock.advance(0.1)
    got = []
    aliases.find("1000", "EXAMPLE.com").addCallback(got.append)
    aliases.find("alice", "example.com", reverse=True).addCallback(got.append)
    aliases.find("1000", "other.org").addCallback(got.append)
    aliases.list("alice@example.com").addCallback(got.append)
    clock.advance(0.1)
    assert got[:3] == ["sip:alice@example.com", "sip:1000@example.com", None]
    assert [r["alias"] for r in got[3]] == ["1000@example.com", "1001@example.com"]
