"""The merge rules of a node's management over its worker processes
(sipdisp/workers/control.py): pure functions fed the workers' answers."""

import pytest

from sipdisp.console.control import worker_environment
from sipdisp.console.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, RpcError
from sipdisp.schema import config_from_dict
from sipdisp.workers.control import (CounterCarry, is_query, merge_metrics, merge_results, merge_values,
                                     worker_control_path, worker_index)


def test_numbers_in_dicts_are_summed_and_nested_dicts_merged():
    merged = merge_values([(1, {"rcv_request_INVITE": 3, "retransmissions_sent": 1,
                                "sub": {"a": 1.5}}),
                           (2, {"rcv_request_INVITE": 4, "rcv_reply_200": 2,
                                "sub": {"a": 2.5, "b": 1}})])
    assert merged == {"rcv_request_INVITE": 7, "retransmissions_sent": 1,
                      "sub": {"a": 4.0, "b": 1}, "rcv_reply_200": 2}


def test_lists_are_concatenated_with_the_worker_on_each_dict_item():
    merged = merge_values([(1, [{"call_id": "a"}, {"call_id": "b"}]), (2, [{"call_id": "c"}]),
                           (3, ["x"])])
    assert merged == [{"call_id": "a", "worker": 1}, {"call_id": "b", "worker": 1},
                      {"call_id": "c", "worker": 2}, "x"]


def test_equal_values_stay_one_and_different_ones_are_shown_per_worker():
    assert merge_values([(1, "sipdisp 1.0"), (2, "sipdisp 1.0")]) == "sipdisp 1.0"
    assert merge_values([(1, True), (2, True)]) is True
    assert merge_values([(1, "yes"), (2, "no")]) == {"per_worker": {"1": "yes", "2": "no"}}
    # a lookup found on one worker only
    assert merge_values([(1, None), (2, {"aor": "alice"})]) == {"aor": "alice"}
    assert merge_values([(1, None), (2, None)]) is None


def test_queries_and_commands_that_act_are_told_apart_by_their_verb():
    for name in ("stats.get", "tm.list", "dlg.list", "ul.dump", "ul.lookup", "core.version",
                 "lb.status", "dr.gw_status", "dlg.profile_get_size", "acc.stats"):
        assert is_query(name), name
    for name in ("dispatcher.reload", "dispatcher.set_state", "dlg.end", "ipban.add",
                 "ul.rm", "lb.resize", "rtpengine.enable", "cache.store"):
        assert not is_query(name), name


def test_a_query_merges_the_answers_and_lists_the_workers_down():
    ok = merge_results("stats.get", [(1, ("ok", {"n": 1})), (2, ("ok", {"n": 2}))])
    assert ok == {"n": 3}
    partial = merge_results("stats.get", [(1, ("ok", {"n": 1})),
                                          (2, ("down", "no answer within 5 s"))])
    assert partial == {"n": 1, "workers_down": [{"worker": 2, "down": True,
                                                 "error": "no answer within 5 s"}]}
    rows = merge_results("tm.list", [(1, ("ok", [{"key": "z"}])), (2, ("down", "refused"))])
    assert rows == [{"key": "z", "worker": 1}, {"worker": 2, "down": True, "error": "refused"}]
    scalar = merge_results("dlg.profile_get_size", [(1, ("ok", 2)), (2, ("down", "refused"))])
    assert scalar == {"result": 2, "workers_down": [{"worker": 2, "down": True,
                                                     "error": "refused"}]}


def test_a_command_that_acts_is_reported_per_worker():
    out = merge_results("dispatcher.set_state", [
        (1, ("ok", {"changed": 1})),
        (2, ("error", INVALID_PARAMS, "Invalid params", "no such destination")),
        (3, ("down", "no answer within 5 s"))])
    assert out == {"workers": [
        {"worker": 1, "result": {"changed": 1}},
        {"worker": 2, "error": {"code": INVALID_PARAMS, "message": "Invalid params",
                                "data": "no such destination"}},
        {"worker": 3, "down": True, "error": "no answer within 5 s"}]}


def test_the_same_error_from_every_worker_is_the_nodes_error_and_all_down_is_internal():
    with pytest.raises(RpcError) as caught:
        merge_results("ul.lookup", [(1, ("error", INVALID_PARAMS, "Invalid params", "bad aor")),
                                    (2, ("error", INVALID_PARAMS, "Invalid params", "bad aor"))])
    assert (caught.value.code, caught.value.data) == (INVALID_PARAMS, "bad aor")
    with pytest.raises(RpcError) as caught:
        merge_results("stats.get", [(1, ("down", "refused")), (2, ("down", "timeout"))])
    assert caught.value.code == INTERNAL_ERROR
    assert caught.value.data == [{"worker": 1, "error": "refused"},
                                 {"worker": 2, "error": "timeout"}]


def _samples(families, name):
    family = next(f for f in families if f.name == name)
    return {tuple(sorted(labels.items())): value for labels, value in family.samples}


def test_metrics_are_summed_by_labels_and_state_gauges_are_not():
    w1 = [["sipdisp_sip_requests_received_total", "counter", "h",
           [[{"method": "INVITE"}, 5], [{"method": "BYE"}, 1]]],
          ["sipdisp_transactions", "gauge", "h", [[{"kind": "server"}, 2]]],
          ["sipdisp_build_info", "gauge", "h", [[{"version": "1"}, 1]]],
          ["sipdisp_db_up", "gauge", "h", [[{}, 1]]]]
    w2 = [["sipdisp_sip_requests_received_total", "counter", "h",
           [[{"method": "INVITE"}, 7], [{"method": "ACK"}, 3]]],
          ["sipdisp_transactions", "gauge", "h", [[{"kind": "server"}, 1]]],
          ["sipdisp_build_info", "gauge", "h", [[{"version": "1"}, 1]]],
          ["sipdisp_db_up", "gauge", "h", [[{}, 0]]]]
    families = merge_metrics([(1, w1), (2, w2), (3, None)], 3)
    assert _samples(families, "sipdisp_sip_requests_received_total") == {
        (("method", "INVITE"),): 12, (("method", "BYE"),): 1, (("method", "ACK"),): 3}
    assert _samples(families, "sipdisp_transactions") == {(("kind", "server"),): 3}
    assert _samples(families, "sipdisp_build_info") == {(("version", "1"),): 1}
    assert _samples(families, "sipdisp_db_up") == {(): 1}
    assert _samples(families, "sipdisp_workers_up") == {(): 2}
    assert _samples(families, "sipdisp_workers") == {(): 3}
    assert _samples(families, "sipdisp_worker_up") == {
        (("worker", "1"),): 1, (("worker", "2"),): 1, (("worker", "3"),): 0}



def _worker(started, invites, acks=None, gauge=0):
    samples = [[{"method": "INVITE"}, invites]]
    if acks is not None:
        samples.append([{"method": "ACK"}, acks])
    out = [["sipdisp_sip_requests_received_total", "counter", "h", samples],
           ["sipdisp_transactions", "gauge", "h", [[{"kind": "server"}, gauge]]]]
    if started is not None:
        out.append(["sipdisp_process_start_time_seconds", "gauge", "h", [[{}, started]]])
    return out


def _node(carry, answers):
    for k, families in answers:
        carry.observe(k, families)
    return carry.apply(merge_metrics(answers, 2))


def test_a_restarted_workers_counters_are_carried_so_the_node_keeps_counting():
    carry = CounterCarry()
    before = _node(carry, [(1, _worker(1000, 40, acks=7, gauge=3)), (2, _worker(1000, 50))])
    assert _samples(before, "sipdisp_sip_requests_received_total")[(("method", "INVITE"),)] == 90
    # worker 1 was killed and restarted: a new start time, its counters start again
    after = _node(carry, [(1, _worker(1007, 4, gauge=1)), (2, _worker(1000, 55))])
    counts = _samples(after, "sipdisp_sip_requests_received_total")
    assert counts[(("method", "INVITE"),)] == 40 + 4 + 55
    assert counts[(("method", "ACK"),)] == 7  # only the earlier run had ACKs
    assert _samples(after, "sipdisp_transactions") == {(("kind", "server"),): 1}  # gauges: not carried
    assert carry.restarts_seen == 1
    # the next read adds the carry once, not again
    later = _node(carry, [(1, _worker(1007, 6)), (2, _worker(1000, 60))])
    assert _samples(later, "sipdisp_sip_requests_received_total")[(("method", "INVITE"),)] == 106


def test_without_an_uptime_a_counter_that_falls_tells_the_restart():
    carry = CounterCarry()
    _node(carry, [(1, _worker(None, 10)), (2, _worker(None, 10))])
    same = _node(carry, [(1, _worker(None, 12)), (2, _worker(None, 10))])
    assert carry.restarts_seen == 0
    assert _samples(same, "sipdisp_sip_requests_received_total")[(("method", "INVITE"),)] == 22
    fell = _node(carry, [(1, _worker(None, 1)), (2, _worker(None, 10))])
    assert carry.restarts_seen == 1
    assert _samples(fell, "sipdisp_sip_requests_received_total")[(("method", "INVITE"),)] == 23


def test_the_control_path_is_beside_the_node_secret_and_short_enough(tmp_path):
    cfg = config_from_dict({"proxy": {"secret_file": str(tmp_path / "var" / "node_secret")}})
    assert worker_control_path(cfg, 2) == str(tmp_path / "var" / "worker-2.ctl")
    deep = tmp_path / ("d" * 120)
    cfg = config_from_dict({"proxy": {"secret_file": str(deep / "node_secret")}})
    path = worker_control_path(cfg, 1)
    assert len(path.encode()) <= 107 and path.endswith("-worker-1.ctl")
    assert path != worker_control_path(config_from_dict(
        {"proxy": {"secret_file": str(deep / "x" / "node_secret")}}), 1)


def test_the_worker_environment():
    assert worker_index({}) is None and worker_environment({}) is None
    assert worker_index({"SIPDISP_WORKER": "2"}) == 2
    assert worker_environment({"SIPDISP_WORKER": "2", "SIPDISP_WORKER_CONTROL": "/x"}) == \
        (2, "/x")
    with pytest.raises(ValueError):
        worker_environment({"SIPDISP_WORKER": "2"})
    with pytest.raises(ValueError):
        worker_index({"SIPDISP_WORKER": "two"})
