"""etc/examples/opensips-seed.yaml, the OpenSIPS seed as a sipdisp config, run
by the whole service tree in memory: calls from outside go to FreeSWITCH
group 1, calls from group 3 to registered users, REGISTER is challenged, and
INVITE and BYE are accounted."""

import pytest
import yaml
from twisted.internet.task import Clock

from sipdisp.schema import config_from_dict, load_config
from sipdisp.proxy import Listener, Target
from sipdisp.service import make_service
from sipdisp.sip import parse_message
from tests.support import sipmsg
from tests.support.processes import ROOT

EXAMPLE = ROOT / "etc" / "examples" / "opensips-seed.yaml"
FS1, FS3 = ("127.0.0.1", 5081), ("127.0.0.1", 5091)


def test_the_example_loads_with_the_seeds_values():
    """The example is a valid config carrying the seed's timers, dialog and probing values."""
    cfg = load_config(str(EXAMPLE))
    assert (cfg.sip.fr_timer, cfg.sip.fr_inv_timer) == (5.0, 30.0)
    assert (cfg.dialog.default_timeout, cfg.dialog.db_mode) == (21600.0, 2)
    assert cfg.load_balancer.source == "db" and cfg.load_balancer.probing_method == "INFO"
    assert cfg.load_balancer.probing_reply_codes == "501, 403"
    assert cfg.registrar.max_contacts == 1 and cfg.usrloc.db_mode == 2


@pytest.fixture
def seed():
    """The example's service tree on 127.0.0.1:5060 with the seed's rows as config
    destinations (group 1 at FS1, group 3 at FS3) and storage in memory."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["listen"] = {"udp": ["127.0.0.1:5060"], "tcp": [], "ws": []}
    raw["storage"] = {"url": "memory://opensips-seed"}
    raw["dispatcher"] = {"source": "file", "list_file": "/nonexistent/dispatcher.list"}
    raw["auth"]["domain_table"] = False
    raw["console"] = {"enabled": False}
    raw["http"] = {"enabled": False}
    raw["load_balancer"]["source"] = "config"
    raw["load_balancer"]["destinations"] = [
        {"id": 1, "group": 1, "uri": "sip:%s:%d" % FS1,
         "resources": "vm=100;conf=100;transc=100;pstn=500", "probe_mode": 1},
        {"id": 4, "group": 3, "uri": "sip:%s:%d" % FS3,
         "resources": "vm=100;conf=100;transc=100;pstn=500", "probe_mode": 1}]
    root = make_service(config_from_dict(raw), reactor=Clock())
    core = root.sip.core
    listener = Listener("udp0", "udp", "127.0.0.1", 5060)
    core.set_listeners([listener])
    return root, core, listener


def send(core, listener, data, source, now=100.0):
    out = core.receive(data, Target("udp", source[0], source[1], None, listener), now)
    return [(parse_message(raw), (t.host, t.port)) for raw, t in out]


def test_a_call_from_outside_goes_to_group_1_and_is_accounted(seed):
    """An INVITE from a carrier (From not local) reaches FS1 with Record-Route, its dialog
    counts on FS1's pstn, and the 200 and the BYE give acc rows and a CDR."""
    root, core, listener = seed
    written = []
    root.modules.accounting.write_record = lambda table, row: written.append((table, row))
    carrier = ("10.1.1.1", 5060)
    invite = sipmsg.request("INVITE", "sip:1000@127.0.0.1:5060", via_host=carrier[0],
                            via_port=carrier[1], extra=["Contact: <sip:pstn@10.1.1.1>"])
    invite = invite.replace(b"sip:alice@example.com", b"sip:0800@pstn.example.net")
    out = send(core, listener, invite, carrier)
    forwarded = [(m, to) for m, to in out if m.is_request]
    assert [(m.method, to) for m, to in forwarded] == [("INVITE", FS1)]
    assert forwarded[0][0].has("record-route")
    lb = root.modules.load_balancer
    assert lb.load_of(lb.by_id[1], "pstn") == 1
    ok = sipmsg.response_to(forwarded[0][0].to_bytes(), 200, "OK", to_tag="fs",
                            extra=[("contact", "<sip:fs@127.0.0.1:5081>")])
    send(core, listener, ok, FS1, now=101.0)
    bye = sipmsg.in_dialog("BYE", "sip:fs@127.0.0.1:5081",
                           list(reversed(parse_message(ok).values("record-route"))),
                           to_tag="fs", call_id=parse_message(invite).call_id,
                           via_host=carrier[0], via_port=carrier[1], cseq=2)
    out = send(core, listener, bye, carrier, now=131.0)
    (fwd_bye,) = [m for m, to in out if m.is_request]
    send(core, listener, sipmsg.response_to(fwd_bye.to_bytes(), 200, "OK", to_tag=None), FS1,
         now=131.0)
    tables = [(t, r.get("method"), r.get("sip_code")) for t, r in written]
    assert tables == [("acc", "INVITE", "200"), ("cdrs", None, "200"), ("acc", "BYE", "200")]
    assert [r for t, r in written if t == "cdrs"][0]["duration"] == 30.0
    assert lb.load_of(lb.by_id[1], "pstn") == 0


def test_a_call_from_a_group_3_freeswitch_looks_the_user_up(seed):
    """An INVITE from the external FreeSWITCH (group 3) for an unregistered user gets 404."""
    root, core, listener = seed
    invite = sipmsg.request("INVITE", "sip:1001@127.0.0.1:5060", via_host=FS3[0],
                            via_port=FS3[1])
    out = send(core, listener, invite, FS3)
    assert [(m.status, m.reason) for m, to in out if not m.is_request][-1] == (404, "Not Found")
    assert root.modules.dialogs.dialogs == {}


def test_register_is_challenged_with_www_authenticate(seed):
    """A REGISTER without credentials gets the seed's www_challenge: 401 with a digest challenge."""
    root, core, listener = seed
    register = sipmsg.request("REGISTER", "sip:127.0.0.1", via_host="10.2.2.2", via_port=5062)
    register = register.replace(b"sip:bob@example.com", b"sip:alice@127.0.0.1")
    out = send(core, listener, register, ("10.2.2.2", 5062))
    (reply,) = [m for m, to in out if not m.is_request]
    assert reply.status == 401 and reply.get("www-authenticate").startswith("Digest")


def test_a_local_caller_must_authenticate(seed):
    """An INVITE claiming a local From (the proxy's own domain) gets the seed's 407 challenge."""
    root, core, listener = seed
    invite = sipmsg.request("INVITE", "sip:1000@127.0.0.1:5060", via_host="10.2.2.2")
    invite = invite.replace(b"sip:alice@example.com", b"sip:alice@127.0.0.1")
    out = send(core, listener, invite, ("10.2.2.2", 5070))
    assert [m.status for m, to in out if not m.is_request][-1] == 407
