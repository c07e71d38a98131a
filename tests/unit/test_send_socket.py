"""The listener a request leaves from: force_send_socket in the route, and the
socket column of a dispatcher destination (OpenSIPS' table), in the in-memory
UAC <-> proxy <-> UAS harness with two UDP listeners."""

from sipdisp.proxy import Listener, ProxyCore
from sipdisp.routing import Env, Modules, compile_routing
from sipdisp.shipped import shipped_functions
from sipdisp.sip import parse_message
from tests.support import sipmsg
from tests.support.harness import Link
from tests.support.shipped import shipped_route

FIRST = Listener("udp0", "udp", "127.0.0.1", 5060)
SECOND = Listener("udp1", "udp", "127.0.0.1", 5070)


def link_with(route_spec=None):
    """A proxy listening on UDP 127.0.0.1:5060 and :5070, the UAS at 127.0.0.1:5080."""
    link = Link(ProxyCore([FIRST, SECOND], None))
    if route_spec is not None:
        link.core.modules = Modules()
        link.core.route = compile_routing(
            route_spec, Env(shipped_functions(), link.core.modules, core=link.core)).request_route
    link.uac = link.add_peer("uac", "udp", "10.0.0.1", 5070, FIRST)
    link.uas = link.add_peer("uas", "udp", "127.0.0.1", 5080, FIRST)
    return link


def sent_from(link, method):
    """The listener the core sent the last ``method`` request from."""
    for data, target in reversed(link.sent_by_core):
        if data.startswith(method.encode()):
            return target.listener
    raise AssertionError(f"no {method} sent")


def test_force_send_socket_picks_the_named_listener():
    """force_send_socket: udp:127.0.0.1:5070 sends from that listener, with its Via."""
    link = link_with({"request_route": [{"force_send_socket": "udp:127.0.0.1:5070"},
                                        {"set": {"$du": "sip:127.0.0.1:5080"}}, "t_relay"]})
    link.uac.send(sipmsg.request("INVITE", "sip:bob@127.0.0.1:5060"))
    fwd = parse_message(link.uas.expect("INVITE"))
    assert sent_from(link, "INVITE") is SECOND
    assert fwd.via.port == 5070


def test_without_it_the_first_listener_of_the_family_sends():
    """No send socket: the listener the address family picks, as before."""
    link = link_with({"request_route": [{"set": {"$du": "sip:127.0.0.1:5080"}}, "t_relay"]})
    link.uac.send(sipmsg.request("INVITE", "sip:bob@127.0.0.1:5060"))
    link.uas.expect("INVITE")
    assert sent_from(link, "INVITE") is FIRST


def test_force_send_socket_naming_no_listener_is_false():
    """A socket that is no listen address leaves the choice to the core and is false."""
    link = link_with({"request_route": [
        {"if": {"not": {"force_send_socket": "udp:127.0.0.1:5999"}},
         "then": [{"sl_send_reply": [500, "No such socket"]}, "exit"]}]})
    link.uac.send(sipmsg.request("OPTIONS", "sip:bob@127.0.0.1:5060"))
    assert parse_message(link.uac.expect(500)).reason == "No such socket"


def test_a_dispatcher_destination_sends_from_its_socket_column():
    """An OpenSIPS-table destination with socket udp:127.0.0.1:5070 is reached from
    that listener; one without a socket from the default listener."""
    link = link_with()
    dispatcher = shipped_route(link.core, ["sip:127.0.0.1:5080"])
    dispatcher.load([{"setid": 0, "destination": "sip:127.0.0.1:5080", "flags": 0,
                      "priority": 0, "attrs": "", "socket": "udp:127.0.0.1:5070"}])
    link.uac.send(sipmsg.request("INVITE", "sip:bob@127.0.0.1:5060"))
    link.uas.expect("INVITE")
    assert sent_from(link, "INVITE") is SECOND
    dispatcher.load([{"setid": 0, "destination": "sip:127.0.0.1:5080", "flags": 0,
                      "priority": 0, "attrs": ""}])
    link.uac.send(sipmsg.request("INVITE", "sip:bob@127.0.0.1:5060", call_id="second@x"))
    link.uas.expect("INVITE")
    assert sent_from(link, "INVITE") is FIRST
