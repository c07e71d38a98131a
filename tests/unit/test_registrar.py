"""REGISTER processing and lookup through the built-in route (RFC 3261 10.3,
RFC 3327, RFC 5626): bindings added, refreshed and removed, expiry on the
clock, the 200's Contact list, limits, and parallel forking to contacts."""

import pytest

from sipdisp.registrar import RegistrarParams, process_register
from sipdisp.registrar.registrar import parse_save_flags
from sipdisp.registrar.usrloc import Location
from sipdisp.sip import parse_message
from sipdisp.proxy.target import Target
from tests.support.registrar import Stack, final, invite, requests, responses

NODE = ("127.0.0.1", 5080)
NODES = [(0, "sip:127.0.0.1:5090"), (1, "sip:127.0.0.1:5080")]


def stack(**config):
    """The built-in route, without authentication, with one FreeSWITCH node calling from 5080."""
    return Stack(config, rows=NODES)


def contacts(resp):
    """``{uri: expires}`` of a 200's Contact headers."""
    out = {}
    for addr in resp.addresses("contact"):
        out[str(addr.uri)] = int(addr.param("expires"))
    return out


def test_register_adds_a_binding_and_lists_it_with_its_expiry():
    """A REGISTER is answered 200 listing the contact with expires=3600 (the default) and a Date."""
    s = stack()
    resp = s.ua("alice").register()
    assert resp.status == 200
    assert contacts(resp) == {"sip:alice@10.0.0.1:5070": 3600}
    assert resp.get("date")
    assert s.location.count == 1


def test_retransmitted_register_gets_the_same_200_until_timer_j():
    """A REGISTER retransmitted within Timer J (32 s) gets the first 200 again, byte for
    byte, without the registrar running again; once Timer J ran out the table is empty
    and the same REGISTER is a new request (the registrar refuses its old CSeq)."""
    s = stack()
    ua = s.ua("alice")
    data = ua.register_bytes()
    s.out.extend(s.core.receive(data, Target("udp", "10.0.0.1", 5070, None, s.udp), s.now))
    first, = s.out
    s.out = []
    registers = s.registrar.stats["registers"]
    s.advance(31.0)
    again = s.core.receive(data, Target("udp", "10.0.0.1", 5070, None, s.udp), s.now)
    assert [d for d, _ in again] == [first[0]] and again[0][1].port == 5070
    assert s.registrar.stats["registers"] == registers
    assert s.core.stats["absorbed_retransmissions"] == 1 and len(s.core.layer.servers) == 1
    s.advance(1.0)
    assert s.core.layer.servers == {} and s.core.next_deadline() is not None  # usrloc's timer
    resp = final(s.send(data))
    assert resp.status == 400 and s.registrar.stats["registers"] == registers + 1


def test_refresh_keeps_one_binding_and_restarts_its_expiry():
    """Re-registering the same contact 100 s later updates it instead of adding another."""
    s = stack()
    ua = s.ua("alice")
    ua.register(expires=600)
    s.advance(100)
    resp = ua.register(expires=600)
    assert contacts(resp) == {"sip:alice@10.0.0.1:5070": 600}
    assert s.location.count == 1


def test_two_devices_are_both_listed_and_expires_zero_removes_one():
    """Two contacts of one AOR are both listed; Expires: 0 on one removes only it."""
    s = stack()
    s.ua("alice", host="10.0.0.1").register()
    resp = s.ua("alice", host="10.0.0.2").register()
    assert set(contacts(resp)) == {"sip:alice@10.0.0.1:5070", "sip:alice@10.0.0.2:5070"}
    resp = s.ua("alice", host="10.0.0.2").register(expires=0)
    assert set(contacts(resp)) == {"sip:alice@10.0.0.1:5070"}


def test_contact_star_with_expires_zero_removes_every_binding():
    """Contact: * with Expires: 0 removes all bindings; without Expires: 0 it is a 400."""
    s = stack()
    s.ua("alice", host="10.0.0.1").register()
    s.ua("alice", host="10.0.0.2").register()
    ua = s.ua("alice", host="10.0.0.3")
    assert final(ua.send(ua.register_bytes(contact="*"))).status == 400
    resp = final(ua.send(ua.register_bytes(contact="*", expires=0)))
    assert resp.status == 200 and not resp.has("contact")
    assert s.location.count == 0


def test_register_without_contact_queries_the_bindings():
    """A REGISTER without Contact changes nothing and lists the current bindings."""
    s = stack()
    s.ua("alice").register()
    ua = s.ua("alice", host="10.0.0.9")
    resp = final(ua.send(ua.register_bytes(contact="")))
    assert list(contacts(resp)) == ["sip:alice@10.0.0.1:5070"]


def test_expires_below_min_is_423_with_min_expires_and_above_max_is_cut():
    """Expires 30 is answered 423 with Min-Expires: 60; 7200 is granted as 3600."""
    s = stack()
    ua = s.ua("alice")
    resp = ua.register(expires=30)
    assert resp.status == 423 and resp.get("min-expires") == "60"
    assert contacts(ua.register(expires=7200)) == {"sip:alice@10.0.0.1:5070": 3600}


def test_contact_expires_parameter_wins_over_the_header():
    """A Contact's expires parameter overrides the Expires header."""
    s = stack()
    resp = s.ua("alice").register(contact="<sip:alice@10.0.0.1:5070>;expires=120", expires=900)
    assert contacts(resp) == {"sip:alice@10.0.0.1:5070": 120}


def test_bindings_expire_on_the_clock():
    """A binding is listed until its expiry and gone after it; the timer sweep frees it."""
    s = stack(usrloc={"timer_interval": 10})
    s.ua("alice").register(expires=60)
    out = s.send(invite("sip:alice@example.com"), source=NODE)
    assert requests(out, "INVITE")
    s.advance(61)
    out = s.send(invite("sip:alice@example.com"), source=NODE)
    assert final(out).status == 404
    assert s.location.count == 0 and s.location.stats["expired"] == 1


def test_out_of_order_cseq_is_refused():
    """Same Call-ID with a CSeq not above the binding's is refused with 400 (10.3 step 7)."""
    s = stack()
    ua = s.ua("alice")
    ua.register()
    resp = final(ua.send(ua.register_bytes(cseq=1)))
    assert resp.status == 400 and "CSeq" in resp.reason


def test_q_values_order_the_200_and_the_fork():
    """Contacts are listed and forked to best q first."""
    s = stack()
    s.ua("alice", host="10.0.0.1").register(contact="<sip:alice@10.0.0.1:5070>;q=0.2")
    s.ua("alice", host="10.0.0.2").register(contact="<sip:alice@10.0.0.2:5070>;q=0.9")
    out = s.send(invite("sip:alice@example.com"), source=NODE)
    assert [t.host for _, t in requests(out, "INVITE")] == ["10.0.0.2", "10.0.0.1"]


def test_bad_q_is_refused():
    """q=2 is outside 0..1 and answered 400."""
    s = stack()
    assert s.ua("alice").register(contact="<sip:alice@10.0.0.1:5070>;q=2").status == 400


def test_max_contacts_refuses_one_more_or_replaces_the_oldest():
    """Over max_contacts a new contact gets 503; save flag f drops the oldest instead."""
    s = stack(registrar={"max_contacts": 1})
    s.ua("alice", host="10.0.0.1").register()
    resp = s.ua("alice", host="10.0.0.2").register()
    assert resp.status == 503
    s2 = stack(registrar={"max_contacts": 1},
               routing={"routes": {"REGISTRAR": [
                   {"if": {"not": {"is_method": "REGISTER"}}, "then": ["return"]},
                   {"save": ["location", "f"]}, "exit"]}})
    s2.ua("alice", host="10.0.0.1").register()
    s2.advance(1)
    resp = s2.ua("alice", host="10.0.0.2").register()
    assert resp.status == 200 and list(contacts(resp)) == ["sip:alice@10.0.0.2:5070"]


def test_instance_and_reg_id_replace_the_devices_own_binding():
    """A device re-registering from a new address with the same +sip.instance and reg-id
    replaces its binding (RFC 5626); another instance adds one, and Require: outbound is sent."""
    s = stack()
    inst = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
    ua = s.ua("alice", host="10.0.0.1")
    ua.register(contact=f"<sip:alice@10.0.0.1:5070>;+sip.instance={inst};reg-id=1",
                extra=["Supported: outbound, path"])
    ua2 = s.ua("alice", host="10.0.0.7")
    resp = ua2.register(contact=f"<sip:alice@10.0.0.7:5070>;+sip.instance={inst};reg-id=1",
                        extra=["Supported: outbound"])
    assert list(contacts(resp)) == ["sip:alice@10.0.0.7:5070"]
    assert resp.get("require") == "outbound"
    assert 'reg-id=1' in resp.get("contact") and "+sip.instance" in resp.get("contact")
    other = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E129>"'
    resp = s.ua("alice", host="10.0.0.8").register(
        contact=f"<sip:alice@10.0.0.8:5070>;+sip.instance={other};reg-id=1")
    assert len(contacts(resp)) == 2


def test_path_is_stored_echoed_and_used_as_route():
    """Path is echoed when supported, and a call to the user goes through it (RFC 3327)."""
    s = stack()
    resp = s.ua("alice").register(extra=["Path: <sip:edge.example.net:5070;lr>",
                                         "Supported: path"])
    assert resp.get("path") == "<sip:edge.example.net:5070;lr>"
    out = s.send(invite("sip:alice@example.com"), source=NODE)
    fwd, target = requests(out, "INVITE")[0]
    assert fwd.get("route") == "<sip:edge.example.net:5070;lr>"
    assert (target.host, target.port) == ("edge.example.net", 5070)
    assert str(fwd.uri) == "sip:alice@10.0.0.1:5070"


def test_call_forks_in_parallel_to_every_contact():
    """A call from a FreeSWITCH node to a user with three contacts goes to all three at once."""
    s = stack()
    for host in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        s.ua("alice", host=host).register()
    out = s.send(invite("sip:alice@example.com"), source=NODE)
    invites = requests(out, "INVITE")
    assert sorted(t.host for _, t in invites) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert len({m.via.branch for m, _ in invites}) == 3
    assert all(m.get("record-route") for m, _ in invites)


def test_append_branches_off_sends_to_the_best_contact_only():
    """With registrar.append_branches false only the best contact is tried."""
    s = stack(registrar={"append_branches": False})
    s.ua("alice", host="10.0.0.1").register(contact="<sip:alice@10.0.0.1:5070>;q=0.5")
    s.ua("alice", host="10.0.0.2").register()
    out = s.send(invite("sip:alice@example.com"), source=NODE)
    assert [t.host for _, t in requests(out, "INVITE")] == ["10.0.0.2"]


def test_first_2xx_wins_and_the_other_branches_are_cancelled():
    """When one forked branch answers 200 the others get CANCEL and the caller one 200."""
    from tests.support.sipmsg import response_to
    s = stack()
    s.ua("alice", host="10.0.0.1").register()
    s.ua("alice", host="10.0.0.2").register()
    out = s.send(invite("sip:alice@example.com"), source=NODE)
    (f1, t1), (f2, t2) = requests(out, "INVITE")
    s.send(response_to(f1.to_bytes(), 180, "Ringing"), source=(t1.host, t1.port))
    s.send(response_to(f2.to_bytes(), 180, "Ringing"), source=(t2.host, t2.port))
    out = s.send(response_to(f1.to_bytes(), 200, "OK"), source=(t1.host, t1.port))
    assert [m.status for m in responses(out)] == [200]
    assert [(t.host) for _, t in requests(out, "CANCEL")] == ["10.0.0.2"]


def test_unknown_user_is_404_and_unreachable_user_is_480():
    """A user never registered gets 404; one whose only contact's connection closed gets 480."""
    s = stack()
    assert final(s.send(invite("sip:nobody@example.com"), source=NODE)).status == 404
    conn = s.open_conn("tcp", "10.0.0.5", 40000)
    ua = s.ua("alice", host="10.0.0.5", port=40000, proto="tcp", conn=conn)
    assert ua.register().status == 200
    out = s.send(invite("sip:alice@example.com"), source=NODE)
    (_, target), = requests(out, "INVITE")
    assert target.conn == conn
    s.close_conn(conn)
    resp = final(s.send(invite("sip:alice@example.com"), source=NODE))
    assert (resp.status, resp.reason) == (480, "Temporarily Unavailable")


def test_websocket_contact_is_reached_over_its_connection_with_flow_record_route():
    """A .invalid WS contact is reached on the WebSocket it registered from; the
    Record-Route names that flow, so in-dialog requests flow both ways."""
    from tests.support.sipmsg import response_to
    s = stack()
    conn = s.open_conn("ws", "127.0.0.1", 51000)
    ua = s.ua("alice", host="df7jal23ls0d.invalid", port=0, proto="ws", conn=conn,
              contact="<sip:h7kjh@df7jal23ls0d.invalid;transport=ws>")
    ua.host = "127.0.0.1"
    ua.port = 51000
    assert ua.register().status == 200
    out = s.send(invite("sip:alice@example.com"), source=NODE)
    (fwd, target), = requests(out, "INVITE")
    assert target.conn == conn and target.proto == "ws"
    rr = fwd.values("record-route")
    assert rr[0].startswith(f"<sip:sdf-{conn}@127.0.0.1:5062;transport=ws")
    ok = response_to(fwd.to_bytes(), 200, "OK")
    out = s.send(ok, source=("127.0.0.1", 51000), proto="ws", conn=conn)
    caller_ok = responses(out, 200)[0]
    # caller -> callee: the caller's route set is the reversed Record-Route
    routes = list(reversed(caller_ok.values("record-route")))
    bye = invite("sip:h7kjh@df7jal23ls0d.invalid;transport=ws", method="BYE", to_tag="uastag",
                 call_id=fwd.call_id, from_tag=fwd.from_tag,
                 extra=[f"Route: {r}" for r in routes])
    (_, t), = requests(s.send(bye, source=NODE), "BYE")
    assert t.conn == conn
    # callee -> caller over the WebSocket, back to the UDP caller
    bye2 = invite("sip:bob@127.0.0.1:5080", method="BYE", to_tag=fwd.from_tag,
                  from_tag="uastag", call_id=fwd.call_id, via=("127.0.0.1", 51000), extra=[f"Route: {r}" for r in fwd.values("record-route")])
    (_, t2), = requests(s.send(bye2, source=("127.0.0.1", 51000), proto="ws", conn=conn), "BYE")
    assert (t2.proto, t2.host, t2.port) == ("udp", "127.0.0.1", 5080)


def test_method_filtering_skips_contacts_that_do_not_allow_the_method():
    """With method_filtering a contact whose Allow lacks MESSAGE is not sent a MESSAGE."""
    s = stack(registrar={"method_filtering": True})
    s.ua("alice", host="10.0.0.1").register(extra=["Allow: INVITE, ACK, BYE, CANCEL"])
    s.ua("alice", host="10.0.0.2").register(extra=["Allow: INVITE, MESSAGE"])
    out = s.send(invite("sip:alice@example.com", method="MESSAGE"), source=NODE)
    assert [t.host for _, t in requests(out, "MESSAGE")] == ["10.0.0.2"]


def test_registrar_disabled_answers_no_registrar():
    """With registrar.enabled false the seed's 404 No registrar answers REGISTER."""
    s = stack(registrar={"enabled": False})
    resp = s.ua("alice").register()
    assert (resp.status, resp.reason) == (404, "No registrar")


def test_process_register_is_pure():
    """process_register decides without touching the location: 423 leaves nothing changed."""
    loc = Location(0)
    raw = (b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
           b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\n"
           b"CSeq: 1 REGISTER\r\nContact: <sip:a@10.0.0.1>;expires=3600, "
           b"<sip:a@10.0.0.2>;expires=5\r\nContent-Length: 0\r\n\r\n")
    from sipdisp.proxy.target import Target
    result = process_register(parse_message(raw), Target("udp", "10.0.0.1", 5060), [], 0.0,
                              RegistrarParams(), loc, "a", "example.com")
    assert result.status == 423 and not result.changed and loc.count == 0


@pytest.mark.parametrize("text, flags", [("", 0), ("2", 2), ("0x04", 4), ("rf", 0x12), (1, 1)])
def test_save_flags_parse_kamailio_numbers_and_opensips_letters(text, flags):
    """save flags accept numbers (Kamailio) and letters m, r, f (OpenSIPS)."""
    assert parse_save_flags(text) == flags


def test_a_contact_listed_twice_in_one_register_is_one_binding():
    """The same contact twice in one REGISTER (new or refreshed) gives one binding, the last expiry."""
    s = stack()
    ua = s.ua("alice")
    twice = "<sip:alice@10.0.0.1:5070>;expires=100, <sip:alice@10.0.0.1:5070>;expires=200"
    assert contacts(ua.register(contact=twice)) == {"sip:alice@10.0.0.1:5070": 200}
    assert contacts(ua.register(contact=twice)) == {"sip:alice@10.0.0.1:5070": 200}
    assert s.location.count == 1


def test_lookup_flags_m_and_b_choose_method_filtering_and_one_branch():
    """OpenSIPS' lookup("location", "m") filters by method; "b" sends to the best contact only."""
    route = [{"if": {"not": {"is_method": "REGISTER"}}, "then": ["return"]},
             {"save": "location"}, "exit"]
    for flags, expected in (("m", ["10.0.0.2"]), ("b", ["10.0.0.2"])):
        s = stack(routing={"routes": {"REGISTRAR": route, "LOCATION": [
            {"if": {"lookup": ["location", flags]}, "then": [{"route": "RELAY"}]},
            {"sl_send_reply": [404, "Not found"]}, "exit"]}})
        s.ua("alice", host="10.0.0.1").register(
            contact="<sip:alice@10.0.0.1:5070>;q=0.5", extra=["Allow: INVITE"])
        s.ua("alice", host="10.0.0.2").register(extra=["Allow: INVITE, MESSAGE"])
        out = s.send(invite("sip:alice@example.com", method="MESSAGE"), source=NODE)
        assert [t.host for _, t in requests(out, "MESSAGE")] == expected
