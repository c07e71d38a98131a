"""Message factory for tests: build raw SIP requests and responses."""

import itertools

_counter = itertools.count(1)


def request(method="INVITE", ruri="sip:bob@127.0.0.1:5060", *, via_host="127.0.0.1",
            via_port=5070, proto="UDP", branch=None, call_id=None, cseq=1,
            from_tag="ftag", to_tag=None, max_forwards=70, extra=(), body=b"",
            cseq_method=None):
    """A request as bytes, with sensible defaults."""
    n = next(_counter)
    branch = branch or f"z9hG4bKtest{n}"
    call_id = call_id or f"call-{n}@test"
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/{proto} {via_host}:{via_port};branch={branch}",
        f"From: <sip:alice@example.com>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
    ]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines.append(f"Contact: <sip:alice@{via_host}:{via_port}>")
    lines.extend(extra)
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def response_to(raw_request, status, reason="OK", to_tag="uastag", extra=()):
    """A response to a request given as bytes (copies Via, From, To, Call-ID, CSeq, RR)."""
    from sipdisp.sip import parse_message, make_response
    req = parse_message(raw_request)
    resp = make_response(req, status, reason, to_tag=to_tag if status > 100 else None,
                         record_route=True)
    for key, value in extra:
        resp.add(key, value)
    return resp.to_bytes()


def in_dialog(method, ruri, routes=(), *, to_tag="uastag", extra=(), **kwargs):
    """An in-dialog request (To tag set) carrying ``routes`` as its Route set, in order."""
    route_lines = [f"Route: {r}" for r in routes]
    return request(method, ruri, to_tag=to_tag, extra=[*route_lines, *extra], **kwargs)


def route_set(raw_message, reverse=False):
    """The Record-Route entries of a message (reversed for the UAC side, RFC 3261 12.1.2)."""
    from sipdisp.sip import parse_message
    entries = parse_message(raw_message).values("record-route")
    return list(reversed(entries)) if reverse else entries


def signed_rr(core, uri, call_id, from_tag="ftag"):
    """``<uri;sdsig=...>``: a Record-Route entry of ``core`` as it signs it for
    the dialog of ``call_id`` and the caller's ``from_tag`` (``uri`` without brackets)."""
    return f"<{uri};sdsig={core.rr_signature(call_id, from_tag)}>"
