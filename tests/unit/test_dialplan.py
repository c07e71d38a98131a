"""Dialplan translation, sans-IO: rules of a dialplan id tried in Kamailio's
order, equality, regex and fnmatch matching, match_len, back-references,
attrs, refused rows; and dp_translate / dp_replace / dp_match in a route."""

import pytest

from sipdisp.commands import CommandError, CommandRegistry
from sipdisp.config import ConfigError
from sipdisp.dialplan import Dialplan, Rule, RuleError, parse_repl
from sipdisp.dialplan.service import register_commands
from sipdisp.proxy import ProxyCore
from sipdisp.proxy.context import RequestContext
from sipdisp.routing import compile_routing
from sipdisp.routing.compiler import Env
from sipdisp.routing.plugin import Modules
from sipdisp.schema import config_from_dict
from sipdisp.shipped import shipped_functions
from sipdisp.sip import parse_message
from tests.support.dispatch import Ctx
from tests.support.sipmsg import request


def row(id, match_exp, repl_exp="", subst_exp="", dpid=0, pr=1, match_op=1, match_len=0,
        attrs=""):
    """A dialplan table row."""
    return {"id": id, "dpid": dpid, "pr": pr, "match_op": match_op, "match_exp": match_exp,
            "match_len": match_len, "subst_exp": subst_exp, "repl_exp": repl_exp,
            "attrs": attrs}


def plan(*rows):
    d = Dialplan(shipped_functions().variables)
    summary = d.load(rows)
    assert not summary["refused"], summary
    return d


def out(d, text, dpid=0):
    result = d.translate(dpid, text)
    return None if result is None else result.output


def test_rules_are_tried_in_priority_order_lowest_pr_first():
    """Of two rules matching, the one with the lower pr wins, whatever the load order."""
    d = plan(row(1, "^0", "late", pr=5), row(2, "^0", "early", pr=1))
    assert out(d, "0301") == "early"


def test_equal_ties_in_pr_are_broken_by_id():
    """Rules with the same pr are tried in id order."""
    d = plan(row(7, "^0", "seven"), row(3, "^0", "three"))
    assert out(d, "0301") == "three"


def test_equality_compares_the_whole_string_and_regex_searches_anywhere():
    """match_op 0 needs the exact string; match_op 1 is an unanchored search."""
    d = plan(row(1, "112", "emergency", match_op=0), row(2, "99", "has-99", pr=2))
    assert out(d, "112") == "emergency"
    assert out(d, "1120") is None
    assert out(d, "0990") == "has-99"
    d = plan(row(1, "1.2", "x", match_op=0))
    assert out(d, "112") is None  # "." is no wildcard under equality


def test_fnmatch_rule_matches_shell_patterns():
    """match_op 2 matches like fnmatch (Kamailio's third operator)."""
    d = plan(row(1, "00[1-9]*", "intl", match_op=2))
    assert out(d, "0049301") == "intl" and out(d, "0049") == "intl"
    assert out(d, "049") is None


def test_match_len_limits_a_rule_to_inputs_of_that_length():
    """A rule with match_len 4 applies to 4-character inputs only; 0 means any length."""
    d = plan(row(1, "^1", "short", match_len=4), row(2, "^1", "any", pr=9))
    assert out(d, "1234") == "short"
    assert out(d, "12345") == "any"


def test_exact_length_rules_are_tried_before_any_length_rules():
    """As Kamailio indexes rules, a matching exact-length rule beats a lower-pr any-length one."""
    d = plan(row(1, "^1", "any-length", pr=1), row(2, "^1", "four", pr=9, match_len=4))
    assert out(d, "1234") == "four"
    assert out(d, "123") == "any-length"


def test_back_references_fill_the_replacement():
    """\\1..\\9 take subst_exp's groups and \\0 the whole match; the output is repl_exp alone."""
    d = plan(row(1, "^0[1-9]", "0049\\1", "^0([1-9][0-9]+)$", attrs="de"),
             row(2, "^\\*", "<\\2-\\1|\\0>", "^\\*(\\d)(\\d)", pr=2))
    result = d.translate(0, "030123")
    assert (result.output, result.attrs, result.rule.id) == ("004930123", "de", 1)
    assert out(d, "*12xyz") == "<2-1|*12>"  # the rest of the input is not kept


def test_repl_without_subst_is_taken_as_it_stands_and_empty_repl_keeps_the_input():
    """No subst_exp: the output is repl_exp; neither: the input unchanged (attrs only)."""
    d = plan(row(1, "^911$", "112"), row(2, "^5", "", attrs="svc=5", pr=2))
    assert out(d, "911") == "112"
    result = d.translate(0, "5000")
    assert (result.output, result.attrs) == ("5000", "svc=5")


def test_pseudo_variables_in_the_replacement_read_the_request():
    """repl_exp may hold pseudo-variables ($var(prefix)\\1), read from the request."""
    d = plan(row(1, "^0", "$var(prefix)\\1$", "^0(.*)$"))
    ctx = Ctx(request("INVITE", "sip:0301@127.0.0.1"))
    ctx.vars["prefix"] = "+49"
    assert d.translate(0, "0301", ctx).output == "+49301$"  # a $ naming nothing is literal


def test_no_match_unknown_dpid_and_failed_subst_are_false_and_counted():
    """No rule matching, a dpid without rules, and a subst_exp missing the input all fail."""
    d = plan(row(1, "^0", "x\\1", "^00(.*)$"))
    assert d.translate(0, "123") is None
    assert d.translate(7, "0123") is None
    result = d.translate(0, "0123")
    assert result.output is None and result.rule.id == 1
    assert (d.stats["no_match"], d.stats["no_dpid"], d.stats["subst_failed"]) == (1, 1, 1)


@pytest.mark.parametrize("bad, reason", [
    (row(1, "(unclosed", "x"), "match_exp '(unclosed' does not compile"),
    (row(2, "^0", "\\1", "([0-9"), "subst_exp '([0-9' does not compile"),
    (row(3, "^0", "\\2", "^(0)"), "refers to \\2, but subst_exp '^(0)' has 1 group(s)"),
    (row(4, "^0", "\\1"), "refers to \\1, but there is no subst_exp"),
    (row(5, "^0", "x", match_op=7), "match_op 7 is none of 0 (equal), 1 (regex), 2 (fnmatch)"),
    (row(6, "^0", "a\\qb", "^0"), "unknown escape \\q"),
    (row(7, "^0", "x", match_len=-1), "match_len -1 is negative"),
])
def test_bad_rows_are_refused_at_load_with_their_id(bad, reason):
    """A row that cannot be used is refused with its id and the reason; the good rows load."""
    d = Dialplan()
    summary = d.load([bad, row(99, "^1", "ok")])
    assert summary["rules"] == 1 and len(summary["refused"]) == 1
    row_id, why = summary["refused"][0]
    assert row_id == bad["id"] and reason in why
    assert out(d, "123") == "ok"
    assert d.stats["rules_refused"] == 1


def test_parse_repl_splits_literals_groups_and_escapes():
    """A replacement is literal text, group numbers and escaped characters."""
    assert parse_repl("+\\1-\\\\x") == ["+", 1, "-\\x"]
    with pytest.raises(RuleError):
        parse_repl("oops\\")


def test_rule_refuses_a_non_numeric_dpid():
    """A row whose dpid is not a number is a RuleError."""
    with pytest.raises(RuleError, match="bad number"):
        Rule(row(1, "^0", "x", dpid="zero"))


# -- in the route ----------------------------------------------------------------------

def compiled(steps, dialplan, **dialplan_config):
    """``steps`` compiled as a request route over ``dialplan``."""
    cfg = config_from_dict({"dialplan": dict({"enabled": True}, **dialplan_config)})
    modules = Modules(dialplan=dialplan)
    routing = compile_routing({"request_route": steps}, Env(shipped_functions(), modules, cfg))
    return routing, ProxyCore([], None, modules=modules)


def run(routing, core, ruri="sip:0301234@example.com"):
    ctx = RequestContext(core, parse_message(request("INVITE", ruri)), None, None, 0.0)
    routing.request_route(ctx)
    return ctx


def german():
    return plan(row(1, "^0[1-9]", "+49\\1", "^0(.*)$", attrs="de"),
                row(2, "^00", "+\\1", "^00(.*)$", attrs="intl"))


def test_dp_translate_rewrites_the_ruri_user_and_stores_attrs():
    """dp_translate: [0, "$rU/$rU", "$var(attrs)"] (the seed's line) rewrites $rU and sets the attrs."""
    routing, core = compiled([{"dp_translate": [0, "$rU/$rU", "$var(attrs)"]}], german())
    ctx = run(routing, core)
    assert str(ctx.request.uri) == "sip:+49301234@example.com"
    assert ctx.vars["attrs"] == "de"


def test_dp_translate_runs_again_without_translating_its_own_output():
    """A route re-run after a suspension leaves the number it already translated as it is."""
    d = plan(row(1, ".", "9\\0", "^.*$"))  # would prefix a 9 at every pass
    routing, core = compiled([{"dp_translate": [0, "$rU/$rU"]}], d)
    ctx = run(routing, core, "sip:123@example.com")
    routing.request_route(ctx)
    assert ctx.request.uri.user == "9123"


def test_dp_translate_writes_another_variable_and_attrs_pvar_applies():
    """"src/dst" into $var(out); without an attrs argument dialplan.attrs_pvar gets them."""
    routing, core = compiled([{"dp_translate": [0, "$rU/$var(out)"]}], german(),
                             attrs_pvar="$avp(dpattrs)")
    ctx = run(routing, core, "sip:0049301@example.com")
    assert ctx.vars["out"] == "+49301" and ctx.avps["dpattrs"] == ["intl"]
    assert ctx.request.uri.user == "0049301"


def test_opensips3_form_and_dp_replace_and_dp_match():
    """[dpid, input, output, attrs], dp_replace and dp_match work as their modules document."""
    routing, core = compiled([
        {"dp_translate": [0, "0$rU", "$var(a)", "$var(attrs)"]},
        {"dp_replace": [0, "00$rU", "$var(b)"]},
        {"if": {"dp_match": [0, "$rU", "$var(m)"]}, "then": [{"xlog": "matched"}]},
    ], german())
    ctx = run(routing, core, "sip:301@example.com")
    assert (ctx.vars["a"], ctx.vars["attrs"], ctx.vars["b"]) == ("+49301", "de", "+301")
    assert "m" not in ctx.vars  # "301" matches no rule


def test_dp_translate_is_false_when_nothing_matches():
    """No matching rule: the condition is false and the R-URI unchanged."""
    routing, core = compiled([{"if": {"dp_translate": [0, "$rU/$rU"]},
                               "then": [{"set": {"$var(hit)": "yes"}}]}], german())
    ctx = run(routing, core, "sip:alice@example.com")
    assert "hit" not in ctx.vars and ctx.request.uri.user == "alice"


def test_dpid_may_come_from_a_variable():
    """The dialplan id may be a pseudo-variable holding a number."""
    d = plan(row(1, "^1", "one", dpid=5))
    routing, core = compiled([{"set": {"$var(dp)": "5"}},
                              {"dp_translate": ["$var(dp)", "$rU/$rU"]}], d)
    assert run(routing, core, "sip:1@example.com").request.uri.user == "one"


@pytest.mark.parametrize("steps, message", [
    ([{"dp_translate": ["zero", "$rU/$rU"]}], "the dialplan id must be an integer"),
    ([{"dp_translate": [0, "$rU/$fU"]}], "$fU cannot be assigned"),
    ([{"dp_replace": [0, "$rU"]}], "dp_replace takes 3 argument(s)"),
])
def test_bad_arguments_are_one_line_route_errors(steps, message):
    """Wrong dpids, unassignable outputs and argument counts are refused when the route compiles."""
    with pytest.raises(ConfigError, match=message.replace("$", r"\$").replace("(", r"\(")
                       .replace(")", r"\)")):
        compiled(steps, german())


def test_dp_translate_needs_dialplan_enabled():
    """A route calling dp_translate with dialplan.enabled false is a configuration error."""
    with pytest.raises(ConfigError, match=r"dp_translate needs dialplan.enabled: true"):
        config_from_dict({"routing": {"request_route": [{"dp_translate": [0, "$rU/$rU"]}]}})


def test_dp_commands_translate_dump_and_say_why_nothing_matched():
    """dp.translate answers output and attrs, dp.dump lists rules in trial order, misses are errors."""
    registry = CommandRegistry()

    class Service:
        dialplan = german()
        table = "dialplan"
    register_commands(registry, Service)
    got = registry.call("dp.translate", 0, "s:030").result
    assert got == {"Output": "+4930", "Attributes": "de", "Rule": 1}
    assert [r["id"] for r in registry.call("dialplan.dump", 0).result] == [1, 2]
    failure = registry.call("dp.translate", 0, "123")
    assert isinstance(failure.result.value, CommandError)
    failure.addErrback(lambda f: None)
