"""Accounting to the log (Kamailio acc's log_flag, log_missed_flag, log_extra,
log_level, log_facility): lines in Kamailio's acc log format from a proxy core
in memory, acc_log_request, the syslog writer against a unix socket of the
test's own, and the configuration checks."""

import copy
import socket

import pytest

from sipdisp.accounting.acclog import (ANSWERED, AccLog, LoggerWriter, SyslogWriter,
                                       facility_code, format_record, parse_log_extra)
from sipdisp.accounting.service import accounting_from_config
from sipdisp.config import ConfigError
from sipdisp.routing.pv import RouteError
from sipdisp.schema import config_from_dict
from sipdisp.shipped import shipped_functions
from tests.support import sipmsg
from tests.support.calls import ROUTE, Switch

VARIABLES = shipped_functions().variables
SEED_LOG_EXTRA = ("src_user=$fU;src_domain=$fd;src_ip=$si;"
                  "dst_ouser=$tU;dst_user=$rU;dst_domain=$rd")


def kamailio_route():
    """The calls test route with the Kamailio seed's flags instead of do_accounting."""
    route = copy.deepcopy(ROUTE)
    block = route["request_route"][1]["then"]
    block[block.index({"do_accounting": ["db", "missed"]})] = {"setflag": "FLT_ACC"}
    block.insert(0, {"setflag": "FLT_ACCMISSED"})
    bye = route["request_route"][0]["then"][0]["then"][0]
    bye["then"] = [{"setflag": "FLT_ACC"}, {"setflag": "FLT_ACCFAILED"}]
    return route


def switch(lines, **acclog):
    """A Switch whose acc log lines go to ``lines`` (the seed's flags and extras)."""
    params = dict(flag="FLT_ACC", missed_flag="FLT_ACCMISSED", extra=SEED_LOG_EXTRA)
    params.update(acclog)
    log = AccLog(lines.append, VARIABLES, **params)
    return Switch(route=kamailio_route(), accounting={"acclog": log,
                                                     "failed_flag": "FLT_ACCFAILED"})


def fields(line):
    """``ACC: ...: a=1;b=2`` -> (the text, {a: 1, b: 2})."""
    text, _, rest = line.rpartition(": ")
    return text + ": ", dict(p.split("=", 1) for p in rest.split(";"))


def test_answered_call_writes_kamailio_acc_lines_and_no_database_rows():
    """INVITE 200 and BYE 200 become 'ACC: transaction answered' lines with the core
    attributes and the seed's log_extra, and nothing goes to the database."""
    lines = []
    sw = switch(lines)
    call = sw.call(user="1000", from_user="alice")
    call.start()
    call.answer()
    sw.advance(2)
    call.hangup()
    assert len(lines) == 2
    text, invite = fields(lines[0])
    assert text == ANSWERED
    assert lines[0].startswith("ACC: transaction answered: timestamp=1000;method=INVITE;")
    assert list(invite)[:7] == ["timestamp", "method", "from_tag", "to_tag", "call_id",
                               "code", "reason"]
    assert (invite["from_tag"], invite["to_tag"], invite["call_id"]) == \
        (call.from_tag, call.to_tag, call.call_id)
    assert (invite["code"], invite["reason"]) == ("200", "OK")
    assert (invite["src_user"], invite["src_ip"], invite["dst_user"]) == \
        ("alice", "10.0.0.1", "1000")
    _, bye = fields(lines[1])
    assert (bye["method"], bye["timestamp"]) == ("BYE", "1002")
    assert sw.rows("acc") == [] and sw.rows("missed_calls") == []
    assert sw.acc.stats["log"] == 2


def test_failed_invite_is_a_call_missed_line_only():
    """A 486 with FLT_ACCMISSED: one 'ACC: call missed' line, no 'transaction answered'."""
    lines = []
    sw = switch(lines)
    call = sw.call()
    call.start()
    call.answer(486, "Busy Here")
    assert len(lines) == 1 and lines[0].startswith("ACC: call missed: ")
    _, rec = fields(lines[0])
    assert (rec["code"], rec["reason"]) == ("486", "Busy Here")


def test_without_log_flags_nothing_is_logged():
    """accounting.log_flag null (the default): setflag FLT_ACC writes no line."""
    lines = []
    sw = switch(lines, flag=None, missed_flag=None)
    call = sw.call()
    call.start()
    call.answer()
    call.hangup()
    assert lines == []


def test_acc_log_request_writes_a_log_line_not_a_row():
    """acc_log_request: "200 Dialog Timeout" writes 'ACC: request accounted' and no acc row."""
    lines = []
    log = AccLog(lines.append, VARIABLES)
    route = {"request_route": [{"acc_log_request": "200 Dialog Timeout"},
                               {"sl_send_reply": [404, "Not here"]}]}
    sw = Switch(route=route, accounting={"acclog": log})
    sw.uac.send(sipmsg.request("BYE", "sip:bob@127.0.0.1", via_host="10.0.0.1", to_tag="t"))
    assert len(lines) == 1 and lines[0].startswith("ACC: request accounted: timestamp=")
    _, rec = fields(lines[0])
    assert (rec["method"], rec["code"], rec["reason"]) == ("BYE", "200", "Dialog Timeout")
    assert sw.rows("acc") == []


def test_format_record_is_kamailios():
    """format_record writes text, timestamp then ;name=value pairs, values as given."""
    line = format_record(ANSWERED, 1700000000.9, [("method", "INVITE"), ("code", "200")])
    assert line == "ACC: transaction answered: timestamp=1700000000;method=INVITE;code=200"


def test_log_extra_refuses_core_names_repeats_and_unknown_variables():
    """log_extra pairs are free names, but not a core attribute, twice, or an unknown $pv."""
    assert [n for n, _ in parse_log_extra(SEED_LOG_EXTRA, VARIABLES)][:2] == \
        ["src_user", "src_domain"]
    for bad, why in (("code=$fU", "written by sipdisp"), ("a=$si;a=$si", "twice"),
                     ("a=$nope", "unknown"), ("a", "name=")):
        with pytest.raises(RouteError, match=why):
            parse_log_extra(bad, VARIABLES)


def test_syslog_writer_sends_rfc3164_with_the_facility_to_a_unix_socket(tmp_path):
    """LOG_LOCAL0 at notice is PRI 133; the line arrives whole on the socket."""
    path = str(tmp_path / "log.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    try:
        writer = SyslogWriter("LOG_LOCAL0", "notice", path, pid=42)
        writer("ACC: transaction answered: timestamp=1;method=INVITE")
        data = server.recv(4096).decode()
        assert data == "<133>sipdisp[42]: ACC: transaction answered: timestamp=1;method=INVITE"
        writer.close()
    finally:
        server.close()


def test_syslog_writer_counts_a_line_it_cannot_send(tmp_path):
    """No syslog listening: the line is counted as dropped, nothing raises."""
    writer = SyslogWriter("LOG_DAEMON", "info", str(tmp_path / "nobody.sock"))
    writer("ACC: call missed: timestamp=1")
    assert writer.dropped == 1
    writer.close()


def test_logger_writer_logs_notice_at_info():
    """Into sipdisp's own log, notice (Kamailio's default) is logged at info."""
    events = []

    class Log:
        def emit(self, level, fmt, **kw):
            events.append((level.name, fmt.format(**kw)))
    LoggerWriter("notice", logger=Log())("ACC: x")
    LoggerWriter("error", logger=Log())("ACC: y")
    assert events == [("info", "ACC: x"), ("error", "ACC: y")]


def test_config_checks_facility_address_and_extra():
    """An unknown facility, a bad syslog address and a bad log_extra are one-line errors naming the key."""
    assert facility_code("LOG_LOCAL0") == 16 and facility_code("daemon") == 3
    for section, where in (({"log_facility": "LOG_NOPE"}, "accounting.log_facility"),
                           ({"syslog_address": "nowhere"}, "accounting.syslog_address"),
                           ({"log_extra": "x=$nope"}, "accounting.log_extra")):
        with pytest.raises(ConfigError) as info:
            config_from_dict({"accounting": section})
        assert str(info.value).startswith(where + ":")


def test_accounting_from_config_builds_the_log_accounting():
    """The accounting section's log keys reach the AccLog the service builds."""
    cfg = config_from_dict({"accounting": {"log_flag": "FLT_ACC", "log_missed_flag": "2",
                                           "log_extra": "src_ip=$si"}})
    acc = accounting_from_config(cfg, lambda t, r: None, VARIABLES)
    assert acc.acclog.flags == {"FLT_ACC"} and acc.acclog.missed_flags == {"2"}
    assert [n for n, _ in acc.acclog.extra] == ["src_ip"]
    assert isinstance(acc.acclog.writer, LoggerWriter)
