"""Coverage-guided fuzzing of the SIP parser and stream framer with atheris.

Run by `make fuzz` (FUZZ_SECONDS=60 by default): libFuzzer mutates the torture
corpus (tests/data/sip-torture, copied to var/fuzz/corpus) and calls
``test_one_input`` with each input. Anything but SipParseError is a crash:
atheris stops, writes the input under var/fuzz/crashes/ and exits non-zero.
Turn each crash into a case of CRASHES in tests/unit/test_sip_fuzz.py.
"""

import sys

import atheris

with atheris.instrument_imports(include=["sipdisp.sip"]):
    from sipdisp.sip import KEEPALIVE, SipParseError, StreamFramer, parse_message


def _parse(data, datagram):
    try:
        return parse_message(data, datagram=datagram)
    except SipParseError:
        return None


def test_one_input(data):
    """One fuzz input: as a datagram (round trip checked when it parses), then as a
    stream cut in two at a point the input chooses."""
    msg = _parse(data, True)
    if msg is not None:
        wire = msg.to_bytes()
        again = parse_message(wire)  # what we serialise must parse
        if again.to_bytes() != wire:
            raise AssertionError("serialisation is not stable")
    cut = data[0] % (len(data) + 1) if data else 0
    framer = StreamFramer()
    try:
        for chunk in (data[:cut], data[cut:], b""):
            for frame in framer.feed(chunk):
                if frame is not KEEPALIVE:
                    _parse(frame, False)
    except SipParseError:
        pass


def main():
    """Hand the command line (libFuzzer options, corpus dirs) to atheris and fuzz."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
