"""The cluster sync round, sans-IO (sipdisp/shared/sync.py): what one node
writes to Redis and what it makes of the answer, fed replies shaped like
the Lua script's and a clock."""

from sipdisp.auth.digest import VALID, INVALID, NonceFactory
from sipdisp.dialog.profiles import Profiles
from sipdisp.dispatcher.dispatcher import Dispatcher
from sipdisp.shared.sync import SCRIPT, SEP, ClusterSync


class Dialog:
    """What Profiles needs of a dialog."""

    def __init__(self):
        self.profiles = []


def args_of(request):
    """The script's ARGV of a request (``EVAL script 0 ARGV...``)."""
    assert request[:3] == ["EVAL", SCRIPT, 0]
    return request[3:]


def counts_written(request):
    """``(full, {field: count})`` a request writes for this node."""
    argv = args_of(request)
    full = argv[3] == "1"
    n = argv[4]
    flat = argv[5:5 + 2 * n]
    return full, dict(zip(flat[0::2], flat[1::2]))


def ds_written(request):
    """``{field: state}`` of the dispatcher states a request writes."""
    argv = args_of(request)
    i = 5 + 2 * argv[4]
    n = argv[i]
    flat = argv[i + 1:i + 1 + 2 * n]
    return dict(zip(flat[0::2], flat[1::2]))


def reply(peers=(), ds=(), lost=0, secret="s3cret"):
    """A script answer: ``peers`` is ``[(node, {field: count})]``, ``ds`` ``[(field, state)]``."""
    out = [lost, secret, [x for pair in ds for x in pair]]
    for node, fields in peers:
        out += [node, [x for k, v in dict(fields, **{"": "123"}).items() for x in (k, str(v))]]
    return out


def lb_profiles():
    profiles = Profiles()
    profiles.define("lb-pstn", True)
    profiles.define("calls", False)
    return profiles


def test_a_node_writes_its_counts_whole_when_they_change_and_only_then():
    profiles = lb_profiles()
    sync = ClusterSync("A", "p:", 10.0, profiles=profiles)
    d1, d2 = Dialog(), Dialog()
    profiles.add(d1, "lb-pstn", "1")
    profiles.add(d2, "lb-pstn", "1")
    profiles.add(d2, "calls")
    request = sync.request()
    assert args_of(request)[:3] == ["p:", "A", 10000]
    full, fields = counts_written(request)
    assert full and fields == {"lb-pstn" + SEP + "1": "2", "calls" + SEP: "1"}
    sync.answered(reply(), now=1.0)
    # unchanged: kept alive only
    assert counts_written(sync.request()) == (False, {})
    sync.answered(reply(), now=1.2)
    profiles.remove_all(d1)
    full, fields = counts_written(sync.request())
    assert full and fields == {"lb-pstn" + SEP + "1": "1", "calls" + SEP: "1"}


def test_the_other_nodes_counts_add_to_this_nodes_in_profile_sizes():
    profiles = lb_profiles()
    sync = ClusterSync("A", "p:", 10.0, profiles=profiles)
    profiles.add(Dialog(), "lb-pstn", "1")
    sync.request()
    sync.answered(reply(peers=[("B", {"lb-pstn" + SEP + "1": 4, "lb-pstn" + SEP + "2": 5}),
                               ("C", {"lb-pstn" + SEP + "1": 2, "calls" + SEP: 3,
                                      "unknown" + SEP + "x": 7})]), now=1.0)
    assert profiles.size("lb-pstn", "1") == 1 + 4 + 2
    assert profiles.size("lb-pstn", "2") == 5
    assert profiles.size("lb-pstn") == 12
    assert profiles.size("calls") == 3
    # this node's own counts (dlg.stats) stay its own
    assert profiles.snapshot()["lb-pstn"] == {"1": 1}
    assert sync.stats["nodes"] == 3
    # a node gone from the answer (expired) no longer counts
    sync.request()
    sync.answered(reply(peers=[("B", {"lb-pstn" + SEP + "1": 4})]), now=1.2)
    assert profiles.size("lb-pstn", "1") == 5 and profiles.size("lb-pstn", "2") == 0


def test_redis_that_lost_our_hash_gets_it_whole_next_round():
    profiles = lb_profiles()
    sync = ClusterSync("A", "p:", 10.0, profiles=profiles)
    profiles.add(Dialog(), "lb-pstn", "1")
    sync.request()
    sync.answered(reply(), now=1.0)
    assert counts_written(sync.request())[0] is False
    sync.answered(reply(lost=1), now=1.2)  # Redis restarted without persistence
    assert sync.stats["lost"] == 1
    assert counts_written(sync.request()) == (True, {"lb-pstn" + SEP + "1": "1"})


def test_without_redis_the_view_of_others_is_kept_for_ttl_then_dropped_and_all_rewritten():
    profiles = lb_profiles()
    sync = ClusterSync("A", "p:", 10.0, profiles=profiles)
    profiles.add(Dialog(), "lb-pstn", "1")
    sync.request()
    sync.answered(reply(peers=[("B", {"lb-pstn" + SEP + "1": 4})]), now=100.0)
    assert sync.failed(now=105.0) is False       # still the last view of B
    assert profiles.size("lb-pstn", "1") == 5
    assert sync.failed(now=110.5) is True        # too old: this node's calls only
    assert profiles.size("lb-pstn", "1") == 1
    assert sync.stats["failures"] == 2
    # back: everything of this node is written again
    assert counts_written(sync.request()) == (True, {"lb-pstn" + SEP + "1": "1"})
    sync.answered(reply(peers=[("B", {"lb-pstn" + SEP + "1": 2})]), now=111.0)
    assert profiles.size("lb-pstn", "1") == 3


def dispatcher():
    ds = Dispatcher()
    ds.load([{"setid": 1, "destination": "sip:10.0.0.1:5060"},
             {"setid": 1, "destination": "sip:10.0.0.2:5060"}])
    return ds


def test_dispatcher_states_changed_here_go_out_and_the_others_come_in_without_echo():
    ds = dispatcher()
    sync = ClusterSync("A", "p:", 10.0, dispatcher=ds)
    x, y = ds.sets[1].dests
    ds.set_state("ip", 1, x.uri)
    field_x = f"1 {x.uri}"
    assert ds_written(sync.request()) == {field_x: str(x.state)}
    sync.answered(reply(ds=[(field_x, str(x.state))]), now=1.0)
    assert ds_written(sync.request()) == {}      # written once
    # another node marked y inactive: applied here, and not written back
    other = dispatcher()
    other.set_state("i", 1, y.uri)
    inactive = other.sets[1].dests[1].state
    sync.answered(reply(ds=[(field_x, str(x.state)), (f"1 {y.uri}", str(inactive))]), now=1.2)
    assert y.state == inactive and sync.stats["ds_applied"] == 1
    assert ds_written(sync.request()) == {}
    # the same answer again changes nothing (an operator may have changed y here since)
    ds.set_state("a", 1, y.uri)
    assert ds_written(sync.request()) == {f"1 {y.uri}": str(y.state)}
    sync.answered(reply(ds=[(field_x, str(x.state)), (f"1 {y.uri}", str(y.state))]), now=1.4)
    assert y.state == other.sets[1].dests[0].state  # active, as set here


def test_a_dispatcher_change_in_a_failed_round_is_sent_again():
    ds = dispatcher()
    sync = ClusterSync("A", "p:", 10.0, dispatcher=ds)
    x = ds.sets[1].dests[0]
    ds.set_state("i", 1, x.uri)
    assert ds_written(sync.request()) == {f"1 {x.uri}": str(x.state)}
    sync.failed(now=1.0)
    assert ds_written(sync.request()) == {f"1 {x.uri}": str(x.state)}


def test_nodes_sign_nonces_with_the_secret_redis_holds_so_each_accepts_the_others():
    a_nonces, b_nonces = NonceFactory(), NonceFactory()
    a = ClusterSync("A", "p:", 10.0, nonces=a_nonces, secret="from-a")
    b = ClusterSync("B", "p:", 10.0, nonces=b_nonces, secret="from-b")
    assert args_of(a.request())[-1] == "from-a"  # A offers its own (SET NX)
    nonce = a_nonces.make(1000.0, "10.0.0.9")
    assert b_nonces.check(nonce, 1001.0, "10.0.0.9")[0] == INVALID
    # A was first: both get A's secret back
    a.answered(reply(secret="from-a"), now=1.0)
    b.request()
    b.answered(reply(secret="from-a"), now=1.0)
    nonce = a_nonces.make(1000.0, "10.0.0.9")
    assert b_nonces.check(nonce, 1001.0, "10.0.0.9")[0] == VALID
    assert args_of(b.request())[-1] == b"from-a"


def test_metrics_name_the_sync_counters():
    sync = ClusterSync("A", "p:", 10.0, profiles=lb_profiles())
    sync.request()
    sync.failed(now=1.0)
    got = {name: value for name, _kind, _doc, value in sync.metrics()}
    assert got["sipdisp_cluster_sync_failures_total"] == 1
    assert got["sipdisp_cluster_sync_rounds_total"] == 0
