"""Via.branch, kept in a slot, says what the branch parameter says."""

import pytest

from sipdisp.sip.via import Via, parse_via


@pytest.mark.parametrize("text", [
    "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1",
    "SIP/2.0/udp host;rport;BRANCH=z9hG4bKx;received=1.2.3.4",
    "SIP/2.0/TCP host;branch",
    "SIP/2.0/UDP host;branch=a;branch=b",
    "SIP/2.0/UDP host;rport=5060",
    "SIP / 2.0 / TLS host : 5061 ; branch = z9hG4bKq",
])
def test_parsed_branch_is_the_first_branch_parameter(text):
    """The slot holds the first branch parameter ('' when bare, None when absent)."""
    via = parse_via(text)
    assert via.branch == via.param("branch")
    assert via.transport == via.transport.upper()


def test_set_param_keeps_the_branch_current():
    """Changing the branch with set_param changes Via.branch and the text."""
    via = parse_via("SIP/2.0/UDP host;branch=z9hG4bKold")
    via.set_param("branch", "z9hG4bKnew")
    assert via.branch == "z9hG4bKnew" and "branch=z9hG4bKnew" in str(via)
    built = Via("UDP", "host", 5060, [("branch", "z9hG4bKb")])
    assert built.branch == "z9hG4bKb"
    assert Via("UDP", "host").branch is None
