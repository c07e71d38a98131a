"""Load balancer loads across a restart: calls restored from the dialog table
count again on their destinations whether the dialogs or the destinations
load first, never twice, and the restarted proxy respects the capacity."""

from sipdisp.loadbalancer import rows_from_config
from sipdisp.loadbalancer.balancer import BINDING_VAR, binding_text, parse_binding
from tests.support.calls import NODES, FakeStorage, Switch

import pytest


def _rows(capacity):
    return rows_from_config([{"group": 1, "uri": f"sip:127.0.0.1:{port}",
                              "resources": f"vm=100;pstn={capacity}", "description": name}
                             for name, port in NODES.items()])


def _answered_call(storage, capacity):
    """A proxy (dialog db_mode 1) with one answered call; returns (switch, call)."""
    before = Switch(storage=storage, capacity=capacity, dialog={"db_mode": 1})
    call = before.call()
    call.start()
    call.answer()
    return before, call


def _restart(storage, now, capacity, destinations=None):
    """A new proxy on the same storage, its dialog table reloaded; with
    ``destinations=[]`` the load balancer has not read its table yet."""
    after = Switch(storage=storage, capacity=capacity, dialog={"db_mode": 1}, now=now,
                   destinations=destinations)
    after.dialogs.restore(storage.tables["dialog"], storage.tables["dialog_vars"], now)
    return after


def test_the_binding_is_kept_in_dialog_vars():
    """An answered balanced call writes its destination id and resources to dialog_vars."""
    storage = FakeStorage()
    before, call = _answered_call(storage, 5)
    dest = next(d for d in before.lb.destinations if d.uri.endswith(str(NODES[call.node])))
    stored = {r["dialog_key"]: r["dialog_value"] for r in storage.tables["dialog_vars"]}
    assert stored[BINDING_VAR] == f"{dest.id}:pstn"


def test_dialogs_restored_before_the_table_loads_count_once_it_does():
    """Dialog table first (source db): the restored call's load is missing until the
    load_balancer rows arrive, then counted on its node, and the hangup frees it."""
    storage = FakeStorage()
    before, call = _answered_call(storage, 5)
    after = _restart(storage, before.now + 30, 5, destinations=[])
    assert after.lb.destinations == []
    summary = after.lb.load(_rows(5), "the load_balancer table")
    assert summary["rebound"] == 1
    assert after.loads() == {call.node: 1, ({"fs1", "fs2"} - {call.node}).pop(): 0}
    call.sw = after
    call.hangup()
    assert after.loads() == {"fs1": 0, "fs2": 0}


def test_destinations_loaded_first_are_not_counted_twice():
    """Destinations first: the profiles restore the load and a later rebind adds nothing."""
    storage = FakeStorage()
    before, call = _answered_call(storage, 5)
    after = _restart(storage, before.now + 30, 5)
    assert after.loads()[call.node] == 1
    assert after.lb.rebind() == 0
    assert after.lb.load(_rows(5))["rebound"] == 0
    assert after.loads()[call.node] == 1


def test_a_restarted_proxy_respects_the_capacity_of_restored_calls():
    """Capacity 1 per node and one call restored on fs1/fs2: one new call fits, the next is refused."""
    storage = FakeStorage()
    before, call = _answered_call(storage, 1)
    after = _restart(storage, before.now + 30, 1, destinations=[])
    after.lb.load(_rows(1))
    other = ({"fs1", "fs2"} - {call.node}).pop()
    assert after.call().start() == other
    refused = after.call()
    assert refused.start() is None
    assert [m.status for m in after.uac.messages()][-1] == 503


def test_rebind_defines_profiles_itself_when_the_dialogs_come_last():
    """A rebind run when the dialog table finishes (service hook) counts calls even
    for resources whose profiles nothing defined yet."""
    storage = FakeStorage()
    before, call = _answered_call(storage, 5)
    after = _restart(storage, before.now + 30, 5, destinations=[])
    assert after.lb.rebind() == 1
    dest_id = parse_binding(next(iter(after.dialogs.dialogs.values())).vars[BINDING_VAR])[0]
    assert after.dialogs.profiles.size("lb-pstn", str(dest_id)) == 1


def test_binding_text_round_trips_and_bad_values_are_refused():
    """``7:pstn,vm`` parses back; a value without id or resources is refused."""
    assert parse_binding(binding_text(7, ("pstn", "vm"))) == (7, ("pstn", "vm"))
    for bad in ("pstn", "x:pstn", "7:", ""):
        with pytest.raises(ValueError):
            parse_binding(bad)
