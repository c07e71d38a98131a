"""Load balancer probing by probe_mode (OpenSIPS: 0 never, 1 while disabled,
2 always), with the shared prober, accepted reply codes and timeouts."""

from sipdisp.sip import parse_message
from tests.support import sipmsg
from tests.support.calls import Switch

LB = {"probing_interval": 5.0, "probing_method": "INFO", "probing_timeout": 1.0,
      "probing_reply_codes": "501, 403", "probing_from": "sip:prober@lb.example"}


def switch(modes):
    return Switch(lb=LB, destinations=[
        {"group": 1, "uri": f"sip:127.0.0.1:{port}", "resources": "pstn=5", "probe_mode": mode}
        for port, mode in zip((5081, 5082), modes)])


def pings(sw, name):
    """The probes a node got since the last look (not the INVITEs of calls)."""
    return [m for m in (parse_message(r) for r in sw.nodes[name].take())
            if m.is_request and m.method == "INFO"]


def answer(sw, name, ping, status, reason="OK"):
    sw.nodes[name].send(sipmsg.response_to(ping.to_bytes(), status, reason, to_tag="p"))


def test_probe_mode_0_is_never_pinged_and_mode_2_every_round():
    """Mode 0 gets no probe; mode 2 gets an INFO from probing_from every probing_interval."""
    sw = switch((0, 2))
    sw.advance(5.0)
    assert pings(sw, "fs1") == []
    (ping,) = pings(sw, "fs2")
    assert ping.method == "INFO" and ping.address("from").uri.host == "lb.example"
    answer(sw, "fs2", ping, 200)
    sw.advance(5.0)
    assert [p.method for p in pings(sw, "fs2")] == ["INFO"]


def test_mode_2_timeout_disables_and_an_accepted_reply_enables_again():
    """An unanswered probe disables a mode 2 node (no calls go there); a 501, accepted by
    probing_reply_codes "501, 403", enables it again."""
    sw = switch((2, 2))
    sw.advance(5.0)
    answer(sw, "fs1", pings(sw, "fs1")[0], 200)
    sw.nodes["fs2"].take()            # fs2 stays silent
    sw.advance(1.1)
    assert not sw.lb.by_id[2].enabled and sw.lb.by_id[1].enabled
    sw.nodes["fs2"].take()            # the probe's retransmissions
    assert {sw.call().start() for _ in range(3)} == {"fs1"}
    sw.advance(4.0)
    (ping,) = pings(sw, "fs2")
    answer(sw, "fs2", ping, 501, "Not Implemented")
    assert sw.lb.by_id[2].enabled


def test_mode_2_unaccepted_reply_disables():
    """A 404 is not in the accepted codes: the node is disabled."""
    sw = switch((2, 2))
    sw.advance(5.0)
    answer(sw, "fs1", pings(sw, "fs1")[0], 404, "Not Found")
    assert not sw.lb.by_id[1].enabled


def test_mode_1_is_pinged_only_while_disabled_and_comes_back():
    """Mode 1: no probes while enabled; after lb_disable_dst-like disabling it is probed, and
    a 200 brings it back."""
    sw = switch((1, 1))
    sw.advance(5.0)
    assert pings(sw, "fs1") == [] and pings(sw, "fs2") == []
    call = sw.call()
    call.start()
    sw.lb.disable_current(call_ctx(sw, call))
    name = call.node
    assert not sw.lb.destinations[0 if name == "fs1" else 1].enabled
    sw.advance(5.0)
    (ping,) = pings(sw, name)
    answer(sw, name, ping, 200)
    assert all(d.enabled for d in sw.lb.destinations)
    sw.advance(5.0)
    assert pings(sw, name) == []


def call_ctx(sw, call):
    """The RequestContext of a call's INVITE (kept by its dialog's server transaction)."""
    for server in sw.core.layer.servers.values():
        if server.request.call_id == call.call_id and server.owner is not None:
            return server.owner.ctx
    raise AssertionError("no transaction for the call")


def test_administratively_disabled_nodes_are_not_probed_back():
    """lb.status 0 is the operator's: probing leaves the node disabled until lb.status 1."""
    sw = switch((2, 2))
    sw.lb.set_status(1, False)
    sw.advance(5.0)
    assert pings(sw, "fs1") == []
    assert not sw.lb.by_id[1].enabled
    sw.lb.set_status(1, True)
    sw.advance(5.0)
    assert [p.method for p in pings(sw, "fs1")] == ["INFO"]


def test_a_probe_failure_is_one_state_change_of_the_destinations_probe():
    """An unanswered probe is one StateChange, AP -> IP, of fs1's probe (group 1)."""
    sw = switch((2, 0))
    changes = []
    sw.lb.prober.listeners.append(changes.append)
    sw.advance(5.0)
    sw.nodes["fs1"].take()
    sw.advance(1.1)
    assert [(c.target, c.target.group, c.old, c.new, c.reason) for c in changes] == [
        (sw.lb.by_id[1].probe, 1, "AP", "IP", "no reply to INFO in 1 s")]


def test_state_changes_are_logged_in_load_balancer_words():
    """A probe failure logs one warning naming the group and the load balancer, not the
    dispatcher (docs/loadbalancer.md)."""
    sw = switch((2, 0))
    lines = []

    class Log:
        def __getattr__(self, level):
            return lambda fmt, **kw: lines.append(f"{level} " + fmt.format(**kw))
    sw.lb.log = Log()
    sw.advance(5.0)
    sw.nodes["fs1"].take()
    sw.advance(1.1)
    assert lines == ["warn load_balancer: sip:127.0.0.1:5081 (group 1) AP -> IP: "
                     "no reply to INFO in 1 s"]
