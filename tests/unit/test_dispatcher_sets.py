"""Destination sets: the Kamailio list file, reloads that keep runtime state,
in-memory add/remove, ds_is_from_list, the listing and the commands."""

import pytest
from twisted.internet.task import Clock

from sipdisp.commands import CommandError, CommandRegistry
from sipdisp.config import ConfigError
from sipdisp.dispatcher import Dispatcher, ListFileError, parse_list
from sipdisp.dispatcher.destination import parse_attrs
from sipdisp.dispatcher.service import register_commands
from sipdisp.dispatcher.sources import FileSource, format_list, rows_from_table
from sipdisp.probing import (DISABLED, INACTIVE, PROBING, TRYING, parse_state_letters,
                             state_letters)
from sipdisp.proxy.target import Target
from tests.support.sipmsg import request
from tests.support.dispatch import Ctx

LIST = """\
# the seed's file, and more
0 sip:192.168.1.20:5080
1 sip:10.0.0.11:5060;transport=tcp 0x8 10 weight=50;duid=fs1   # trailing comment
1 sip:10.0.0.12:5060 2 20
"""


def test_list_file_is_parsed_in_kamailio_format():
    """setid, URI, hex or decimal flags, priority and attrs are read; comments and blanks skipped."""
    rows = parse_list(LIST, "dispatcher.list")
    assert [(r["setid"], r["destination"], r["flags"], r["priority"], r["attrs"]) for r in rows] == [
        (0, "sip:192.168.1.20:5080", 0, 0, ""),
        (1, "sip:10.0.0.11:5060;transport=tcp", 8, 10, "weight=50;duid=fs1"),
        (1, "sip:10.0.0.12:5060", 2, 20, ""),
    ]


@pytest.mark.parametrize("text, message", [
    ("0\n", "etc/x.list:1: expected: setid destination [flags [priority [attrs]]]"),
    ("# c\nzero sip:a\n", "etc/x.list:2: setid must be an integer, got 'zero'"),
    ("0 http://a\n", "etc/x.list:1: 'http://a' is not a sip: or sips: URI"),
    ("0 sip:a x\n", "etc/x.list:1: flags must be an integer, got 'x'"),
])
def test_bad_list_lines_name_file_and_line(text, message):
    """A bad line is a one-line ListFileError (a ConfigError) naming file:line."""
    with pytest.raises(ListFileError) as info:
        parse_list(text, "etc/x.list")
    assert str(info.value) == message
    assert isinstance(info.value, ConfigError)


def test_missing_list_file_falls_back_to_next_hop(tmp_path):
    """Without the list file, set 0 is proxy.next_hop alone; without a fallback it is an error."""
    rows = []
    FileSource(str(tmp_path / "none.list"), "sip:127.0.0.1:5080").load().addCallback(rows.extend)
    assert [(r["setid"], r["destination"]) for r in rows] == [(0, "sip:127.0.0.1:5080")]
    failures = []
    FileSource(str(tmp_path / "none.list")).load().addErrback(failures.append)
    assert "no such file" in failures[0].getErrorMessage()


def test_table_rows_and_list_text_round_trip():
    """Table records become rows, and rows print back as list-file lines."""
    rows = rows_from_table([{"id": 1, "setid": 1, "destination": " sip:10.0.0.1:5060 ",
                             "flags": None, "priority": 3, "attrs": "weight=5",
                             "description": "fs1"}])
    assert rows == [{"setid": 1, "destination": "sip:10.0.0.1:5060", "flags": 0,
                     "priority": 3, "attrs": "weight=5", "description": "fs1"}]
    assert parse_list(format_list(rows))[0]["attrs"] == "weight=5"


def test_reload_keeps_state_counters_and_load():
    """A reload keeps each surviving destination's state, failures and load, drops removed ones."""
    ds = Dispatcher(probing_threshold=3)
    ds.load(parse_list(LIST))
    dest = ds.sets[1].find("sip:10.0.0.12:5060")
    dest.state, dest.failures, dest.load = INACTIVE | PROBING, 2, 4
    summary = ds.load(parse_list(LIST.replace("0 sip:192.168.1.20:5080", "2 sip:10.9.9.9")))
    assert summary == {"sets": 2, "destinations": 3, "kept": 2, "added": 1, "removed": 1}
    again = ds.sets[1].find("sip:10.0.0.12:5060")
    assert again is dest and (again.letters, again.failures, again.load) == ("IP", 2, 4)
    assert 0 not in ds.sets and ds.sets[2].dests[0].uri == "sip:10.9.9.9"


def test_reload_with_new_flags_resets_the_state():
    """Changing a destination's flags in the source makes them its new state."""
    ds = Dispatcher()
    ds.load(parse_list("1 sip:10.0.0.1\n"))
    dest = ds.sets[1].dests[0]
    dest.state = INACTIVE
    ds.load(parse_list("1 sip:10.0.0.1 4\n"))
    assert dest.letters == "DX"
    ds.load(parse_list("1 sip:10.0.0.1 4 5 weight=9\n"))
    assert dest.letters == "DX" and dest.weight == 9 and dest.priority == 5


def test_initial_state_comes_from_flags_and_mode_one_probes_all():
    """Flags 1/2/4/8 give I/T/D/P; probing mode 1 marks every destination probing."""
    ds = Dispatcher(probing_mode=1)
    ds.load(parse_list("1 sip:a 0\n1 sip:b 1\n1 sip:c 2\n1 sip:d 4\n1 sip:e 32\n"))
    assert [d.letters for d in ds.sets[1].dests] == ["AP", "IP", "TP", "DX", "AX"]


def test_state_letters_and_attrs():
    """Two-letter states and attrs follow Kamailio's notation."""
    assert state_letters(0) == "AX"
    assert state_letters(INACTIVE | PROBING) == "IP"
    assert state_letters(TRYING) == "TX"
    assert state_letters(DISABLED | INACTIVE) == "DX"
    assert parse_state_letters("IP") == ("i", True)
    for bad in ("", "x", "dp", "ipp", "pi"):
        with pytest.raises(ValueError):
            parse_state_letters(bad)
    assert parse_attrs("weight=50; DUID=fs1;flag") == {"weight": "50", "duid": "fs1", "flag": ""}


def test_add_and_remove_in_memory_and_reload_forgets_them():
    """dispatcher.add adds to memory (a new set if needed), remove drops it, reload restores the source."""
    ds = Dispatcher()
    rows = parse_list(LIST)
    ds.load(rows)
    ds.add(5, "sip:10.5.5.5:5060", 0, 0, "weight=1")
    assert ds.sets[5].dests[0].weight == 1
    assert ds.remove(1, "sip:10.0.0.12:5060") == 1 and ds.remove(1, "sip:nope") == 0
    ds.load(rows)
    assert 5 not in ds.sets and ds.sets[1].find("sip:10.0.0.12:5060") is not None


def ctx_from(host, port, proto="udp"):
    ctx = Ctx(request("INVITE", "sip:1000@proxy"))
    ctx.source = Target(proto, host, port)
    return ctx


def test_is_from_list_matches_source_address():
    """ds_is_from_list matches ip+port (any protocol by default), a set, and sets ds_setid."""
    ds = Dispatcher()
    ds.load(parse_list(LIST))
    ctx = ctx_from("10.0.0.11", 5060, "udp")
    assert ds.is_from_list(ctx)
    assert ctx.vars["ds_setid"] == 1 and ctx.vars["ds_attrs"] == "weight=50;duid=fs1"
    assert not ds.is_from_list(ctx_from("10.0.0.11", 5060, "udp"), mode=0)
    assert ds.is_from_list(ctx_from("10.0.0.11", 5060, "tcp"), mode=0)
    assert not ds.is_from_list(ctx_from("10.0.0.11", 40000))
    assert ds.is_from_list(ctx_from("10.0.0.11", 40000), mode=3)
    assert not ds.is_from_list(ctx_from("10.0.0.11", 5060), setid=0)
    assert not ds.is_from_list(ctx_from("10.0.0.99", 5060))


def test_is_from_list_active_only_mode():
    """Mode bit 4 ignores destinations that are not usable."""
    ds = Dispatcher()
    ds.load(parse_list("1 sip:10.0.0.1:5060 1\n"))
    assert ds.is_from_list(ctx_from("10.0.0.1", 5060))
    assert not ds.is_from_list(ctx_from("10.0.0.1", 5060), mode=4 | 2)


def test_set_state_marks_one_or_all():
    """set_state applies a/i/t/d(+p) to one destination or the whole set; errors are KeyError."""
    ds = Dispatcher(probing_threshold=2)
    ds.load(parse_list(LIST))
    assert ds.set_state("ip", 1, "all") == 2
    assert [d.letters for d in ds.sets[1].dests] == ["IP", "IP"]
    ds.set_state("a", 1, "sip:10.0.0.12:5060")
    ds.set_state("t", 1, "sip:10.0.0.11:5060;transport=tcp")
    assert [d.letters for d in ds.sets[1].dests] == ["AX", "TX"]
    with pytest.raises(KeyError):
        ds.set_state("a", 7, "all")
    with pytest.raises(KeyError):
        ds.set_state("a", 1, "sip:nope")


def test_listing_has_kamailio_columns():
    """dispatcher.list gives sets, URI, two-letter FLAGS, PRIORITY, ATTRS and LOAD."""
    ds = Dispatcher()
    ds.load(parse_list(LIST), source="file etc/dispatcher.list")
    out = ds.listing(0.0)
    assert out["NRSETS"] == 2 and out["SOURCE"] == "file etc/dispatcher.list"
    first = out["RECORDS"][1]["SET"]["TARGETS"][0]["DEST"]
    assert first["URI"] == "sip:10.0.0.12:5060" and first["FLAGS"] == "TX"
    assert first["PRIORITY"] == 20 and first["LOAD"] == 0
    second = out["RECORDS"][1]["SET"]["TARGETS"][1]["DEST"]
    assert second["FLAGS"] == "AP" and second["ATTRS"]["WEIGHT"] == 50
    assert second["ATTRS"]["DUID"] == "fs1"


class _Root:
    class sip:
        class switchboard:
            @staticmethod
            def wake():
                pass


class _Service:
    def __init__(self, ds, rows):
        self.dispatcher = ds
        self._reactor = Clock()
        self.root = _Root()
        self.source = self
        self.rows = rows

    def reload(self):
        from twisted.internet import defer
        return defer.succeed(self.dispatcher.load(self.rows))


def call(registry, name, *args, **kw):
    out = []
    registry.call(name, *args, **kw).addBoth(out.append)
    return out[0]


def test_commands_use_kamailio_names_and_report_errors():
    """The dispatcher.* commands list, reload, set state, add, remove and toggle pinging."""
    ds = Dispatcher()
    rows = parse_list(LIST)
    ds.load(rows)
    registry = CommandRegistry()
    register_commands(registry, _Service(ds, rows))
    assert {"dispatcher.list", "dispatcher.reload", "dispatcher.set_state", "dispatcher.add",
            "dispatcher.remove", "dispatcher.ping_active"} <= set(registry.names())
    assert call(registry, "dispatcher.set_state", "ip", "1", "all") == {"changed": 2}
    assert call(registry, "dispatcher.add", 3, "sip:10.3.3.3") == {
        "URI": "sip:10.3.3.3", "FLAGS": "AX"}
    assert call(registry, "dispatcher.list")["NRSETS"] == 3
    assert call(registry, "dispatcher.remove", 3, "sip:10.3.3.3") == {"removed": 1}
    assert call(registry, "dispatcher.reload")["kept"] == 3
    assert call(registry, "dispatcher.ping_active") == {"state": 1}
    assert call(registry, "dispatcher.ping_active", 0) == {"old": 1, "new": 0}
    assert ds.ping_active is False
    failure = call(registry, "dispatcher.set_state", "zz", 1, "all")
    assert failure.check(CommandError)
    assert call(registry, "dispatcher.remove", 3, "sip:none").check(CommandError)
