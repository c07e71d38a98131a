"""Calls through an in-memory proxy with the dialog table, hidden or not,
for counting what topology hiding costs (docs/topoh.md, "Cost").

    PYTHONHASHSEED=0 PYTHONPATH=$PWD valgrind --tool=callgrind \\
        .venv/bin/python bench/topoh_calls.py hidden 200     # and 500: the
                                                             # difference / 300

``plain``: record_route and create_dialog, in-dialog requests by
loose_route; ``hidden``: topology_hiding, in-dialog requests by
topology_hiding_match; ``plain-match``: plain, with topology_hiding_match
tried first. Each call is INVITE, 100, 180, 200, ACK, BYE, 200.
"""

import sys

from sipdisp.sip import parse_message
from tests.support import sipmsg
from tests.support.calls import Switch


def route(kind):
    """The YAML route of ``kind``."""
    in_dialog = [{"if": "loose_route", "then": ["t_relay", "exit"]},
                 {"if": {"is_method": "ACK"}, "then": ["exit"]},
                 {"sl_send_reply": [404, "Not here"]}, "exit"]
    if kind != "plain":
        in_dialog.insert(0, {"if": "topology_hiding_match", "then": ["t_relay", "exit"]})
    initial = ["topology_hiding"] if kind == "hidden" else ["record_route", "create_dialog"]
    return {"request_route": [{"if": "has_totag", "then": in_dialog}, *initial,
                              {"set": {"$du": "sip:127.0.0.1:5081"}}, "t_relay"]}


def call(sw, n, node):
    """One call from the caller at 10.0.0.1 to the node at 127.0.0.1:5081."""
    cid = f"bench-{n}"
    sw.uac.send(sipmsg.request("INVITE", "sip:bob@127.0.0.1:5060", via_host="10.0.0.1",
                               via_port=5070, call_id=cid, from_tag=f"f{n}"))
    fwd = node.take()[0]
    contact = [("contact", "<sip:fs@127.0.0.1:5081>")]
    node.send(sipmsg.response_to(fwd, 180, "Ringing", to_tag=f"t{n}", extra=contact))
    node.send(sipmsg.response_to(fwd, 200, "OK", to_tag=f"t{n}", extra=contact))
    ok = parse_message(sw.uac.take()[-1])
    target = str(ok.addresses("contact")[0].uri)
    routes = list(reversed(ok.values("record-route")))
    for method, cseq in (("ACK", 1), ("BYE", 2)):
        sw.uac.send(sipmsg.in_dialog(method, target, routes, to_tag=f"t{n}", via_host="10.0.0.1",
                                     via_port=5070, call_id=cid, from_tag=f"f{n}", cseq=cseq))
    bye = node.take()[-1]
    node.send(sipmsg.response_to(bye, 200, "OK", to_tag=None))
    sw.uac.take()


def main(kind, calls):
    """Run ``calls`` calls of ``kind``."""
    sw = Switch(route=route(kind))
    node = sw.nodes["fs1"]
    for n in range(calls):
        call(sw, n, node)
    if sw.dialogs.dialogs:
        raise SystemExit(f"{len(sw.dialogs.dialogs)} dialogs left: a call went wrong")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
