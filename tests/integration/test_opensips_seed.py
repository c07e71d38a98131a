"""The whole OpenSIPS seed route (etc/examples/opensips-seed.yaml) run by a
twistd-started sipdisp on PostgreSQL and the machine's Redis, with SIPp and
sockets of the test as phones, FreeSWITCH nodes and PSTN gateways: an alias
reaches its user, a dialplan rule rewrites a number, a ``+`` number goes to
the drouting gateway and on to the next one after a 503, a REGISTER leaves
its Contact in Redis, and a MESSAGE to an offline user reaches her when she
registers.

Every REGISTER is challenged (www_authorize against the subscriber table,
filled with ``sipdisp user add``); callers come from a non-local domain, as
the seed lets carriers in. The tables are shared with other tests, so this
module writes rows of its own domain and removes them; the load_balancer,
dr_* and dialplan id 0 rows are replaced as tests/integration/test_accounting.py
and test_drouting.py replace them. Every wait has a deadline."""

import itertools
import os
import socket
import subprocess
import sys
import uuid

import pytest

from sipdisp.auth.digest import calc_ha1, calc_response, parse_auth_params
from sipdisp.sip import parse_message
from tests.integration.test_accounting import prepare, seed_config
from tests.support.calls import rpc, wait_until
from tests.support.peers import UdpEndpoint, answer
from tests.support.processes import ROOT, Sipdisp, Sipp, free_port, sipp_available

pytestmark = pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed")

REDIS = ("127.0.0.1", 6379)   # the example's cache engine
PASSWORD = "seed-pw"
_ids = itertools.count(1)


def redis_command(*args):
    """One command to the Redis of the example, spoken in RESP over a socket; its reply
    (a bulk string decoded, None for a nil, an int for an integer)."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        raw = str(arg).encode()
        payload += b"$%d\r\n%s\r\n" % (len(raw), raw)
    with socket.create_connection(REDIS, timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"Redis closed the connection; got {data!r}")
            data += chunk
            head, sep, rest = data.partition(b"\r\n")
            if not sep:
                continue
            kind, value = head[:1], head[1:]
            if kind == b":":
                return int(value)
            if kind in (b"+", b"-"):
                return value.decode()
            if kind == b"$":
                size = int(value)
                if size < 0:
                    return None
                if len(rest) >= size + 2:
                    return rest[:size].decode()


def redis_reachable():
    """True if Redis answers PING on 127.0.0.1:6379."""
    try:
        return redis_command("PING") == "PONG"
    except OSError:
        return False


class Phone:
    """A subscriber's UDP socket that registers with digest credentials."""

    def __init__(self, user, domain, password=PASSWORD):
        self.user, self.domain, self.password = user, domain, password
        self.sock = UdpEndpoint()
        self.call_id = f"reg-{user}-{uuid.uuid4().hex}"
        self.cseq = 0

    @property
    def contact(self):
        """The Contact URI this phone registers."""
        return f"sip:{self.user}@127.0.0.1:{self.sock.port}"

    def _register(self, proxy_port, auth=None):
        self.cseq += 1
        lines = [f"REGISTER sip:{self.domain} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.sock.port};branch=z9hG4bKph{next(_ids)}"
                 f"{uuid.uuid4().hex[:8]};rport",
                 f"From: <sip:{self.user}@{self.domain}>;tag=ph{self.cseq}",
                 f"To: <sip:{self.user}@{self.domain}>", f"Call-ID: {self.call_id}",
                 f"CSeq: {self.cseq} REGISTER", "Max-Forwards: 70",
                 f"Contact: <{self.contact}>", "Expires: 600"]
        if auth:
            lines.append(f"Authorization: {auth}")
        self.sock.send(("\r\n".join(lines + ["Content-Length: 0", "", ""])).encode(), proxy_port)
        return self.sock.recv(5, match=lambda m: not m.is_request and m.status >= 200)

    def register(self, proxy_port):
        """REGISTER, answer the 401 challenge; the 401 and the final response."""
        challenge = self._register(proxy_port)
        assert challenge.status == 401, challenge
        params = parse_auth_params(challenge.get("www-authenticate").split(" ", 1)[1])
        algorithm = params.get("algorithm", "MD5")
        ha1 = calc_ha1(algorithm, self.user, params["realm"], self.password)
        uri = f"sip:{self.domain}"
        qop = "auth" if "qop" in params else None
        nc, cnonce = "00000001", uuid.uuid4().hex[:12]
        response = calc_response(algorithm, ha1, params["nonce"], "REGISTER", uri, qop, nc,
                                 cnonce)
        auth = (f'Digest username="{self.user}", realm="{params["realm"]}", '
                f'nonce="{params["nonce"]}", uri="{uri}", response="{response}", '
                f"algorithm={algorithm}")
        if qop:
            auth += f', qop={qop}, nc={nc}, cnonce="{cnonce}"'
        return challenge, self._register(proxy_port, auth)

    def close(self):
        """Close the socket."""
        self.sock.close()


def request(method, ruri, sock, from_uri, body="", extra=()):
    """An initial request from ``sock`` as bytes (INVITE or MESSAGE)."""
    n = next(_ids)
    lines = [f"{method} {ruri} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:{sock.port};branch=z9hG4bKsd{n}{uuid.uuid4().hex[:8]}",
             f"From: <{from_uri}>;tag=sd{n}", f"To: <{ruri}>",
             f"Call-ID: seed-{n}-{uuid.uuid4().hex}@127.0.0.1", f"CSeq: 1 {method}",
             "Max-Forwards: 70", f"Contact: <sip:caller@127.0.0.1:{sock.port}>", *extra,
             f"Content-Length: {len(body.encode())}", "", ""]
    return "\r\n".join(lines).encode() + body.encode()


def ack_for(invite, response):
    """The ACK a UAC sends for a non-2xx final response to ``invite`` (same branch)."""
    return "\r\n".join([
        f"ACK {invite.uri} SIP/2.0", f"Via: {invite.get('via')}",
        f"From: {invite.get('from')}", f"To: {response.get('to')}",
        f"Call-ID: {invite.call_id}", f"CSeq: {invite.cseq} ACK", "Max-Forwards: 70",
        "Content-Length: 0", "", ""]).encode()


def parse(raw):
    """A message we built, parsed (to answer or acknowledge against it)."""
    return parse_message(raw)


def invites(msg):
    """Match an INVITE request."""
    return msg.is_request and msg.method == "INVITE"


def finals(msg):
    """Match a final response."""
    return not msg.is_request and msg.status >= 200


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    """The example on loopback ports writing to PostgreSQL, with this run's domain (in the
    domain table), subscribers carol, dave and erin, the alias 7001 -> carol, the dialplan
    rule 00 -> +, drouting gateways 1 and 2 for +49, and the FreeSWITCH nodes of the
    load_balancer table (group 1: a node socket; group 3: an external-profile socket)."""
    from sipdisp.storage.testing import PG_URL, Unreachable, server_for
    server = server_for(PG_URL)
    try:
        server.check_reachable()
    except Unreachable as exc:
        pytest.skip(f"the OpenSIPS seed runs on PostgreSQL: {exc}")
    tmp_path = tmp_path_factory.mktemp("opensips-seed")
    tag = uuid.uuid4().hex[:8]
    domain = f"seed{tag}.test"
    node, external, gw1 = UdpEndpoint(), UdpEndpoint(), UdpEndpoint()
    gw2_port = free_port()
    prepare(server, node.port, external.port)   # runs sipdisp db init first
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for user in ("carol", "dave", "erin"):
        subprocess.run([sys.executable, "-m", "sipdisp.cli", "user", "add",
                        f"{user}@{domain}", PASSWORD, "--url", server.url], env=env,
                       check=True, timeout=60, stdout=subprocess.DEVNULL)
    for sql in ("DELETE FROM dr_gateways", "DELETE FROM dr_rules", "DELETE FROM dr_carriers",
                "DELETE FROM dr_groups", "DELETE FROM dialplan WHERE dpid = 0"):
        server.execute(sql)
    server.execute("INSERT INTO domain (domain) VALUES (%s)", (domain,))
    server.execute("INSERT INTO dbaliases (alias_username, alias_domain, username, domain) "
                   "VALUES ('7001', %s, 'carol', %s)", (domain, domain))
    server.execute("INSERT INTO dialplan (dpid, pr, match_op, match_exp, match_len, subst_exp, "
                   "repl_exp, attrs) VALUES (0, 1, 1, '^00[1-9][0-9]+$', 0, '^00(.*)$', "
                   "'+\\1', 'e164')")
    for gwid, port in (("1", gw1.port), ("2", gw2_port)):
        server.execute("INSERT INTO dr_gateways (gwid, type, address, strip, pri_prefix, "
                       "probe_mode, state, description) VALUES (%s, 0, %s, 0, NULL, 0, 0, %s)",
                       (gwid, f"127.0.0.1:{port}", f"PSTN gateway {gwid}"))
    server.execute("INSERT INTO dr_rules (ruleid, groupid, prefix, timerec, priority, gwlist, "
                   "sort_alg, description) VALUES (1, '0', '+49', NULL, 0, '1,2', 'N', "
                   "'Germany')")
    proxy = Sipdisp(tmp_path, seed_config(tmp_path, server))
    try:
        proxy.start()
        for line in ("load_balancer: loaded 2 group(s)",
                     "drouting: loaded 2 gateway(s), 0 carrier(s), 1 rule(s)",
                     "dialplan: loaded 1 rule(s)"):
            assert wait_until(lambda: line in proxy.log_text(), 20), \
                (line, proxy.log_text()[-3000:])
        assert wait_until(lambda: domain in rpc(proxy, "domain.dump")["table"], 20)
        yield {"proxy": proxy, "port": proxy.port("udp"), "server": server, "domain": domain,
               "node": node, "external": external, "gw1": gw1, "gw2_port": gw2_port,
               "tmp_path": tmp_path}
    finally:
        proxy.stop()
        for sock in (node, external, gw1):
            sock.close()
        for table, column in (("subscriber", "domain"), ("location", "domain"),
                              ("dbaliases", "alias_domain"), ("silo", "domain"),
                              ("domain", "domain")):
            server.execute(f"DELETE FROM {table} WHERE {column} = %s", (domain,))
        for sql in ("DELETE FROM dr_gateways", "DELETE FROM dr_rules",
                    "DELETE FROM dialplan WHERE dpid = 0"):
            server.execute(sql)
        if redis_reachable():
            redis_command("DEL", *(f"{domain}:{u}" for u in ("carol", "dave", "erin")))
    assert "Traceback" not in proxy.log_text()


def test_a_call_to_an_alias_reaches_her_contact_as_her_canonical_user(seed):
    """7001@domain (a dbaliases row) goes to the FreeSWITCH node as carol; the node's call back
    from the external profile (group 3) reaches carol's registered contact with user carol."""
    port, domain = seed["port"], seed["domain"]
    node, external = seed["node"], seed["external"]
    carol, caller = Phone("carol", domain), UdpEndpoint()
    try:
        _, ok = carol.register(port)
        assert ok.status == 200, ok
        inbound = request("INVITE", f"sip:7001@{domain}", caller, "sip:+4930555@pstn.example.net")
        caller.send(inbound, port)
        at_node = node.recv(5, match=invites)
        assert (at_node.uri.user, at_node.uri.host) == ("carol", domain)
        assert at_node.has("record-route")

        # FreeSWITCH bridges the call to the user it was given, from its external profile
        outbound = request("INVITE", str(at_node.uri), external, f"sip:fs@{domain}")
        external.send(outbound, port)
        at_carol = carol.sock.recv(5, match=invites)
        assert str(at_carol.uri) == carol.contact
        assert at_carol.uri.user == "carol"
        busy = answer(at_carol, 486, "Busy Here", to_tag="carol1").encode()
        carol.sock.send(busy, port)
        final = external.recv(5, match=finals)
        assert final.status == 486
        external.send(ack_for(parse(outbound), final), port)

        node.send(answer(at_node, 486, "Busy Here", to_tag="fs1").encode(), port)
        final = caller.recv(5, match=finals)
        assert final.status == 486
        caller.send(ack_for(parse(inbound), final), port)
    finally:
        carol.close()
        caller.close()


def sipp_call(seed, name, number, hold_ms=200):
    """SIPp calling ``number`` from a carrier (acc_uac.xml: INVITE, 200, ACK, BYE); started."""
    return Sipp(seed["tmp_path"], name, "acc_uac.xml", free_port(), "u1",
                target=f"127.0.0.1:{seed['port']}",
                extra=["-s", number, "-m", 1, "-d", hold_ms, "-timeout", 30,
                       "-timeout_error"]).start()


def answer_call(gw, port, invite, tag):
    """A gateway socket answers ``invite`` with 200, takes the ACK and answers the BYE."""
    gw.send(answer(invite, 200, "OK", to_tag=tag,
                   contact=f"sip:gw@127.0.0.1:{gw.port}").encode(), port)
    gw.recv(5, match=lambda m: m.is_request and m.method == "ACK")
    bye = gw.recv(5, match=lambda m: m.is_request and m.method == "BYE")
    gw.send(answer(bye, 200, "OK").encode(), port)


def test_a_dialplan_rule_rewrites_the_number_before_routing(seed):
    """0049301234 becomes +49301234 by dialplan id 0 (a dialplan row); the call reaches
    drouting's gateway 1 with the rewritten user and completes."""
    port, gw1 = seed["port"], seed["gw1"]
    caller = sipp_call(seed, "dialplan", "0049301234")
    try:
        invite = gw1.recv(10, match=invites)
        assert invite.uri.user == "+49301234"
        answer_call(gw1, port, invite, "gw1dp")
        rc = caller.wait(30)
    finally:
        caller.stop()
    stats = caller.stats()
    assert rc == 0 and stats["ok"] == 1 and stats["failed"] == 0, (stats, caller.errors())


def test_a_plus_number_fails_over_from_the_first_gateway_on_503(seed):
    """+4930777 goes to gateway 1 (dr_rules prefix +49, gwlist 1,2), which answers 503; the
    failure route's use_next_gw sends it to gateway 2, whose 200 reaches the SIPp caller."""
    port, gw1 = seed["port"], seed["gw1"]
    gw2 = UdpEndpoint(seed["gw2_port"])
    caller = sipp_call(seed, "drouting", "+4930777")
    try:
        first = gw1.recv(10, match=invites)
        assert first.uri.user == "+4930777"
        gw1.send(answer(first, 503, "Service Unavailable").encode(), port)
        gw1.recv(5, match=lambda m: m.is_request and m.method == "ACK")
        second = gw2.recv(5, match=invites)
        assert (second.uri.user, second.call_id) == ("+4930777", first.call_id)
        answer_call(gw2, port, second, "gw2")
        rc = caller.wait(30)
    finally:
        caller.stop()
        gw2.close()
    stats = caller.stats()
    assert rc == 0 and stats["ok"] == 1 and stats["failed"] == 0, (stats, caller.errors())
    assert {g["id"]: g["state"] for g in rpc(seed["proxy"], "dr.gw_status")} == \
        {"1": "active", "2": "active"}


def test_a_register_leaves_its_contact_in_redis(seed):
    """dave registers with SIPp (401, then credentials); Redis holds his Contact URI under
    "domain:dave", the seed's cache_store("redis", "$fd:$au", "$ct.fields(uri)")."""
    if not redis_reachable():
        pytest.skip(f"Redis is not reachable at {REDIS[0]}:{REDIS[1]}: the seed's cache_store "
                    "line cannot be checked")
    domain, tmp_path = seed["domain"], seed["tmp_path"]
    key = f"{domain}:dave"
    redis_command("DEL", key)
    csv = tmp_path / "dave.csv"
    csv.write_text(f"SEQUENTIAL\ndave;{domain};[authentication username=dave "
                   f"password={PASSWORD}]\n")
    sipp_port = free_port()
    reg = Sipp(tmp_path, "dave", "register_auth.xml", sipp_port, "u1",
               target=f"127.0.0.1:{seed['port']}",
               extra=["-inf", csv, "-m", 1, "-timeout", 30, "-timeout_error"]).start()
    rc = reg.wait(30)
    stats = reg.stats()
    assert rc == 0 and stats["ok"] == 1, (stats, reg.errors())
    assert wait_until(lambda: redis_command("GET", key) is not None, 5)
    assert redis_command("GET", key) == f"sip:dave@127.0.0.1:{sipp_port}"
    # the value cached is the binding usrloc saved
    assert f"sip:dave@127.0.0.1:{sipp_port}" in str(rpc(seed["proxy"], "ul.lookup",
                                                         f"dave@{domain}"))


def test_a_message_to_an_offline_user_reaches_her_when_she_registers(seed):
    """A MESSAGE to erin (no contact) is answered 202 and stored in silo; her REGISTER
    (challenged, then 200) brings it to her socket, and her 200 empties the silo."""
    port, domain, server = seed["port"], seed["domain"], seed["server"]
    sender, erin = UdpEndpoint(), Phone("erin", domain)
    try:
        sender.send(request("MESSAGE", f"sip:erin@{domain}", sender,
                            "sip:bob@pstn.example.net", body="see you at 5",
                            extra=["Content-Type: text/plain"]), port)
        stored = sender.recv(5, match=finals)
        assert (stored.status, stored.reason) == (202, "Accepted")

        def silo():
            return server.execute("SELECT username, body FROM silo WHERE domain = %s", (domain,))
        assert wait_until(lambda: len(silo()) == 1, 10), silo()
        assert silo()[0][0] == "erin" and bytes(silo()[0][1]) == b"see you at 5"

        _, ok = erin.register(port)
        assert ok.status == 200, ok
        delivered = erin.sock.recv(5, match=lambda m: m.is_request and m.method == "MESSAGE")
        assert bytes(delivered.body) == b"see you at 5"
        assert "sip:bob@pstn.example.net" in delivered.get("from")
        assert str(delivered.uri) == erin.contact
        erin.sock.send(answer(delivered, 200, "OK", to_tag="erin1").encode(), port)
        assert wait_until(lambda: silo() == [], 10), silo()
    finally:
        sender.close()
        erin.close()


def test_presence_for_its_domain_goes_through_handle_presence(seed):
    """route(handle_presence): a PUBLISH for carol is 200 with SIP-ETag, a watcher's
    SUBSCRIBE 200 and a NOTIFY carrying her PIDF; the in-dialog unsubscribe
    (to our Contact, is_myself("$rd")) gets 200 and the final NOTIFY."""
    port, domain, server = seed["port"], seed["domain"], seed["server"]
    pub, watcher = UdpEndpoint(), UdpEndpoint()
    carol = f"sip:carol@{domain}"
    pidf = (f'<?xml version="1.0" encoding="UTF-8"?>\n<presence '
            f'xmlns="urn:ietf:params:xml:ns:pidf" entity="{carol}"><tuple id="c1"><status>'
            '<basic>open</basic></status><note>on the seed</note></tuple></presence>')
    try:
        pub.send(request("PUBLISH", carol, pub, "sip:feed@pstn.example.net", body=pidf,
                         extra=["Event: presence", "Expires: 600",
                                "Content-Type: application/pidf+xml"]), port)
        ok = pub.recv(5, match=finals)
        assert ok.status == 200 and ok.get("sip-etag"), ok
        raw = request("SUBSCRIBE", carol, watcher, "sip:watcher@pstn.example.net",
                      extra=["Event: presence", "Expires: 600"])
        watcher.send(raw, port)
        sub_ok = watcher.recv(5, match=finals)
        assert sub_ok.status == 200 and sub_ok.get("contact"), sub_ok
        notify = watcher.recv(5, match=lambda m: m.is_request and m.method == "NOTIFY")
        assert "on the seed" in bytes(notify.body).decode()
        assert notify.get("subscription-state").startswith("active")
        watcher.send(answer(notify, 200, "OK").encode(), port)
        sub = parse(raw)
        target = sub_ok.get("contact").strip("<>")
        again = "\r\n".join([
            f"SUBSCRIBE {target} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{watcher.port};branch=z9hG4bKun{uuid.uuid4().hex[:10]}",
            f"From: {sub.get('from')}", f"To: {sub_ok.get('to')}", f"Call-ID: {sub.call_id}",
            "CSeq: 2 SUBSCRIBE", "Max-Forwards: 70",
            f"Contact: <sip:caller@127.0.0.1:{watcher.port}>", "Event: presence",
            "Expires: 0", "Content-Length: 0", "", ""]).encode()
        watcher.send(again, port)
        assert watcher.recv(5, match=finals).status == 200
        last = watcher.recv(5, match=lambda m: m.is_request and m.method == "NOTIFY")
        assert last.get("subscription-state") == "terminated;reason=timeout"
        assert last.call_id == sub.call_id and last.cseq == notify.cseq + 1
        watcher.send(answer(last, 200, "OK").encode(), port)
    finally:
        pub.close()
        watcher.close()
        server.execute("DELETE FROM presentity WHERE domain = %s", (domain,))
        server.execute("DELETE FROM active_watchers WHERE presentity_uri = %s", (carol,))
