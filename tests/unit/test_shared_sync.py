"""The cluster sync round, sans-IO (sipdisp/shared/sync.py): what one node
writes to Redis and what it makes of the answer, fed replies shaped like
the Lua script's and a clock."""

from sipdisp.auth.digest import VALID, INVALID, NonceFactory
from sipdisp.dialog.profiles import Profiles
from sipdisp.dispatcher.dispatcher import Dispatcher
from sipdisp.flood.guard import FloodGuard
from sipdisp.flood.htable import HTable
from sipdisp.flood.pike import Pike
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


def reply(peers=(), ds=(), lost=0, secret="s3cret", now=1000, bans=(), pikes=(), clash=0,
          mark="999"):
    """A script answer: ``peers`` is ``[(node, {field: count})]``, ``ds``
    ``[(field, state)]``, ``bans`` ``[(host, "ends<SEP>value")]``, ``pikes``
    ``[{field: count}]`` (one per other node); ``clash`` and ``mark`` say whether
    another process wrote this node's hash and the hash's write mark."""
    counts = []
    for node, fields in peers:
        counts += [node, [x for k, v in dict(fields, **{"": "123"}).items()
                          for x in (k, str(v))]]
    return [lost, secret, [x for pair in ds for x in pair], str(now),
            [x for pair in bans for x in pair],
            [[x for k, v in p.items() for x in (k, str(v))] for p in pikes], counts,
            clash, mark]


def lb_profiles():
    """Profiles with lb-pstn (with values) and calls (without)."""
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
    """A Dispatcher with two destinations in set 1."""
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
    assert "from-a" in args_of(a.request())  # A offers its own (SET NX)
    nonce = a_nonces.make(1000.0, "10.0.0.9")
    assert b_nonces.check(nonce, 1001.0, "10.0.0.9")[0] == INVALID
    # A was first: both get A's secret back
    a.answered(reply(secret="from-a"), now=1.0)
    b.request()
    b.answered(reply(secret="from-a"), now=1.0)
    nonce = a_nonces.make(1000.0, "10.0.0.9")
    assert b_nonces.check(nonce, 1001.0, "10.0.0.9")[0] == VALID
    assert b"from-a" in args_of(b.request())


def test_metrics_name_the_sync_counters():
    sync = ClusterSync("A", "p:", 10.0, profiles=lb_profiles())
    sync.request()
    sync.failed(now=1.0)
    got = {name: value for name, _kind, _doc, value in sync.metrics()}
    assert got["sipdisp_cluster_sync_failures_total"] == 1
    assert got["sipdisp_cluster_sync_rounds_total"] == 0


def tail(request):
    """``(ban cursor, {pike field: count}, {host: (seconds, value)})`` a request sends."""
    argv = args_of(request)
    i = 5 + 2 * argv[4]
    i += 1 + 2 * argv[i]
    cursor = argv[i + 1]
    i += 2
    n = argv[i]
    pike = dict(zip(argv[i + 1:i + 1 + 2 * n:2], argv[i + 2:i + 2 + 2 * n:2]))
    i += 1 + 2 * n
    n = argv[i]
    flat = argv[i + 1:i + 1 + 3 * n]
    bans = {flat[j]: (flat[j + 1], flat[j + 2]) for j in range(0, len(flat), 3)}
    return cursor, pike, bans


def guard(density=10, share_min=3):
    """A FloodGuard whose pike shares sources from ``share_min`` requests."""
    pike = Pike(unit=2.0, density=density)
    pike.share_min = share_min
    return FloodGuard(HTable("ipban", autoexpire=300), pike)


def test_busy_sources_are_shared_and_other_nodes_counts_make_a_source_hot():
    g = guard(density=10, share_min=3)
    sync = ClusterSync("A", "p:", 10.0, flood=g)
    now = 100.5  # slot 50
    for _ in range(2):
        g.pike.hit("192.0.2.1", now)
    assert tail(sync.request(now))[1] == {}      # below share_min: nothing shared
    sync.answered(reply(), now)
    for _ in range(4):
        assert g.pike.hit("192.0.2.2", now) is False
    assert tail(sync.request(now))[1] == {"50" + SEP + "192.0.2.2": "4"}
    # B saw 7 requests from the same source in this unit: 4 + 7 > 10
    sync.answered(reply(pikes=[{"50" + SEP + "192.0.2.2": 7, "49" + SEP + "192.0.2.9": 3}]),
                  now)
    assert g.pike.is_hot("192.0.2.2", now)
    assert not g.check(b"OPTIONS sip:x SIP/2.0\r\n\r\n", "192.0.2.2", now)  # banned now
    assert g.bans.get("192.0.2.2", now) == 1
    # a source quiet for a whole unit is no longer shared
    later = now + 4.0
    assert tail(sync.request(later))[1] == {}
    assert g.pike.notable == {}


def test_bans_made_here_go_out_once_and_other_nodes_bans_and_lifts_come_in():
    g = guard()
    sync = ClusterSync("A", "p:", 10.0, flood=g)
    g.ban("198.51.100.1", 50.0, seconds=60)
    cursor, _, bans = tail(sync.request(50.0))
    assert cursor == "-inf" and bans == {"198.51.100.1": ("60.0", "1")}
    # the answer carries our own ban back (written this round): no second ban
    sync.answered(reply(now=1_000_000, bans=[("198.51.100.1", "1060000" + SEP + "1")]), 50.0)
    assert sync.stats["bans_applied"] == 0
    cursor, _, bans = tail(sync.request(50.2))
    assert cursor == "1000000" and bans == {}
    # B banned another source for 30 s and one forever; then lifted ours
    sync.answered(reply(now=1_000_200, bans=[("203.0.113.5", "1030200" + SEP + "1"),
                                             ("203.0.113.6", "0" + SEP + "x")]), 50.2)
    assert g.bans.get("203.0.113.5", 50.2) == "1"
    assert abs(g.bans.expires("203.0.113.5", 50.2) - 80.2) < 0.01
    assert g.bans.expires("203.0.113.6", 50.2) == 0
    sync.request(50.4)
    sync.answered(reply(now=1_000_400, bans=[("198.51.100.1", "-1" + SEP)]), 50.4)
    assert g.bans.get("198.51.100.1", 50.4) is None
    assert sync.stats["bans_applied"] == 3
    # none of what came in goes out again
    assert tail(sync.request(50.6))[2] == {}
    g.unban("203.0.113.5")
    assert tail(sync.request(50.8))[2] == {"203.0.113.5": ("-1.0", "")}


def test_a_ban_whose_round_failed_is_sent_again():
    g = guard()
    sync = ClusterSync("A", "p:", 10.0, flood=g)
    g.ban("198.51.100.1", 50.0, seconds=60)
    assert tail(sync.request(50.0))[2]
    sync.failed(50.0)
    assert tail(sync.request(50.2))[2] == {"198.51.100.1": ("60.0", "1")}


def test_a_peer_not_written_since_the_last_read_is_not_sent_again_and_keeps_counting():
    profiles = lb_profiles()
    sync = ClusterSync("A", "p:", 10.0, profiles=profiles)
    sync.request()
    sync.answered(reply(peers=[("B", {"lb-pstn" + SEP + "1": 4})]), now=1.0)
    argv = args_of(sync.request())
    assert argv[-4:] == [1, "B", "123", "999"]  # B's version held, then our own mark
    # "unchanged" (0) for B: its counts stay, nothing is recomputed
    remote = profiles.remote
    sync.answered([0, "s", [], "1000", [], [], ["B", 0], 0, "999"], now=1.2)
    assert profiles.remote is remote and profiles.size("lb-pstn", "1") == 4
    # B gone from the live nodes: its calls no longer count
    sync.request()
    sync.answered([0, "s", [], "1000", [], [], [], 0, "999"], now=1.4)
    assert profiles.size("lb-pstn", "1") == 0
    assert args_of(sync.request())[-2:] == [0, "999"]


def test_at_most_share_max_sources_are_shared_the_rest_counted():
    g = guard(density=100, share_min=2)
    g.pike.share_max = 2
    lines = []

    class Log:
        """Records the lines the sync logs."""

        def emit(self, level, fmt, **fields):
            """What RepeatLimiter calls."""
            lines.append((str(level), fmt.format(**fields)))

    sync = ClusterSync("A", "p:", 10.0, flood=g, log=Log())
    for host in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        for _ in range(2):
            g.pike.hit(host, 10.0)
    shared = tail(sync.request(10.0))[1]
    assert sorted(shared) == ["5" + SEP + "192.0.2.1", "5" + SEP + "192.0.2.2"]
    got = {name: value for name, _kind, _doc, value in sync.metrics()}
    assert got["sipdisp_cluster_pike_share_skipped_total"] == 1
    assert got["sipdisp_cluster_pike_shared"] == 2
    assert len([text for _level, text in lines if "cluster.pike_share_max" in text]) == 1


def test_another_process_with_the_same_node_id_is_reported():
    lines = []

    class Log:
        """Records the lines the sync logs."""

        def emit(self, level, fmt, **fields):
            """What RepeatLimiter calls."""
            lines.append(fmt.format(**fields))

    sync = ClusterSync("A", "p:", 10.0, profiles=lb_profiles(), log=Log())
    assert args_of(sync.request())[-1] == ""     # no mark yet: nothing to compare
    sync.answered(reply(mark="1000"), now=1.0)
    assert args_of(sync.request())[-1] == "1000"
    sync.answered(reply(clash=1, mark="1100"), now=1.2)
    assert sync.stats["node_id_clashes"] == 1
    assert any("cluster.node_id" in line for line in lines)
    # a failed round forgets the mark: its write may have landed unanswered
    sync.request()
    sync.failed(now=1.4)
    assert args_of(sync.request())[-1] == ""


def balancer():
    """A LoadBalancer (no core) with destinations 1 and 2 in group 1."""
    from sipdisp.loadbalancer.balancer import LoadBalancer

    class Dialogs:
        """What the balancer needs of the dialog table here."""

        def __init__(self):
            self.profiles = Profiles()
            self.dialogs = {}

    lb = LoadBalancer(Dialogs())
    lb.load([{"id": 1, "group_id": 1, "dst_uri": "sip:10.0.0.1:5060", "resources": "pstn=5"},
             {"id": 2, "group_id": 1, "dst_uri": "sip:10.0.0.2:5060", "resources": "pstn=5"}])
    return lb


def test_load_balancer_states_set_on_one_node_are_applied_on_the_other():
    a_lb, b_lb = balancer(), balancer()
    a = ClusterSync("A", "p:", 10.0, balancer=a_lb)
    b = ClusterSync("B", "p:", 10.0, balancer=b_lb)
    a_lb.set_status(2, False)                   # lb.status 2 0 on A
    written = ds_written(a.request())
    assert written == {"lb 2": str(a_lb.by_id[2].probe.state)}
    a.answered(reply(ds=list(written.items())), now=1.0)
    b.request()
    b.answered(reply(ds=list(written.items())), now=1.0)
    assert not b_lb.by_id[2].enabled and b_lb.by_id[1].enabled
    assert ds_written(b.request()) == {}        # applied, not echoed
    b_lb.set_status(2, True)                    # lb.status 2 1 on B
    back = ds_written(b.request())
    a.request()
    a.answered(reply(ds=list(back.items())), now=1.2)
    assert a_lb.by_id[2].enabled
