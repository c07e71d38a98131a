"""twistd plugin: ``twistd -n sipdisp -c etc/sipdisp.yaml``."""

from twisted.application.service import ServiceMaker

sipdisp = ServiceMaker(
    "sipdisp", "sipdisp.tap", "SIP proxy and dispatcher for FreeSWITCH clusters", "sipdisp")
