"""Steady conditions (is_method) stay off the route tape, and a resumed
route still takes the branches it took the first time."""

from sipdisp.proxy import RequestContext, RouteSuspended, Target
from sipdisp.routing import FunctionTable, compile_routing
from sipdisp.routing.builtins import register
from sipdisp.routing.compiler import Env
from sipdisp.sip import parse_message
from tests.support.dispatch import Proxy
from tests.support.sipmsg import request


def test_is_method_is_not_taped_and_a_resumed_route_acts_once():
    """Only the non-steady steps are recorded; on resume the taped step is
    not run again, the is_method conditions answer as before, and the reply
    after the suspension point goes out once."""
    calls = []
    answer = []

    def counting(args, where, env):
        """Counts its runs."""
        def count(ctx):
            calls.append(1)
            return True
        return count

    def waiting(args, where, env):
        """Waits for data once, like a database read."""
        def wait(ctx):
            if not answer:
                raise RouteSuspended()
            return True
        return wait

    table = FunctionTable()
    register(table)
    table.add("count_me", counting)
    table.add("wait_for_db", waiting)
    spec = {"request_route": [
        {"if": {"is_method": "OPTIONS"}, "then": ["count_me"]},
        {"if": {"is_method": "INVITE|BYE"}, "then": ["exit"]},
        "wait_for_db",
        {"if": {"is_method": "OPTIONS"}, "then": [{"sl_send_reply": [200, "Resumed"]}]}]}
    p = Proxy()
    p.core.route = compile_routing(spec, Env(table, config=p.cfg, core=p.core)).request_route
    req = parse_message(request("OPTIONS", "sip:bob@127.0.0.1:5060"))
    ctx = RequestContext(p.core, req, Target("udp", "10.0.0.1", 5070, None, p.listener), None,
                         0.0)
    p.core._run_route(ctx)
    assert calls == [1] and p.core.layer.drain() == []
    assert ctx.tape == [True], "only count_me is on the tape (wait_for_db raised)"
    answer.append(True)
    p.core.resume(ctx, 1.0)
    sent = p.core.layer.drain()
    assert calls == [1], "the taped step ran again"
    assert [parse_message(data).status for data, _ in sent] == [200]
