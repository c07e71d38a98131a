"""The presence event packages, sans-IO: PIDF validation and presence_xml's
aggregation, dialog-info, message-summary and watcherinfo bodies, and
hostile XML refused before it can cost anything."""

import xml.etree.ElementTree as ET

import pytest

from sipdisp.presence.packages import BadBody, build_packages, xmldoc
from sipdisp.presence.packages.dialoginfo import dialog_info
from sipdisp.presence.packages.pidf import offline_body

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
DI_NS = "urn:ietf:params:xml:ns:dialog-info"
ALICE = "sip:alice@example.com"


@pytest.fixture
def packages():
    return build_packages(True)


@pytest.fixture
def presence(packages):
    return packages["presence"]


def pidf(tuples="", extra="", entity=ALICE, decls=""):
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="{PIDF_NS}" '
            f'xmlns:dm="{DM_NS}" xmlns:rpid="{RPID_NS}"{decls} entity="{entity}">'
            f"{tuples}{extra}</presence>").encode()


def tuple_(tid, basic="open", inner=""):
    return f'<tuple id="{tid}"><status><basic>{basic}</basic></status>{inner}</tuple>'


AWAY = pidf(tuple_("phone"), '<dm:person id="p1"><rpid:activities><rpid:away/>'
            '</rpid:activities><dm:note>Gone for lunch</dm:note></dm:person>')
ONLINE = pidf(tuple_("phone", inner="<contact>sip:alice@10.0.0.1</contact>"),
              '<dm:person id="p1"><rpid:activities><rpid:unknown/></rpid:activities>'
              "</dm:person>")
PC = pidf(tuple_("pc", "closed"), '<dm:device id="d-pc"><dm:deviceID>mac:1</dm:deviceID>'
          "</dm:device>")


def parsed(body):
    return ET.fromstring(body)


# -- the contract ---------------------------------------------------------------------

def test_build_packages_returns_the_four_events_with_their_notify_types(packages):
    """The server finds presence, presence.winfo, dialog and message-summary by event name,
    each with the Content-Type NOTIFY uses first and whether PUBLISH is allowed."""
    assert sorted(packages) == ["dialog", "message-summary", "presence", "presence.winfo"]
    assert {n: (p.name, p.content_types[0], p.publishable) for n, p in packages.items()} == {
        "presence": ("presence", "application/pidf+xml", True),
        "presence.winfo": ("presence.winfo", "application/watcherinfo+xml", False),
        "dialog": ("dialog", "application/dialog-info+xml", True),
        "message-summary": ("message-summary", "application/simple-message-summary", True)}
    assert packages["presence"].force_active is True
    assert build_packages(False)["presence"].force_active is False


def test_bad_body_is_a_value_error_whose_text_is_the_reason_phrase(presence):
    """BadBody's str() is a one-line reason fit for the 400's reason phrase."""
    with pytest.raises(BadBody) as info:
        presence.validate("application/pidf+xml", b"<presence")
    assert isinstance(info.value, ValueError) and info.value.status == 400
    assert str(info.value).startswith("Malformed PIDF body") and "\n" not in str(info.value)


def test_a_wrong_content_type_is_refused_with_415_and_parameters_are_ignored(presence):
    """application/xpidf+xml is refused (status 415); the PIDF type's case and charset do not matter."""
    with pytest.raises(BadBody, match="Unsupported Content-Type") as info:
        presence.validate("application/xpidf+xml", AWAY)
    assert info.value.status == 415
    presence.validate("Application/PIDF+XML; charset=UTF-8", AWAY)


# -- PIDF validation ----------------------------------------------------------------------

def test_a_pidf_with_rpid_person_and_device_is_accepted(presence):
    """A PIDF with RPID activities, a data-model person and device validates, and so does a
    basic written "Open" with spaces around it (a sloppy client's)."""
    for body in (AWAY, ONLINE, PC, pidf(tuple_("a", " Open "))):
        presence.validate("application/pidf+xml", body)


@pytest.mark.parametrize("body,reason", [
    (b'<presence xmlns="urn:example:other" entity="sip:a@b"/>', "root is not <presence>"),
    (b'<tuple xmlns="urn:ietf:params:xml:ns:pidf" id="x"/>', "root is not <presence>"),
    (b'<presence entity="sip:a@b"/>', "root is not <presence>"),
    (pidf(entity=""), "without entity"),
    (b'<presence xmlns="urn:ietf:params:xml:ns:pidf"/>', "without entity"),
    (pidf("<tuple><status><basic>open</basic></status></tuple>"), "<tuple> without id"),
    (pidf(tuple_("a", "busy")), "neither open nor closed"),
    (pidf(tuple_("a")) + b"<trailing/>", "Malformed PIDF"),
    (b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'><tuple id='a'>", "Malformed PIDF"),
    (b"   \r\n", "Empty PIDF body"),
    (b"", "Empty PIDF body"),
])
def test_malformed_pidf_is_refused_with_its_reason(presence, body, reason):
    """Each way a PIDF can be wrong gets its own reason."""
    with pytest.raises(BadBody, match=reason):
        presence.validate("application/pidf+xml", body)


# -- hostile XML ------------------------------------------------------------------------

BILLION_LAUGHS = (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
                  + b"".join(b' <!ENTITY lol%d "%s">\n' % (i, b"".join(
                      b"&lol%s;" % (str(i - 1).encode() if i > 1 else b"") for _ in range(10)))
                      for i in range(1, 10))
                  + b']>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="x">'
                  b"&lol9;</presence>")
EXTERNAL = (b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="x">&xxe;</presence>')


@pytest.fixture
def no_parser(monkeypatch):
    """Make any use of the XML parser fail the test: the refusal must come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("the XML parser was reached")
    monkeypatch.setattr(xmldoc.ET, "XMLPullParser", refuse)


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL,
                                  b'<!doctype presence><presence entity="x"/>',
                                  b'<presence entity="x"><!ENTITY a "b"></presence>'])
def test_dtds_and_entity_declarations_are_refused_before_parsing(presence, no_parser, body):
    """Billion laughs, an external entity, any DOCTYPE or ENTITY: refused without parsing."""
    with pytest.raises(BadBody, match="DTD or entity declaration"):
        presence.validate("application/pidf+xml", body)


def test_a_one_megabyte_body_is_refused_by_its_size_alone(presence, no_parser):
    """A 1 MB PIDF is refused on its length, before it is decoded or parsed."""
    big = pidf(tuple_("a") * 40000)
    assert len(big) > 1 << 20
    with pytest.raises(BadBody, match="larger than 65536 bytes"):
        presence.validate("application/pidf+xml", big)


def test_deep_nesting_stops_at_the_bound_before_the_rest_is_read(presence):
    """5,000 nested elements are refused at depth 33: the malformed tail the parser would
    reach later (a stray end tag 16 KB on) is never looked at."""
    deep = pidf("<x>" * 5000)[:-len(b"</presence>")] + b" " * 16000 + b"</nope>"
    assert len(deep) < 65536
    with pytest.raises(BadBody, match="nested deeper than 32 elements"):
        presence.validate("application/pidf+xml", deep)


def test_nesting_within_the_bound_is_accepted_and_the_bound_is_configurable():
    """30 levels pass the default bound; build_packages(max_depth=8) refuses them."""
    inner = "<rpid:x>" * 27 + "</rpid:x>" * 27
    body = pidf(tuple_("a"), f'<dm:person id="p">{inner}</dm:person>')
    build_packages(True)["presence"].validate("application/pidf+xml", body)
    with pytest.raises(BadBody, match="deeper than 8"):
        build_packages(True, max_depth=8)["presence"].validate("application/pidf+xml", body)


@pytest.mark.parametrize("body", [
    "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'/>".encode("utf-16"),
    b"<presence entity='\xff\xfe'/>",
])
def test_bodies_not_in_utf8_are_refused(presence, body):
    """UTF-16 (which could hide a DOCTYPE from a byte search) and stray bytes are refused."""
    with pytest.raises(BadBody, match="not UTF-8"):
        presence.validate("application/pidf+xml", body)


def test_a_utf8_bom_and_an_xml_declaration_are_accepted(presence):
    """A UTF-8 byte order mark before the XML declaration is fine."""
    presence.validate("application/pidf+xml", b"\xef\xbb\xbf" + AWAY)


# -- PIDF aggregation -------------------------------------------------------------------------

def test_no_publication_gives_one_closed_tuple_for_the_presentity(presence):
    """[]: a PIDF with entity the presentity and one tuple whose basic is closed, valid
    itself, with the same tuple id every time."""
    ctype, body = presence.notify_body(ALICE, [])
    assert ctype == "application/pidf+xml"
    presence.validate(ctype, body)
    root = parsed(body)
    assert root.tag == f"{{{PIDF_NS}}}presence" and root.get("entity") == ALICE
    tuples = root.findall(f"{{{PIDF_NS}}}tuple")
    assert len(tuples) == 1
    assert tuples[0].find(f"{{{PIDF_NS}}}status/{{{PIDF_NS}}}basic").text == "closed"
    assert presence.notify_body(ALICE, [])[1] == body == offline_body(ALICE)
    assert parsed(offline_body("sip:bob@example.com")).find(
        f"{{{PIDF_NS}}}tuple").get("id") != tuples[0].get("id")


def test_one_publication_is_written_back_with_its_namespaces_as_the_golden_document(presence):
    """A single publication comes back as this exact document: PIDF the default namespace,
    dm and rpid with their prefixes, entity the presentity (whatever the publisher wrote)."""
    body = pidf(tuple_("phone"), '<dm:person id="p1"><rpid:activities><rpid:away/>'
                "</rpid:activities></dm:person>", entity="sip:alice@10.0.0.1")
    _, out = presence.notify_body(ALICE, [("e1", "application/pidf+xml", body)])
    assert out == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        b'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        b'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@example.com">'
        b'<tuple id="phone"><status><basic>open</basic></status></tuple>'
        b'<dm:person id="p1"><rpid:activities><rpid:away/></rpid:activities></dm:person>'
        b"</presence>")


def test_publications_aggregate_tuples_of_all_the_newest_person_and_every_device(presence):
    """Two devices' publications merge: both tuples (newest publication first), the person of
    the newest, the device element of the older; the result is a valid PIDF."""
    pubs = [("e-pc", "application/pidf+xml", PC), ("e-phone", "application/pidf+xml", AWAY)]
    _, out = presence.notify_body(ALICE, pubs)
    presence.validate("application/pidf+xml", out)
    root = parsed(out)
    assert root.get("entity") == ALICE
    assert [t.get("id") for t in root.findall(f"{{{PIDF_NS}}}tuple")] == ["phone", "pc"]
    persons = root.findall(f"{{{DM_NS}}}person")
    assert len(persons) == 1
    assert persons[0].find(f"{{{RPID_NS}}}activities/{{{RPID_NS}}}away") is not None
    assert persons[0].find(f"{{{DM_NS}}}note").text == "Gone for lunch"
    assert [d.get("id") for d in root.findall(f"{{{DM_NS}}}device")] == ["d-pc"]


def test_a_tuple_id_published_again_keeps_only_the_newest(presence):
    """Away then online from the same phone (same tuple id): one tuple, the newest, with its
    contact; the newest person (activities unknown) replaces the away one."""
    pubs = [("e1", "application/pidf+xml", AWAY), ("e2", "application/pidf+xml", ONLINE)]
    root = parsed(presence.notify_body(ALICE, pubs)[1])
    (phone,) = root.findall(f"{{{PIDF_NS}}}tuple")
    assert phone.find(f"{{{PIDF_NS}}}contact").text == "sip:alice@10.0.0.1"
    (person,) = root.findall(f"{{{DM_NS}}}person")
    assert person.find(f"{{{RPID_NS}}}activities/{{{RPID_NS}}}unknown") is not None
    assert person.find(f"{{{RPID_NS}}}activities/{{{RPID_NS}}}away") is None


def test_unknown_extension_namespaces_keep_their_prefix_and_stay_valid(presence):
    """An extension element with the publisher's own prefix passes through under that prefix,
    declared on the root, and the output parses with the same namespaces."""
    body = pidf(tuple_("a", inner='<ex:mood xmlns:ex="urn:example:mood" ex:level="3">happy'
                       "</ex:mood>"), decls=' xmlns:c="urn:ietf:params:xml:ns:pidf:cipid"')
    _, out = presence.notify_body(ALICE, [("e", "application/pidf+xml", body)])
    assert b'xmlns:ex="urn:example:mood"' in out and b'<ex:mood ex:level="3">happy' in out
    mood = parsed(out).find(f"{{{PIDF_NS}}}tuple/{{urn:example:mood}}mood")
    assert mood.text == "happy" and mood.get("{urn:example:mood}level") == "3"


def test_prefix_clashes_and_unnamespaced_elements_are_written_valid(presence):
    """Two publishers using prefix "x" for different namespaces, and an element in no
    namespace inside a tuple, still give a document whose names parse back the same."""
    a = pidf(tuple_("a", inner='<x:one xmlns:x="urn:example:one"/>'))
    b = pidf(tuple_("b", inner='<x:two xmlns:x="urn:example:two"><plain xmlns="">t'
                    "<status/></plain></x:two>"))
    _, out = presence.notify_body(ALICE, [("1", "", a), ("2", "", b)])
    root = parsed(out)
    assert root.find(f"{{{PIDF_NS}}}tuple/{{urn:example:one}}one") is not None
    plain = root.find(f"{{{PIDF_NS}}}tuple/{{urn:example:two}}two/plain")
    assert plain is not None and plain.text == "t" and plain.find("status") is not None
    presence.validate("application/pidf+xml", out)


def test_text_and_attributes_are_escaped_in_the_output(presence):
    """Markup characters in a note and an attribute come back as the same text."""
    body = pidf(tuple_("a", inner="<note>a &lt; b &amp; &quot;c&quot;</note>"),
                entity="sip:a@b")
    _, out = presence.notify_body('sip:"odd"&<x>@example.com', [("e", "", body)])
    root = parsed(out)
    assert root.get("entity") == 'sip:"odd"&<x>@example.com'
    assert root.find(f"{{{PIDF_NS}}}tuple/{{{PIDF_NS}}}note").text == 'a < b & "c"'


def test_an_unreadable_stored_publication_is_skipped(presence):
    """A stored body that is not PIDF (written by another server) does not hide the others;
    if none is readable the presentity is offline."""
    pubs = [("bad", "application/pidf+xml", b"<oops"), ("ok", "application/pidf+xml", AWAY)]
    root = parsed(presence.notify_body(ALICE, pubs)[1])
    assert [t.get("id") for t in root.findall(f"{{{PIDF_NS}}}tuple")] == ["phone"]
    assert presence.notify_body(ALICE, pubs[:1])[1] == offline_body(ALICE)


# -- message-summary ------------------------------------------------------------------------------

MWI = "application/simple-message-summary"


def test_message_summary_accepts_rfc3842_bodies(packages):
    """The RFC 3842 example with account, counts and message headers validates."""
    body = (b"Messages-Waiting: yes\r\nMessage-Account: sip:alice@example.com\r\n"
            b"Voice-Message: 2/8 (0/2)\r\nFax-Message: 1/0\r\n\r\n"
            b"To: <alice@example.com>\r\nSubject: hello\r\n")
    packages["message-summary"].validate(MWI, body)
    packages["message-summary"].validate(MWI, b"messages-waiting:NO")


@pytest.mark.parametrize("body,reason", [
    (b"Voice-Message: 2/8\r\n", "Messages-Waiting"),
    (b"Messages-Waiting: maybe\r\n", "Messages-Waiting"),
    (b"", "Empty"),
    (b"Messages-Waiting: yes\r\nVoice-Message: lots\r\n", "counts for Voice-Message"),
    (b"Messages-Waiting: yes\r\nno colon here\r\n", "Malformed message-summary line"),
    (b"Messages-Waiting: yes\r\n\xff\r\n", "not UTF-8"),
])
def test_message_summary_refuses_malformed_bodies(packages, body, reason):
    """No status line, a bad status, bad counts or a line without a colon: BadBody."""
    with pytest.raises(BadBody, match=reason):
        packages["message-summary"].validate(MWI, body)


def test_message_summary_notifies_the_newest_publication_or_no(packages):
    """NOTIFY carries the newest body as published; without one, Messages-Waiting: no."""
    mwi = packages["message-summary"]
    pubs = [("1", MWI, b"Messages-Waiting: yes\r\n"), ("2", MWI, b"Messages-Waiting: no\r\n")]
    assert mwi.notify_body(ALICE, pubs) == (MWI, b"Messages-Waiting: no\r\n")
    assert mwi.notify_body(ALICE, pubs[:1]) == (MWI, b"Messages-Waiting: yes\r\n")
    assert mwi.notify_body(ALICE, []) == (MWI, b"Messages-Waiting: no\r\n")
    with pytest.raises(BadBody, match="larger than"):
        mwi.validate(MWI, b"Messages-Waiting: yes\r\n" + b"X: y\r\n" * 20000)


# -- dialog-info ---------------------------------------------------------------------------------

DINFO = "application/dialog-info+xml"
BOB = "sip:bob@example.com"


def test_dialog_info_documents_of_the_feed_validate(packages):
    """dialog_info() writes what RFC 4235 asks: version, state full, entity, one dialog with
    its id, call-id, tags, direction, state and the two participants."""
    body = dialog_info(BOB, 3, "d1", "terminated", call_id="c1", local_tag="lt",
                       remote_tag="rt", direction="recipient", local=BOB, remote=ALICE,
                       event="timeout")
    packages["dialog"].validate(DINFO, body)
    root = parsed(body)
    assert (root.get("version"), root.get("state"), root.get("entity")) == ("3", "full", BOB)
    (dialog,) = root.findall(f"{{{DI_NS}}}dialog")
    assert {k: dialog.get(k) for k in ("id", "call-id", "local-tag", "remote-tag",
                                       "direction")} == {
        "id": "d1", "call-id": "c1", "local-tag": "lt", "remote-tag": "rt",
        "direction": "recipient"}
    state = dialog.find(f"{{{DI_NS}}}state")
    assert (state.text, state.get("event")) == ("terminated", "timeout")
    assert dialog.find(f"{{{DI_NS}}}remote/{{{DI_NS}}}identity").text == ALICE
    assert dialog.find(f"{{{DI_NS}}}remote/{{{DI_NS}}}target").get("uri") == ALICE
    with_contact = parsed(dialog_info(BOB, 0, "d", "early", local=BOB,
                                      local_target="sip:bob@10.0.0.2:5062"))
    assert with_contact.find(f"{{{DI_NS}}}dialog/{{{DI_NS}}}local/{{{DI_NS}}}target").get(
        "uri") == "sip:bob@10.0.0.2:5062"
    with pytest.raises(ValueError):
        dialog_info(BOB, 0, "d1", "ringing")


@pytest.mark.parametrize("body,reason", [
    (b'<dialog-info xmlns="urn:x" version="1" state="full" entity="e"/>', "root is not"),
    (b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="x" state="full" '
     b'entity="e"/>', "numeric version"),
    (b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="some" '
     b'entity="e"/>', "full nor partial"),
    (b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full"/>',
     "without entity"),
    (b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" '
     b'entity="e"><dialog><state>early</state></dialog></dialog-info>', "without id"),
    (b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" '
     b'entity="e"><dialog id="1"><state>ringing</state></dialog></dialog-info>', "valid <state>"),
    (BILLION_LAUGHS, "DTD"),
])
def test_malformed_dialog_info_is_refused(packages, body, reason):
    """Wrong root, version, state, entity, a dialog without id or with an unknown state: BadBody."""
    with pytest.raises(BadBody, match=reason):
        packages["dialog"].validate(DINFO, body)


def test_dialog_notify_holds_every_dialog_once_with_the_callers_version(packages):
    """Two calls' publications give one full document with both dialogs at the given version;
    a dialog id published again shows its newest state; [] is a document without dialogs."""
    dialog = packages["dialog"]
    a1 = dialog_info(BOB, 0, "a", "early")
    b1 = dialog_info(BOB, 0, "b", "confirmed")
    a2 = dialog_info(BOB, 1, "a", "confirmed")
    ctype, out = dialog.notify_body(BOB, [("1", DINFO, a1), ("2", DINFO, b1), ("3", DINFO, a2)],
                                    version=7)
    assert ctype == DINFO
    dialog.validate(ctype, out)
    root = parsed(out)
    assert (root.get("version"), root.get("state"), root.get("entity")) == ("7", "full", BOB)
    states = {d.get("id"): d.find(f"{{{DI_NS}}}state").text
              for d in root.findall(f"{{{DI_NS}}}dialog")}
    assert states == {"a": "confirmed", "b": "confirmed"}
    empty = parsed(dialog.notify_body(BOB, [])[1])
    assert empty.get("version") == "0" and list(empty) == []


# -- watcherinfo -----------------------------------------------------------------------------------

def test_watcherinfo_lists_the_watchers_of_the_presence_package(packages):
    """watcherinfo_body writes a full RFC 3858 document: the resource, package presence and one
    watcher element per watcher with its id, status, event and URI; unknown values are
    written as pending/subscribe."""
    winfo = packages["presence.winfo"]
    ctype, body = winfo.watcherinfo_body(BOB, [
        {"id": "w1", "uri": ALICE, "status": "active", "event": "subscribe"},
        {"id": "w2", "uri": "sip:carol@example.com", "status": "odd", "event": "odd"}], 4)
    assert ctype == "application/watcherinfo+xml"
    winfo.validate(ctype, body)
    ns = "{urn:ietf:params:xml:ns:watcherinfo}"
    root = parsed(body)
    assert (root.tag, root.get("version"), root.get("state")) == (f"{ns}watcherinfo", "4",
                                                                   "full")
    wlist = root.find(f"{ns}watcher-list")
    assert (wlist.get("resource"), wlist.get("package")) == (BOB, "presence")
    assert [(w.get("id"), w.get("status"), w.get("event"), w.text)
            for w in wlist.findall(f"{ns}watcher")] == [
        ("w1", "active", "subscribe", ALICE), ("w2", "pending", "subscribe",
                                               "sip:carol@example.com")]
    assert not winfo.publishable
    empty = parsed(winfo.notify_body(BOB, [])[1])
    assert list(empty.find(f"{ns}watcher-list")) == []
    with pytest.raises(BadBody, match="watcherinfo root"):
        winfo.validate(ctype, AWAY)


def test_stamp_version_sets_each_subscriptions_version_in_a_shared_body(packages):
    """One body built for all watchers takes each subscription's version, and only the root's:
    a dialog's own attributes and text are left alone."""
    dialog = packages["dialog"]
    pub = dialog_info(BOB, 9, "a", "early", call_id='x version="5"')
    _, body = dialog.notify_body(BOB, [("1", DINFO, pub)])
    stamped = dialog.stamp_version(body, 42)
    dialog.validate(DINFO, stamped)
    root = parsed(stamped)
    assert root.get("version") == "42"
    assert root.find(f"{{{DI_NS}}}dialog").get("call-id") == 'x version="5"'
    assert stamped.replace(b'version="42"', b'version="0"', 1) == body
