"""check_address: the same verdict as parse_address, with or without the
remembered heads of earlier values."""

from pathlib import Path

import pytest

from sipdisp.sip import BUILD, address
from sipdisp.sip.address import check_address, parse_address
from sipdisp.sip.errors import SipParseError
from sipdisp.sip.parser import parse_message

TORTURE = Path(__file__).resolve().parents[1] / "data" / "sip-torture"

HEADS = ['<sip:alice@example.com>', '"Alice" <sip:alice@10.0.0.1:5070>',
         'sipp <sip:sipp@10.0.0.1:5070>', '<sip:bob@[2001:db8::1]:5060;transport=tcp>',
         '<sips:x@example.com>']
TAILS = ['', ';tag=abc', ' ;tag=1;x', ';tag=a ; y = b', ';tag="q"', ';tag=', ';;tag=a',
         ';tag=a>', ' junk', ';tag=a,b', ';tag=<x>', ';ta g=1', '\t;tag=z\t', ';tag=a=b']
ODD = ['', '<sip:a@b', 'sip:a@b;tag=1', 'sip:a@b ;tag=1', '"a>b" <sip:x@y>;tag=1',
       '"a>;tag=1', '<sip:a@b>c>;tag=1', 'x<y <sip:a@b>', '<sip:a@b>;x=<y>', '<mailto:x>',
       '<sip:a@-bad->;tag=1', '<sip:a@b:99999>;tag=1', '"unterminated <sip:a@b>;tag=1',
       ' <sip:a@b> ;tag=1', '<sip:a@ b>;tag=1', '<>;tag=1', 'a b <sip:x@y>;tag=1']


def _verdict(fn, text):
    try:
        fn(text)
    except SipParseError:
        return False
    return True


def _values():
    out = [h + t for h in HEADS for t in TAILS] + ODD
    for path in sorted(TORTURE.rglob("*.dat")):
        try:
            msg = parse_message(path.read_bytes())
        except SipParseError:
            continue
        out.extend(v for k in ("from", "to", "contact") for v in msg.get_all(k))
    return out


@pytest.mark.parametrize("warm", [False, True])
def test_check_address_agrees_with_parse_address(warm):
    """Every From/To/Contact value of the torture corpus and every head and
    tail combination gets parse_address's verdict, cold and with every
    head already remembered from a good value."""
    address._good_heads.clear()
    values = _values()
    if warm:
        for head in HEADS:
            check_address(head + ";tag=warm")
        assert address._good_heads
    for value in values:
        assert _verdict(check_address, value) == _verdict(parse_address, value), value
    # a second pass sees the heads the first one remembered
    for value in values:
        assert _verdict(check_address, value) == _verdict(parse_address, value), value


@pytest.mark.skipif(BUILD == "compiled", reason="compiled check_address calls parse_address "
                    "directly: a patched module attribute does not reach it")
def test_a_remembered_head_answers_without_parsing(monkeypatch):
    """After one good value, the next tag of the same head is not parsed again."""
    address._good_heads.clear()
    check_address('sipp <sip:sipp@10.0.0.1:5070>;tag=1')
    calls = []
    monkeypatch.setattr(address, "parse_address", lambda *a: calls.append(a))
    check_address('sipp <sip:sipp@10.0.0.1:5070>;tag=2')
    assert calls == []
    check_address('sipp <sip:sipp@10.0.0.1:5070>;tag="2"')
    assert len(calls) == 1
