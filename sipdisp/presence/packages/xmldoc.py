"""Safe parsing and namespace-clean writing of the XML bodies of the event
packages (PIDF, dialog-info, watcherinfo), on the standard library only.

Parsing refuses what makes XML dangerous to a server (the "billion laughs"
and external entities live in a DTD, RFC 3863 and 4235 never need one): a
body with ``<!DOCTYPE`` or ``<!ENTITY`` is refused before the parser sees
it, the size is bounded before anything else, and the nesting depth is
checked while parsing incrementally, so a deep document stops at the first
element past the bound instead of being built whole.

Writing is a small serializer of our own instead of ``ElementTree.tostring``:
that one invents ``ns0:`` prefixes and registering nicer ones is a global of
the ``xml.etree`` module. Here the document's namespace is the default one,
well-known namespaces keep their usual prefixes, and any other namespace
keeps the prefix its publisher used (:class:`Document` remembers them).
"""

import xml.etree.ElementTree as ET

from .base import BadBody

#: refused outright: entity expansion and external entities need a DTD
FORBIDDEN = ("<!DOCTYPE", "<!ENTITY", "<!doctype", "<!entity")
#: bytes fed to the parser at a time, so depth is checked as the document goes
CHUNK = 1024

#: the prefixes clients and Kamailio/OpenSIPS write for these namespaces
KNOWN_PREFIXES = {
    "urn:ietf:params:xml:ns:pidf:data-model": "dm",
    "urn:ietf:params:xml:ns:pidf:rpid": "rpid",
    "urn:ietf:params:xml:ns:pidf:cipid": "c",
    "urn:ietf:params:xml:ns:pidf:caps": "caps",
    "urn:ietf:params:xml:ns:pidf:geopriv10": "gp",
    "urn:ietf:params:xml:ns:pidf:status:rpid": "rpid-status",
    "urn:ietf:params:xml:ns:sip": "sip",
    "urn:ietf:params:xml:ns:dialog-info": "di",
    "urn:ietf:params:xml:ns:pidf": "pidf",
}


class Document:
    """A parsed body: its ``root`` element and the ``prefixes`` its author
    declared (namespace -> first prefix seen), for writing it back."""

    __slots__ = ("root", "prefixes")

    def __init__(self, root, prefixes):
        self.root = root
        self.prefixes = prefixes


def parse(body, *, max_size, max_depth, what="XML"):
    """Parse ``body`` (bytes) into a :class:`Document`; :class:`BadBody`
    (reason for the 400) if it is too large, not UTF-8, has a DTD or entity
    declaration, nests deeper than ``max_depth`` or is not well-formed."""
    if len(body) > max_size:
        raise BadBody(f"{what} body larger than {max_size} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # RFC 3863 and 4235 bodies are UTF-8; another encoding could also hide
        # a DOCTYPE from the check below
        raise BadBody(f"{what} body is not UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    for bad in FORBIDDEN:
        if bad in text:
            raise BadBody(f"{what} body with a DTD or entity declaration")
    if not text.strip():
        raise BadBody(f"Empty {what} body")
    parser = ET.XMLPullParser(events=("start", "end", "start-ns"))
    prefixes = {}
    depth = 0
    root = None
    try:
        for at in range(0, len(text), CHUNK):
            # a str is handed to expat as UTF-8 whatever the XML declaration says
            parser.feed(text[at:at + CHUNK])
            for event, item in parser.read_events():
                if event == "start":
                    depth += 1
                    if depth > max_depth:
                        raise BadBody(f"{what} body nested deeper than {max_depth} elements")
                    if root is None:
                        root = item
                elif event == "end":
                    depth -= 1
                else:
                    prefix, uri = item
                    if prefix:
                        prefixes.setdefault(uri, prefix)
        parser.close()
        for _event, _item in parser.read_events():
            pass
    except ET.ParseError as exc:
        raise BadBody(f"Malformed {what} body ({_short(exc)})") from None
    if root is None:
        raise BadBody(f"Empty {what} body")
    return Document(root, prefixes)


def _short(exc):
    """The parser's message without its line noise, bounded for a reason phrase."""
    return str(exc).split(":", 1)[0][:60]


def split(tag):
    """``"{ns}name"`` -> ``("ns", "name")``; ``"name"`` -> ``("", "name")``."""
    if tag[:1] == "{":
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def local_name(element):
    """The element's name without its namespace."""
    return split(element.tag)[1] if isinstance(element.tag, str) else ""


def write(root, default_ns, prefixes=None):
    """Serialize ``root`` as UTF-8 bytes with an XML declaration:
    ``default_ns`` unprefixed, other namespaces with the prefix in
    ``prefixes`` (namespace -> prefix), else the usual one, else ``nsN``,
    all declared on the root element."""
    names = {default_ns: ""}
    used = {""}
    wanted = dict(KNOWN_PREFIXES)
    wanted.update(prefixes or {})
    counter = 0

    def prefix_of(ns):
        nonlocal counter
        if ns in names:
            return names[ns]
        prefix = wanted.get(ns)
        if not prefix or prefix in used or prefix.lower().startswith("xml"):
            while True:
                counter += 1
                prefix = f"ns{counter}"
                if prefix not in used:
                    break
        names[ns] = prefix
        used.add(prefix)
        return prefix

    # collect every namespace first so all are declared once, on the root
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        ns, _ = split(element.tag)
        if ns:
            prefix_of(ns)
        for key in element.keys():
            ans, _ = split(key)
            if ans and ans != XML_NS:
                prefix_of(ans)
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n']
    _write_element(out, root, names, root_decls=True)
    return "".join(out).encode("utf-8")


XML_NS = "http://www.w3.org/XML/1998/namespace"


def _qname(tag, names):
    """The prefixed name of ``tag`` (attributes of the default namespace unqualified)."""
    ns, local = split(tag)
    if not ns:
        return local
    if ns == XML_NS:
        return f"xml:{local}"
    prefix = names[ns]
    if not prefix:
        # an unprefixed attribute has no namespace: a default-namespace attribute
        # is written unqualified (PIDF and dialog-info attributes are unqualified)
        return local
    return f"{prefix}:{local}"


def _write_element(out, element, names, root_decls=False, default_ns=None, current=None):
    """Append ``element``; ``default_ns`` is the document's default namespace,
    ``current`` the default namespace in force at this point of the output."""
    tag = element.tag
    if not isinstance(tag, str):  # a comment or processing instruction: dropped
        if element.tail:
            out.append(_escape_text(element.tail))
        return
    out.append("<" + _qname(tag, names))
    ns = split(tag)[0]
    if root_decls:
        default_ns = next(n for n, p in names.items() if p == "")
        current = default_ns
        for uri, prefix in names.items():
            attr = f"xmlns:{prefix}" if prefix else "xmlns"
            out.append(f' {attr}="{_escape_attr(uri)}"')
    # an element in no namespace must undeclare the default one, and an element
    # of the default namespace below it must declare it again
    if not ns and current != "":
        out.append(' xmlns=""')
        current = ""
    elif ns == default_ns and current != default_ns:
        out.append(f' xmlns="{_escape_attr(default_ns)}"')
        current = default_ns
    for key, value in element.items():
        out.append(f' {_qname(key, names)}="{_escape_attr(value)}"')
    children = list(element)
    if not children and not element.text:
        out.append("/>")
    else:
        out.append(">")
        if element.text:
            out.append(_escape_text(element.text))
        for child in children:
            _write_element(out, child, names, default_ns=default_ns, current=current)
        out.append(f"</{_qname(tag, names)}>")
    if element.tail:
        out.append(_escape_text(element.tail))


def _escape_text(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attr(text):
    return (_escape_text(text).replace('"', "&quot;").replace("\n", "&#10;")
            .replace("\r", "&#13;").replace("\t", "&#9;"))
