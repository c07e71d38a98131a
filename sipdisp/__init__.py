"""sipdisp: a SIP proxy and dispatcher in front of FreeSWITCH clusters."""

__version__ = "0.1.0"
