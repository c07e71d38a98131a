"""The dispatcher service in the real service tree: the list file at start-up,
the dispatcher table through the storage API, SIGHUP reloads, bad files."""

import pytest
import yaml
from twisted.internet.task import Clock

from sipdisp.config import ConfigError
from sipdisp.reload import Reloader
from sipdisp.schema import config_from_dict
from sipdisp.service import make_service

QUIET = {"console": {"enabled": False}, "http": {"enabled": False},
         "listen": {"udp": ["127.0.0.1:0"], "tcp": [], "ws": []}}


def config(tmp_path, **sections):
    raw = dict(QUIET, storage={"url": f"sqlite:///{tmp_path / 'db.sqlite'}",
                               "spool_dir": str(tmp_path / "spool")})
    raw.update(sections)
    return raw


def build(tmp_path, raw):
    path = tmp_path / "sipdisp.yaml"
    path.write_text(yaml.safe_dump(raw))
    root = make_service(config_from_dict(raw), reactor=Clock())
    return root, path


def test_list_file_is_loaded_when_the_tree_is_built(tmp_path):
    """The tree loads the list file at once, registers the module, commands and the route."""
    lst = tmp_path / "d.list"
    lst.write_text("0 sip:10.0.0.1:5060\n0 sip:10.0.0.2:5060 0 0 weight=5\n")
    root, _ = build(tmp_path, config(tmp_path, dispatcher={"list_file": str(lst)}))
    ds = root.modules.dispatcher
    assert [d.uri for d in ds.destinations()] == ["sip:10.0.0.1:5060", "sip:10.0.0.2:5060"]
    assert "dispatcher.reload" in root.registry
    assert root.modules.routing.entry is root.sip.core.route


def test_missing_list_file_uses_proxy_next_hop(tmp_path):
    """Without the list file set 0 is proxy.next_hop, as the foundation routed."""
    root, _ = build(tmp_path, config(tmp_path, dispatcher={"list_file": str(tmp_path / "no")},
                                     proxy={"next_hop": "sip:127.0.0.1:5999"}))
    assert [d.uri for d in root.modules.dispatcher.destinations()] == ["sip:127.0.0.1:5999"]


def test_bad_list_file_stops_the_build_with_one_line(tmp_path):
    """A bad list line is a ConfigError naming file:line (twistd prints it and exits)."""
    lst = tmp_path / "d.list"
    lst.write_text("0 sip:10.0.0.1\nx sip:10.0.0.2\n")
    with pytest.raises(ConfigError) as info:
        build(tmp_path, config(tmp_path, dispatcher={"list_file": str(lst)}))
    assert str(info.value) == f"{lst}:2: setid must be an integer, got 'x'"


def test_sighup_rereads_sets_and_applies_probing_parameters(tmp_path):
    """A SIGHUP reload re-reads the list keeping state and applies new dispatcher keys."""
    lst = tmp_path / "d.list"
    lst.write_text("0 sip:10.0.0.1:5060\n")
    raw = config(tmp_path, dispatcher={"list_file": str(lst), "ping_interval": 10})
    root, path = build(tmp_path, raw)
    ds = root.modules.dispatcher
    ds.set_state("ip", 0, "sip:10.0.0.1:5060")
    lst.write_text("0 sip:10.0.0.1:5060\n0 sip:10.0.0.2:5060\n")
    raw["dispatcher"].update(ping_interval=3, probing_threshold=4)
    path.write_text(yaml.safe_dump(raw))
    lines = []
    Reloader(root, str(path)).reload().addBoth(lines.append)
    assert "dispatcher.ping_interval (10.0 -> 3.0)" in lines[0]
    assert "dispatcher sets re-read (1 kept, 1 added, 0 removed)" in lines[0]
    assert "needs a restart" not in lines[0]
    assert (ds.ping_interval, ds.probing_threshold) == (3, 4)
    assert [d.letters for d in ds.destinations()] == ["IP", "AX"]


def test_routing_changes_need_a_restart(tmp_path):
    """A changed route is refused by SIGHUP (compiled once): the reload line says so."""
    raw = config(tmp_path, dispatcher={"list_file": str(tmp_path / "none")})
    root, path = build(tmp_path, raw)
    raw["routing"] = {"routes": {"DISPATCH": ["exit"]}}
    path.write_text(yaml.safe_dump(raw))
    lines = []
    Reloader(root, str(path)).reload().addBoth(lines.append)
    assert "needs a restart, not applied: routing.routes" in lines[0]


def test_table_source_reads_the_dispatcher_table_through_storage(tmp_path):
    """source: db loads the dispatcher table through the storage API when the service starts."""
    raw = config(tmp_path, dispatcher={"source": "db"})
    root, _ = build(tmp_path, raw)
    storage = root.modules.storage
    service = root.dispatcher
    rows = [{"setid": 1, "destination": "sip:10.1.1.1:5060", "flags": 8, "priority": 2,
             "attrs": "weight=30", "description": "fs1"},
            {"setid": 1, "destination": "sip:10.1.1.2:5060", "flags": 0, "priority": 1,
             "attrs": "", "description": "fs2"}]

    class Table:
        def select(self, table, order_by=None, **kw):
            from twisted.internet import defer
            assert table == "dispatcher"
            return defer.succeed([dict(r, id=n) for n, r in enumerate(rows)])
    root.modules.storage = Table()
    service.startService()
    try:
        ds = root.modules.dispatcher
        assert [(d.uri, d.letters, d.weight, d.description) for d in ds.destinations()] == [
            ("sip:10.1.1.1:5060", "AP", 30, "fs1"), ("sip:10.1.1.2:5060", "AX", 0, "fs2")]
        assert ds.source == "table dispatcher"
    finally:
        service.stopService()
        root.modules.storage = storage
