"""Prometheus /metrics: the core's counters and the modules' hooks, in a
format the prometheus_client parser reads."""

import pytest
from twisted.logger import globalLogPublisher

from sipdisp.console.metrics import CONTENT_TYPE, Family, MetricsCollector
from sipdisp.console.web import make_site
from sipdisp.proxy.target import Listener, Target
from tests.support.console import HttpClient, make_root
from tests.support.sipmsg import request

parser = pytest.importorskip("prometheus_client.parser",
                             reason="prometheus_client is a test dependency")


def scrape(root):
    """Every sample of /metrics as {(name, sorted labels): value}."""
    text = MetricsCollector(root).render()
    out = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def families(root):
    """The parsed families by name."""
    text = MetricsCollector(root).render()
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


@pytest.fixture
def root(tmp_path):
    root = make_root(tmp_path)
    root.sip.core.set_listeners([Listener(1, "udp", "127.0.0.1", 5060)])
    return root


def feed(root, data, port=5070):
    core = root.sip.core
    return core.receive(data, Target("udp", "127.0.0.1", port, None, core.listeners[0]), 0.0)


def test_output_parses_and_declares_types(root):
    """The page parses and every family has its counter or gauge type."""
    fams = families(root)
    assert fams["sipdisp_sip_requests_received"].type == "counter"
    assert fams["sipdisp_transactions"].type == "gauge"
    assert fams["sipdisp_errors"].type == "counter"
    assert fams["sipdisp_build_info"].samples[0].value == 1


def test_counters_move_with_sip_traffic(root):
    """An OPTIONS to the proxy counts one request received and one reply sent with its status."""
    before = scrape(root)
    assert ("sipdisp_sip_requests_received_total", (("method", "OPTIONS"),)) not in before
    out = feed(root, request("OPTIONS", "sip:127.0.0.1:5060"))
    replies = [data for data, _ in out if data.startswith(b"SIP/2.0 ")]
    assert len(replies) == 1, "the proxy answered once"
    status = replies[0].split()[1].decode()
    after = scrape(root)
    assert after[("sipdisp_sip_requests_received_total", (("method", "OPTIONS"),))] == 1
    assert after[("sipdisp_sip_replies_sent_total", (("status", status),))] == 1


def test_relayed_messages_are_counted_by_method_and_status(root):
    """A relayed INVITE counts as sent, its 100 Trying as a reply sent, the answer as received."""
    invite = request("INVITE", "sip:bob@example.com")
    sent = feed(root, invite)
    samples = scrape(root)
    assert samples[("sipdisp_sip_requests_received_total", (("method", "INVITE"),))] == 1
    assert samples[("sipdisp_sip_requests_sent_total", (("method", "INVITE"),))] == 1
    assert samples[("sipdisp_sip_replies_sent_total", (("status", "100"),))] == 1
    assert samples[("sipdisp_transactions", (("kind", "server"),))] == 1
    assert samples[("sipdisp_transactions", (("kind", "client"),))] == 1
    relayed = [data for data, target in sent if data.startswith(b"INVITE")][0]
    from tests.support.sipmsg import response_to
    feed(root, response_to(relayed, 486, "Busy Here"), port=5080)
    samples = scrape(root)
    assert samples[("sipdisp_sip_replies_received_total", (("status", "486"),))] == 1


def test_unknown_methods_share_one_label(root):
    """Invented methods are counted under OTHER, so labels cannot grow without bound."""
    for method in ("FOO", "BAR", "BAZ"):
        feed(root, request(method, "sip:127.0.0.1:5060"))
    samples = scrape(root)
    assert samples[("sipdisp_sip_requests_received_total", (("method", "OTHER"),))] == 3
    assert not [k for k in samples if ("method", "FOO") in k[1]]


def test_parse_errors_are_counted_by_kind(root):
    """A garbage datagram counts under sipdisp_errors_total{kind="parse"}."""
    feed(root, b"this is not SIP\r\n\r\n")
    assert scrape(root)[("sipdisp_errors_total", (("kind", "parse"),))] == 1


def test_other_core_counters_appear_as_events(root):
    """Counters without a metric of their own appear in sipdisp_core_events_total."""
    root.sip.core.stats["fwd_requests_stateless"] += 4
    assert scrape(root)[("sipdisp_core_events_total",
                         (("event", "fwd_requests_stateless"),))] == 4


class Dialogs:
    """A module exposing the metrics hook."""

    def metrics(self):
        yield ("dialogs", "gauge", "Dialogs by state.",
               [({"state": "confirmed"}, 3), ({"state": 'early "x"\\\n'}, 1)])
        yield Family("sipdisp_registered_contacts", "gauge", "Contacts.", 7)


class Broken:
    """A module whose hook raises."""

    def metrics(self):
        raise RuntimeError("no")


def test_module_hooks_add_gauges_with_escaped_labels(root):
    """A module's metrics() families appear, prefixed, with label values escaped."""
    root.modules.dialogs = Dialogs()
    samples = scrape(root)
    assert samples[("sipdisp_dialogs", (("state", "confirmed"),))] == 3
    assert samples[("sipdisp_dialogs", (("state", 'early "x"\\\n'),))] == 1
    assert samples[("sipdisp_registered_contacts", ())] == 7


def test_a_broken_hook_is_fenced_logged_and_counted(root):
    """A hook that raises is logged and counted; the other metrics still render."""
    root.modules.dispatcher, root.modules.dialogs = Broken(), Dialogs()
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        samples = scrape(root)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert samples[("sipdisp_metrics_hook_errors_total", (("module", "dispatcher"),))] == 1
    assert samples[("sipdisp_dialogs", (("state", "confirmed"),))] == 3
    assert any(e.get("log_failure") is not None for e in events)


class FakeStorage:
    """What the collector reads of a Storage."""

    queue_depth = 12
    state = "disconnected"

    def stats(self):
        return {"queue_depth": 12, "spool_pending": 3, "state": self.state}


def test_storage_queue_depth_and_state(root):
    """A storage module gives the write queue depth, spool backlog and connection state."""
    root.modules.storage = FakeStorage()
    samples = scrape(root)
    assert samples[("sipdisp_db_queue_depth", ())] == 12
    assert samples[("sipdisp_db_spool_pending", ())] == 3
    assert samples[("sipdisp_db_up", ())] == 0


def test_family_rejects_bad_names_and_kinds():
    """Metric and label names are checked, and kinds are counter or gauge."""
    with pytest.raises(ValueError):
        Family("bad name", "gauge", "x", 1)
    with pytest.raises(ValueError):
        Family("ok", "histogram", "x", 1)
    with pytest.raises(ValueError):
        Family("ok", "gauge", "x", [({"bad-label": "v"}, 1)])


def test_special_float_values_render_as_prometheus_expects():
    """NaN and infinities are written NaN, +Inf and -Inf."""
    out = []
    Family("x", "gauge", "h", [({"a": "1"}, float("nan")), ({"a": "2"}, float("inf")),
                               ({"a": "3"}, float("-inf")), ({"a": "4"}, 2.5)]).render(out)
    assert out[2:] == ['sipdisp_x{a="1"} NaN', 'sipdisp_x{a="2"} +Inf',
                       'sipdisp_x{a="3"} -Inf', 'sipdisp_x{a="4"} 2.5']


def test_metrics_are_served_over_http_with_the_text_content_type(root):
    """GET /metrics answers 200 with the Prometheus text content type."""
    response = HttpClient(make_site(root)).request("GET", "/metrics")
    assert response.status == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    assert b"# TYPE sipdisp_sip_requests_received_total counter" in response.body


def test_dispatcher_destination_states_from_its_list_command(root):
    """Without a hook, the dispatcher's destinations and states come from dispatcher.list."""
    class Dispatcher:
        """A dispatcher module without a metrics() hook."""
    root.modules.dispatcher = Dispatcher()
    root.registry.register("dispatcher.list", lambda: {"NRSETS": 1, "RECORDS": [
        {"SET": {"ID": 1, "TARGETS": [
            {"DEST": {"URI": "sip:10.0.0.1:5060", "FLAGS": "AP"}},
            {"DEST": {"URI": "sip:10.0.0.2:5060", "FLAGS": "IP"}},
            {"DEST": {"URI": "sip:10.0.0.3:5060", "FLAGS": "DX"}}]}}]})
    samples = scrape(root)
    assert samples[("sipdisp_dispatcher_destinations", (("set", "1"), ("state", "active")))] == 1
    assert samples[("sipdisp_dispatcher_destinations", (("set", "1"), ("state", "inactive")))] == 1
    assert samples[("sipdisp_dispatcher_destinations", (("set", "1"), ("state", "disabled")))] == 1
    assert samples[("sipdisp_dispatcher_destinations", (("set", "1"), ("state", "trying")))] == 0
    up = ("sipdisp_dispatcher_destination_up", (("set", "1"), ("uri", "sip:10.0.0.2:5060")))
    assert samples[up] == 0
    probing = ("sipdisp_dispatcher_destination_probing", (("set", "1"),
                                                          ("uri", "sip:10.0.0.3:5060")))
    assert samples[probing] == 0


def test_real_dispatcher_module_renders(root):
    """The service tree's own dispatcher (if wired) renders without a hook error."""
    samples = scrape(root)
    assert samples.get(("sipdisp_metrics_hook_errors_total", (("module", "dispatcher"),)), 0) == 0
