"""The declarative route: compiled once into closures, one-line errors that
name the key, pseudo-variables, config references and Python routes."""

import os

import pytest
import yaml

from sipdisp.config import ConfigError
from sipdisp.routing import (EXIT, RETURN, build_routing, compile_routing, default_routing,
                             routing_spec)
from sipdisp.routing.compiler import Env
from sipdisp.routing.pv import compile_template
from sipdisp.schema import config_from_dict, load_config
from sipdisp.shipped import shipped_functions
from tests.support.dispatch import Proxy, requests, responses
from tests.support.sipmsg import request, response_to

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = {"console": {"enabled": False}, "http": {"enabled": False}}


def cfg(routing=None, **extra):
    raw = dict(BASE, **extra)
    if routing is not None:
        raw["routing"] = routing
    return config_from_dict(raw)


def test_default_routing_compiles_into_named_closures():
    """The built-in route compiles: request_route, the seed's named routes and RTF_DISPATCH."""
    routing = compile_routing(routing_spec(cfg()), Env(shipped_functions(), config=cfg()))
    assert {"RELAY", "REQINIT", "WITHINDLG", "REGISTRAR", "PRESENCE", "FROMNODES",
            "DISPATCH"} <= set(routing.routes)
    assert set(routing.failure_routes) == {"RTF_DISPATCH"}
    assert callable(routing.request_route)


def test_shipped_config_writes_out_the_builtin_route():
    """etc/sipdisp.yaml carries exactly the built-in route, so editing it starts from the seed."""
    shipped = load_config(os.path.join(ROOT, "etc", "sipdisp.yaml"))
    builtin = default_routing()
    assert shipped.routing.request_route == builtin["request_route"]
    assert shipped.routing.routes == builtin["routes"]
    assert shipped.routing.failure_routes == builtin["failure_routes"]
    assert shipped.dispatcher.list_file == "etc/dispatcher.list"


def test_shipped_list_file_has_set_zero_on_port_5080():
    """etc/dispatcher.list holds set 0 = sip:127.0.0.1:5080, the default FreeSWITCH node."""
    from sipdisp.dispatcher import parse_list
    with open(os.path.join(ROOT, "etc", "dispatcher.list")) as f:
        rows = parse_list(f.read())
    assert [(r["setid"], r["destination"]) for r in rows] == [(0, "sip:127.0.0.1:5080")]


def test_kamailio_seed_example_loads_and_compiles():
    """etc/examples/kamailio-seed.yaml is valid and carries the seed's dispatcher parameters."""
    seed = load_config(os.path.join(ROOT, "etc", "examples", "kamailio-seed.yaml"))
    assert (seed.dispatcher.ping_interval, seed.dispatcher.probing_threshold,
            seed.dispatcher.probing_mode) == (20, 3, 2)
    routing = compile_routing(routing_spec(seed), Env(shipped_functions(), config=seed))
    assert "FROMNODES" not in routing.routes and "DISPATCH" in routing.routes


@pytest.mark.parametrize("routing, message", [
    ({"routes": {"DISPATCH": [{"ds_select_dst": [0, 14]}]}},
     "routing.routes.DISPATCH[0].ds_select_dst: algorithm 14 is not implemented "
     "(known: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)"),
    ({"routes": {"DISPATCH": [{"ds_select_dst": [0, 7]}]}},
     "routing.routes.DISPATCH[0].ds_select_dst: algorithm 7 hashes dispatcher.hash_pvar, "
     "which is not set (a pseudo-variable such as \"$fU\" or \"$fU@$fd\")"),
    ({"routes": {"DISPATCH": ["frobnicate"]}},
     "routing.routes.DISPATCH[0].frobnicate: unknown function 'frobnicate'"),
    ({"request_route": [{"route": "NOPE"}]},
     "routing.request_route[0].route: no route named 'NOPE' (defined: none)"),
    ({"request_route": [{"route": "A"}], "routes": {"A": [{"route": "B"}], "B": [{"route": "A"}]}},
     "routing.routes.A: routes call each other in a loop: A -> B -> A"),
    ({"request_route": [{"t_on_failure": "MISSING"}]},
     "routing.request_route[0].t_on_failure: no failure route named 'MISSING' (defined: none)"),
    ({"request_route": ["t_is_canceled"]},
     "routing.request_route[0].t_is_canceled: t_is_canceled is a condition; use it under if:"),
    ({"request_route": [{"if": "record_route", "then": ["exit"]}]},
     "routing.request_route[0].if.record_route: record_route is not a condition"),
    ({"request_route": [{"sl_send_reply": [99, "x"]}]},
     "routing.request_route[0].sl_send_reply: status code must be 100..699, got 99"),
    ({"request_route": [{"sl_send_reply": 404}]},
     "routing.request_route[0].sl_send_reply: sl_send_reply takes 2 argument(s), got 1"),
    ({"request_route": [{"ds_mark_dst": "zp"}]},
     "routing.request_route[0].ds_mark_dst: state must be a, i, t or d, optionally followed "
     "by p (d never with p), got 'zp'"),
    # the list of known variables grows with each subsystem: only its start is fixed
    ({"request_route": [{"if": {"eq": ["$nope", 1]}, "then": []}]},
     "routing.request_route[0].if.eq: unknown pseudo-variable $nope (known: $ru, $rU, $rd, ..."),
    ({"request_route": [{"t_check_status": "${proxy.nothing}"}]},
     "routing.request_route[0].t_check_status: t_check_status is a condition; use it under if:"),
    ({"request_route": [{"if": {"t_check_status": "${proxy.nothing}"}, "then": []}]},
     "routing.request_route[0].if.t_check_status: ${proxy.nothing}: no such configuration key"),
    ({"request_route": [{"if": "has_totag", "else": []}]},
     "routing.request_route[0]: if needs then"),
    ({"request_route": [{"a": 1, "b": 2}]},
     "routing.request_route[0]: one function per step, got a, b"),
    ({"request_route": "exit"}, 'routing.request_route: expected a list of route steps or null, got "exit"'),
    ({"module": "not a module"}, "routing.module: 'not a module' is not package.module:function"),
])
def test_route_errors_are_one_line_naming_the_key(routing, message):
    """Every mistake in the route is a one-line ConfigError at load time naming its key."""
    with pytest.raises(ConfigError) as info:
        cfg(routing)
    if message.endswith("..."):
        assert str(info.value).startswith(message[:-3])
    else:
        assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_functions_of_missing_subsystems_say_what_they_need():
    """A function of a subsystem sipdisp lacks names that subsystem, not just 'unknown'."""
    from sipdisp.routing.compiler import FUTURE
    assert FUTURE, "FUTURE lists the Kamailio names sipdisp does not have"
    for name, (needs, instead) in FUTURE.items():
        with pytest.raises(ConfigError) as info:
            cfg({"routes": {"X": [{name: "x"}]}})
        expected = (f"routing.routes.X[0].{name}: {name} needs {needs}, "
                    "which sipdisp does not have yet")
        assert str(info.value) == (f"{expected}; use {instead}" if instead else expected)


def test_future_lists_no_function_that_exists():
    """FUTURE names only functions that no part of sipdisp declares."""
    from sipdisp.routing.compiler import FUTURE
    functions = shipped_functions()
    assert [name for name in FUTURE if name in functions] == []


def test_a_function_table_holds_only_what_is_added_to_it():
    """A route compiled against a table of the core's functions refuses a subsystem's."""
    from sipdisp.routing import FunctionTable
    from sipdisp.routing.builtins import register
    table = FunctionTable()
    register(table)
    spec = {"request_route": [{"sl_send_reply": [404, "Not here"]}]}
    assert callable(compile_routing(spec, Env(table)).request_route)
    with pytest.raises(ConfigError) as info:
        compile_routing({"request_route": [{"lookup": "location"}]}, Env(table))
    assert str(info.value) == "routing.request_route[0].lookup: unknown function 'lookup'"


def test_a_function_declared_twice_is_refused():
    """Two declarations of one name are a ValueError naming it, not a silent override."""
    from sipdisp.routing import FunctionTable
    table = FunctionTable()
    table.add("x", lambda args, where, env: None)
    with pytest.raises(ValueError, match="'x' is declared twice"):
        table.add(("y", "x"), lambda args, where, env: None)


def test_subsystem_pseudo_variables_come_from_the_table():
    """$DLG_status is known to a route compiled with the dialog's functions, not without."""
    from sipdisp.routing import FunctionTable
    from sipdisp.routing.builtins import register
    spec = {"request_route": [{"append_hf": "X-Dlg: $DLG_status"}]}
    assert compile_routing(spec, Env(shipped_functions())).request_route
    table = FunctionTable()
    register(table)
    with pytest.raises(ConfigError, match=r"unknown pseudo-variable \$DLG_status"):
        compile_routing(spec, Env(table))


def test_a_named_route_can_be_replaced_alone():
    """routes.DISPATCH in the config replaces only that route of the built-in one."""
    spec = routing_spec(cfg({"routes": {"DISPATCH": [{"sl_send_reply": [503, "Closed"]}]}}))
    assert spec["routes"]["DISPATCH"] == [{"sl_send_reply": [503, "Closed"]}]
    assert spec["routes"]["WITHINDLG"] == default_routing()["routes"]["WITHINDLG"]
    p = Proxy({"routing": {"routes": {"DISPATCH": [{"sl_send_reply": [503, "Closed"]}]}}},
              rows=["sip:127.0.0.1:5081"])
    out = p.send(request("INVITE", "sip:1000@127.0.0.1:5060"))
    assert responses(out, 503)[0][0].reason == "Closed"


def test_routes_are_compiled_once_not_interpreted():
    """Changing the spec after compilation changes nothing: the closures are all that runs."""
    spec = {"request_route": [{"if": {"is_method": "OPTIONS"},
                               "then": [{"sl_send_reply": [200, "Compiled"]}, "exit"]},
                              {"sl_send_reply": [404, "Other"]}]}
    routing = compile_routing(spec, Env(shipped_functions()))
    spec["request_route"].clear()
    p = Proxy()
    p.core.route = routing.request_route
    out = p.send(request("OPTIONS", "sip:x@127.0.0.1:5060"))
    assert responses(out, 200)[0][0].reason == "Compiled"


def test_exit_and_return_signals():
    """exit ends the whole route; return ends only the named route."""
    spec = {"request_route": [{"route": "A"}, {"set": {"$var(after_a)": 1}}, {"route": "B"},
                              {"set": {"$var(after_b)": 1}}],
            "routes": {"A": ["return", {"set": {"$var(in_a)": 1}}],
                       "B": ["exit"]}}
    routing = compile_routing(spec, Env(shipped_functions()))

    class C:
        def __init__(self):
            self.vars = {}
            self.tape, self.tape_pos = [], 0
    ctx = C()
    routing.request_route(ctx)
    assert ctx.vars == {"after_a": 1}
    assert routing.route("B")(ctx) is EXIT and routing.route("A")(ctx) is RETURN


def test_templates_render_pseudo_variables():
    """xlog templates substitute $ru, $rU, $ci, $var() and $hdr(); missing values show <null>."""
    p = Proxy()
    seen = {}

    def capture(ctx):
        seen["text"] = compile_template(
            "m=$rm u=$rU ru=$ru ci=$ci du=$du v=$var(n) h=$hdr(Max-Forwards) f=$fU", "t")(ctx)
        ctx.vars["n"] = 7
        seen["again"] = compile_template("$var(n)/$si:$sp/$pr", "t")(ctx)
        ctx.reply(200, "OK")
    p.core.route = capture
    p.send(request("OPTIONS", "sip:1000@127.0.0.1:5060", call_id="cid@x"))
    assert seen["text"] == ("m=OPTIONS u=1000 ru=sip:1000@127.0.0.1:5060 ci=cid@x du=<null> "
                            "v=<null> h=70 f=alice")
    assert seen["again"] == "7/127.0.0.1:5070/udp"


def test_set_assigns_du_and_ruri_and_conditions_compare():
    """set: {$du, $rU} changes the next hop and R-URI; eq/ne/match compare values."""
    spec = {"request_route": [
        {"if": {"match": ["$rU", "^\\+[1-9][0-9]+$"]},
         "then": [{"set": {"$du": "sip:127.0.0.1:5099", "$rU": "e164"}}]},
        {"if": {"ne": ["$rU", "e164"]}, "then": [{"sl_send_reply": [404, "Not E.164"]}, "exit"]},
        "t_relay"]}
    p = Proxy()
    p.core.route = compile_routing(spec, Env(shipped_functions())).request_route
    out = p.send(request("INVITE", "sip:+4930123@127.0.0.1:5060"))
    fwd = requests(out, "INVITE")
    assert fwd[0][1] == ("127.0.0.1", 5099) and fwd[0][0].uri.user == "e164"
    assert responses(p.send(request("INVITE", "sip:0301@127.0.0.1:5060")), 404)


def test_config_references_are_resolved_at_compile_time():
    """"${proxy.failover_codes}" in t_check_status becomes the configured codes."""
    c = cfg(proxy={"failover_codes": [502]})
    p = Proxy({"proxy": {"failover_codes": [502]}},
              rows=["sip:127.0.0.1:5081", "sip:127.0.0.1:5082"])
    assert c.proxy.failover_codes == [502]
    out = p.send(request("INVITE", "sip:1000@127.0.0.1:5060"))
    fwd, node = requests(out, "INVITE")[0]
    out = p.send(response_to(fwd.to_bytes(), 500, "Error"), source=node)
    assert responses(out, 500) and not requests(out, "INVITE")  # 500 is not in the codes now
    out = p.send(request("INVITE", "sip:1000@127.0.0.1:5060"))
    fwd, node = requests(out, "INVITE")[0]
    out = p.send(response_to(fwd.to_bytes(), 502, "Bad Gateway"), source=node)
    assert requests(out, "INVITE") and not responses(out, 502)


def test_python_route_module_replaces_the_yaml_route():
    """routing.module loads a Python function as the request route; it can use the dispatcher."""
    p = Proxy({"routing": {"module": "sipdisp.routing.examples:request_route"}},
              rows=["sip:127.0.0.1:5081", "sip:127.0.0.1:5082"])
    got = [requests(p.send(request("INVITE", "sip:1000@127.0.0.1:5060")), "INVITE")[0][1]
           for _ in range(4)]
    assert got == [("127.0.0.1", 5081), ("127.0.0.1", 5082)] * 2
    out = p.send(request("REGISTER", "sip:127.0.0.1:5060"))
    assert responses(out, 404)[0][0].reason == "No registrar"


def test_python_route_failover_uses_the_failure_function():
    """The example Python route fails over on 500 and marks the node IP, as RTF_DISPATCH does."""
    p = Proxy({"routing": {"module": "sipdisp.routing.examples:request_route"}},
              rows=["sip:127.0.0.1:5081", "sip:127.0.0.1:5082"])
    fwd, node = requests(p.send(request("INVITE", "sip:1000@127.0.0.1:5060")), "INVITE")[0]
    out = p.send(response_to(fwd.to_bytes(), 500, "Error"), source=node)
    assert requests(out, "INVITE")[0][1] == ("127.0.0.1", 5082)
    assert p.dispatcher.destinations()[0].letters == "IP"


def test_bad_module_is_a_config_error_when_built():
    """A routing.module that cannot be imported is a one-line ConfigError naming the key."""
    c = cfg({"module": "sipdisp.nowhere:route"})
    with pytest.raises(ConfigError, match=r"^routing.module: cannot import sipdisp.nowhere"):
        build_routing(c, shipped_functions())
    with pytest.raises(ConfigError, match=r"^routing.module: sipdisp.routing has no function x$"):
        build_routing(cfg({"module": "sipdisp.routing:x"}), shipped_functions())


def test_every_function_has_a_doc_line():
    """Each route function documents itself in one line (docs/routing.md lists them)."""
    rows = shipped_functions().describe()
    assert len(rows) > 40
    assert all(doc and "\n" not in doc for _, _, doc in rows)
    names = {name for name, _, _ in rows}
    assert {"ds_select_dst", "ds_next_dst", "ds_mark_dst", "ds_is_from_list", "t_relay",
            "t_set_fr", "record_route", "loose_route"} <= names


def test_docs_routing_md_lists_every_function():
    """docs/routing.md's function reference is what python -m sipdisp.routedocs generates."""
    from sipdisp import routedocs as docs
    with open(os.path.join(ROOT, "docs", "routing.md"), encoding="utf-8") as f:
        text = f.read()
    assert docs.render(text) == text, "run: python -m sipdisp.routedocs"
    assert all(f"`{name}`" in text for name, _, _ in shipped_functions().describe())


def test_yaml_of_the_default_is_valid_yaml_with_comments_only_as_extras():
    """The built-in route text is YAML whose data equals default_routing()."""
    from sipdisp.routing import DEFAULT_ROUTING_YAML
    assert yaml.safe_load(DEFAULT_ROUTING_YAML) == default_routing()


def _python_route(ctx):
    """A Python route using the Kamailio-named wrappers of sipdisp.routing.api."""
    from sipdisp.routing.api import ds_select_dst, t_relay
    if not ds_select_dst(ctx, 0, 4):
        ctx.reply(404, "No destination")
        return
    ctx.t_on_failure(_python_failure_route)
    t_relay(ctx)


def _python_failure_route(ctx):
    from sipdisp.routing.api import ds_mark_dst, ds_next_dst, t_check_status, t_relay
    if t_check_status(ctx, "5[0-9][0-9]"):
        ds_mark_dst(ctx, "ip")
        if ds_next_dst(ctx):
            t_relay(ctx)


def test_python_api_wrappers_fail_over_on_5xx_only():
    """ds_select_dst, t_check_status, ds_mark_dst, ds_next_dst and t_relay from
    sipdisp.routing.api: a 503 moves the call to the next node and marks the first IP;
    a 486 is not a failover code and goes back to the caller."""
    p = Proxy({}, rows=["sip:127.0.0.1:5081", "sip:127.0.0.1:5082"])
    p.core.route = _python_route
    fwd, node = requests(p.send(request("INVITE", "sip:1000@127.0.0.1:5060")), "INVITE")[0]
    assert node == ("127.0.0.1", 5081)
    out = p.send(response_to(fwd.to_bytes(), 503, "Unavailable"), source=node)
    assert [to for _, to in requests(out, "INVITE")] == [("127.0.0.1", 5082)]
    assert p.dispatcher.destinations()[0].letters == "IP"
    fwd, node = requests(p.send(request("INVITE", "sip:1000@127.0.0.1:5060")), "INVITE")[0]
    out = p.send(response_to(fwd.to_bytes(), 486, "Busy Here"), source=node)
    assert not requests(out, "INVITE") and responses(out, 486)


def test_a_resumed_route_replays_the_steps_before_the_suspension():
    """A route suspended after a counting, rewriting step runs again from the top on
    resume: the steps before the suspension point return what they returned and act
    once, and the conditions take the branch they took the first time."""
    from sipdisp.proxy import RequestContext, RouteSuspended, Target
    from sipdisp.routing import FunctionTable
    from sipdisp.routing.builtins import register
    from sipdisp.sip import parse_message
    calls = []
    answer = []

    def counting(args, where, env):
        """A step that counts its runs and rewrites the R-URI user."""
        def count(ctx):
            calls.append(ctx.request.uri.user)
            ctx.request.uri.user = "rewritten"
            return True
        return count

    def waiting(args, where, env):
        """A step that waits for data once, like a database read."""
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
        {"append_hf": "X-Once: 1"},
        {"if": {"eq": ["$rU", "bob"]}, "then": ["count_me"], "else": ["exit"]},
        "wait_for_db",
        {"sl_send_reply": [200, "Resumed"]}]}
    p = Proxy()
    p.core.route = compile_routing(spec, Env(table, config=p.cfg, core=p.core)).request_route
    req = parse_message(request("OPTIONS", "sip:bob@127.0.0.1:5060"))
    ctx = RequestContext(p.core, req, Target("udp", "10.0.0.1", 5070, None, p.listener), None,
                         0.0)
    p.core._run_route(ctx)
    assert calls == ["bob"] and p.core.layer.drain() == []
    answer.append(True)
    p.core.resume(ctx, 1.0)
    sent = p.core.layer.drain()
    assert calls == ["bob"], "the step before the suspension ran again"
    assert [parse_message(data).status for data, _ in sent] == [200]
    assert req.values("x-once") == ["1"]
