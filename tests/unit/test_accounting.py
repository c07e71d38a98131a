"""Accounting through a proxy core in memory: acc rows per INVITE and BYE
transaction with the seed's extras, missed calls, failed transactions on
request, CDRs per call (also when the dialog times out), and records that
cannot be written."""

import copy
import datetime

import pytest

from sipdisp.accounting import Accounting, parse_extra
from sipdisp.routing.pv import RouteError
from sipdisp.shipped import shipped_functions
from tests.support import sipmsg
from tests.support.calls import ROUTE, Switch

#: the pseudo-variables a shipped route knows ($DLG_* included)
VARIABLES = shipped_functions().variables


def methods(rows):
    return [(r["method"], r["sip_code"], r["sip_reason"]) for r in rows]


def test_extra_parses_the_seed_syntax_and_refuses_unknown_columns():
    """``src_user=$fU;...`` gives (column, getter) pairs; a column acc lacks, a base column,
    a repeated one or an unknown pseudo-variable is a RouteError."""
    pairs = parse_extra("src_user=$fU;src_ip=$si", VARIABLES)
    assert [c for c, _ in pairs] == ["src_user", "src_ip"]
    for bad, why in (("nosuch=$fU", "no column"), ("callid=$ci", "written by sipdisp"),
                     ("src_ip=$si;src_ip=$si", "twice"), ("src_ip=$nope", "unknown"),
                     ("src_ip", "column=")):
        with pytest.raises(RouteError, match=why):
            parse_extra(bad, VARIABLES)
    # the dialog module's pseudo-variables are known to extras as to routes
    assert [c for c, _ in parse_extra("src_user=$DLG_status", VARIABLES)] == ["src_user"]


def test_answered_call_gives_invite_and_bye_rows_with_the_seed_extras():
    """INVITE 200 and BYE 200 are accounted with tags, Call-ID, time and the six extras."""
    sw = Switch()
    call = sw.call(user="1000", from_user="alice")
    call.start()
    call.answer()
    sw.advance(3)
    call.hangup()
    invite, bye = sw.rows("acc")
    assert methods([invite, bye]) == [("INVITE", "200", "OK"), ("BYE", "200", "OK")]
    assert invite["from_tag"] == call.from_tag and invite["to_tag"] == call.to_tag
    assert invite["callid"] == bye["callid"] == call.call_id
    assert (invite["src_user"], invite["src_domain"], invite["src_ip"]) == \
        ("alice", "example.com", "10.0.0.1")
    assert (invite["dst_ouser"], invite["dst_user"], invite["dst_domain"]) == \
        ("bob", "1000", "127.0.0.1")
    assert bye["time"] - invite["time"] == datetime.timedelta(seconds=3)
    assert sw.rows("missed_calls") == []


def test_failed_invite_goes_to_missed_calls_not_acc():
    """A 486 with the missed flag: a missed_calls row, and no acc row (no failed flag)."""
    sw = Switch()
    call = sw.call()
    call.start()
    call.answer(486, "Busy Here")
    assert sw.rows("acc") == []
    assert methods(sw.rows("missed_calls")) == [("INVITE", "486", "Busy Here")]
    assert sw.rows("missed_calls")[0]["to_tag"] == call.to_tag


def test_cancelled_call_is_a_missed_call_with_487():
    """A CANCELled INVITE is recorded in missed_calls with 487."""
    sw = Switch()
    call = sw.call()
    call.start()
    call.cancel()
    assert methods(sw.rows("missed_calls")) == [("INVITE", "487", "Request Terminated")]


def test_bye_with_failed_flag_is_accounted_even_when_it_fails():
    """The seed's BYE: do_accounting(db, failed) accounts a BYE answered 481."""
    sw = Switch()
    call = sw.call()
    call.start()
    call.answer()
    call.caller_request("BYE", 2)
    bye = sw.nodes[call.node].expect("BYE")
    sw.nodes[call.node].send(sipmsg.response_to(bye, 481, "No Such Call", to_tag=None))
    assert methods(sw.rows("acc"))[-1] == ("BYE", "481", "No Such Call")


KAMAILIO = {"flag": "FLT_ACC", "missed_flag": "FLT_ACCMISSED",
            "failed_flag": "FLT_ACCFAILED"}


def test_kamailio_flags_account_without_do_accounting():
    """With accounting.flag FLT_ACC (WITH_ACCDB), setflag FLT_ACC on the INVITE accounts it;
    FLT_ACCMISSED records a failure in missed_calls; without the flags nothing is written."""
    route = copy.deepcopy(ROUTE)
    block = route["request_route"][1]["then"]
    block[block.index({"do_accounting": ["db", "missed"]})] = {"setflag": "FLT_ACC"}
    sw = Switch(route=route, accounting=KAMAILIO)
    call = sw.call()
    call.start()
    call.answer()
    busy = sw.call()
    busy.start()
    busy.answer(486, "Busy Here")
    assert methods(sw.rows("acc")) == [("INVITE", "200", "OK")]
    assert sw.rows("missed_calls") == []
    route["request_route"][1]["then"].insert(0, {"setflag": "FLT_ACCMISSED"})
    sw2 = Switch(route=route, accounting=KAMAILIO)
    again = sw2.call()
    again.start()
    again.answer(486, "Busy Here")
    assert methods(sw2.rows("missed_calls")) == [("INVITE", "486", "Busy Here")]


def test_kamailio_flags_write_nothing_unless_configured():
    """By default (accounting.flag null) the built-in route's setflag FLT_ACC writes no record."""
    route = copy.deepcopy(ROUTE)
    block = route["request_route"][1]["then"]
    block[block.index({"do_accounting": ["db", "missed"]})] = {"setflag": "FLT_ACC"}
    route["request_route"][0]["then"][0]["then"][0]["then"] = [{"setflag": "FLT_ACC"}]
    sw = Switch(route=route)
    call = sw.call()
    call.start()
    call.answer()
    call.hangup()
    assert sw.storage.tables["acc"] == [] and sw.storage.tables["cdrs"] == []
    assert sw.rows("acc") == []


def test_numeric_flags_match_their_configured_text():
    """setflag: 1 matches accounting.flag "1", as Kamailio's #!define FLT_ACC 1."""
    route = copy.deepcopy(ROUTE)
    block = route["request_route"][1]["then"]
    block[block.index({"do_accounting": ["db", "missed"]})] = {"setflag": 1}
    sw = Switch(route=route, accounting={"flag": "1"})
    call = sw.call()
    call.start()
    call.answer()
    assert methods(sw.rows("acc")) == [("INVITE", "200", "OK")]


def test_route_reply_after_do_accounting_is_accounted():
    """An INVITE the route itself rejects after do_accounting(db, missed) is a missed call."""
    route = copy.deepcopy(ROUTE)
    block = route["request_route"][1]["then"]
    block.insert(1, {"do_accounting": ["db", "missed"]})
    sw = Switch(route=route, capacity=0)
    assert sw.call().start() is None
    assert methods(sw.rows("missed_calls")) == [("INVITE", "503", "No Capacity")]


def test_one_cdr_per_answered_call_with_duration_and_setup_time():
    """The CDR of an answered call: start at the 200, end at the BYE, duration in seconds with
    milliseconds, setup time from INVITE to 200, the final reply and the extras."""
    sw = Switch()
    call = sw.call(from_user="dave")
    call.start()
    call.ring()
    sw.advance(2.0)
    call.answer()
    sw.advance(12.345)
    call.hangup()
    (cdr,) = sw.rows("cdrs")
    assert cdr["duration"] == 12.345 and cdr["setuptime"] == 2
    assert cdr["end_time"] - cdr["start_time"] == datetime.timedelta(seconds=12.345)
    assert (cdr["callid"], cdr["from_tag"], cdr["to_tag"]) == (call.call_id, call.from_tag,
                                                               call.to_tag)
    assert (cdr["sip_code"], cdr["sip_reason"], cdr["src_user"]) == ("200", "OK", "dave")


def test_unanswered_calls_have_no_cdr():
    """Busy and cancelled calls write no CDR."""
    sw = Switch()
    busy = sw.call()
    busy.start()
    busy.answer(486, "Busy Here")
    cancelled = sw.call()
    cancelled.start()
    cancelled.cancel()
    assert sw.rows("cdrs") == []


def test_timed_out_dialog_gets_its_cdr_and_the_seeds_dialog_timeout_record():
    """A dialog ended by its timeout has a CDR lasting the timeout, and acc gets the seed's
    local_route record "200 Dialog Timeout" for sipdisp's own BYE."""
    sw = Switch(dialog={"default_timeout": 90.0})
    call = sw.call()
    call.start()
    call.answer()
    sw.advance(91)
    (cdr,) = sw.rows("cdrs")
    assert cdr["duration"] == 90.0
    assert methods(sw.rows("acc")) == [("INVITE", "200", "OK"), ("BYE", "200", "Dialog Timeout")]


def test_local_bye_record_can_be_turned_off():
    """accounting.local_bye false: the timeout writes the CDR only."""
    sw = Switch(dialog={"default_timeout": 90.0}, accounting={"local_bye": False})
    call = sw.call()
    call.start()
    call.answer()
    sw.advance(91)
    assert methods(sw.rows("acc")) == [("INVITE", "200", "OK")] and len(sw.rows("cdrs")) == 1


def test_acc_cdrs_table_gets_times_only():
    """cdr_table acc_cdrs (Kamailio's): start, end and duration, nothing else."""
    sw = Switch(accounting={"cdr_table": "acc_cdrs"})
    call = sw.call()
    call.start()
    call.answer()
    sw.advance(1.5)
    call.hangup()
    (cdr,) = sw.rows("acc_cdrs")
    assert set(cdr) == {"start_time", "end_time", "duration"} and cdr["duration"] == 1.5


def test_acc_db_request_writes_a_record_with_the_given_status():
    """acc_db_request("200 Dialog Timeout", acc) writes that code and reason for the request."""
    route = {"request_route": [{"acc_db_request": ["200 Dialog Timeout", "acc"]},
                               {"sl_send_reply": [404, "Not here"]}]}
    sw = Switch(route=route)
    sw.uac.send(sipmsg.request("BYE", "sip:bob@127.0.0.1", via_host="10.0.0.1", to_tag="t"))
    assert methods(sw.rows("acc")) == [("BYE", "200", "Dialog Timeout")]


def test_values_longer_than_their_column_are_cut_not_lost():
    """A 300-character user goes in cut to src_user's 64 characters."""
    sw = Switch()
    call = sw.call(from_user="u" * 300)
    call.start()
    call.answer()
    row = sw.rows("acc")[0]
    assert row["src_user"] == "u" * 64


def test_a_write_that_fails_is_counted_and_logged_never_raised():
    """When the storage refuses a record (queue full), the call goes on and the error is counted."""
    errors = []

    class Log:
        def error(self, fmt, **kw):
            errors.append(fmt.format(**kw))

    def refuse(table, row):
        raise RuntimeError("write queue full")
    acc = Accounting(refuse, variables=VARIABLES, log=Log())
    sw = Switch()
    sw.acc.write_record, sw.acc.log = refuse, Log()
    call = sw.call()
    call.start()
    call.answer()
    call.hangup()
    assert sw.acc.stats["errors"] == 3  # INVITE, BYE and the CDR
    assert errors and "write queue full" in errors[0]
    assert acc.stats["errors"] == 0


def test_metrics_count_records_by_table():
    """The metrics hook counts the records queued per table."""
    sw = Switch()
    call = sw.call()
    call.start()
    call.answer()
    call.hangup()
    families = {name: samples for name, _, _, samples in sw.acc.metrics()}
    assert ({"table": "acc"}, 2) in families["sipdisp_acc_records_total"]
    assert ({"table": "cdrs"}, 1) in families["sipdisp_acc_records_total"]
