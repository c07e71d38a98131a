"""The built-in route: the Kamailio seed's ``request_route`` (dispatcher in
front of FreeSWITCH), used when ``routing.request_route`` is null.

``etc/sipdisp.yaml`` carries the same text, so operators see and edit it;
a unit test keeps the two identical. Comments name the seed's lines.
"""

import yaml

DEFAULT_ROUTING_YAML = """\
request_route:
  - route: REQINIT                      # per request initial checks
  - if: {is_method: CANCEL}             # CANCEL processing (the core answers
    then:                               # CANCELs itself, RFC 3261 16.10)
      - if: t_check_trans
        then: [{route: RELAY}]
      - exit
  - if: {not: {is_method: ACK}}         # handle retransmissions (the core
    then:                               # absorbs them before routing)
      - if: t_precheck_trans
        then: [t_check_trans, exit]
      - t_check_trans
  - route: WITHINDLG                    # requests within SIP dialogs
  - remove_hf: Route                    # initial requests: no preloaded Route
  - if: {is_method: "INVITE|SUBSCRIBE"}
    then: [record_route]
  - if: {is_method: INVITE}
    then: [{setflag: FLT_ACC}]          # account only INVITEs
  - route: PRESENCE
  - route: REGISTRAR
  - if: {eq: ["$rU", null]}             # request with no username in R-URI
    then:
      - sl_send_reply: [484, "Address Incomplete"]
      - exit
  - route: FROMNODES                    # sipdisp: calls from FreeSWITCH go out
  - route: DISPATCH

routes:
  RELAY:
    - if: {not: t_relay}
      then: [sl_reply_error]
    - exit

  REQINIT:
    - if: {not: {mf_process_maxfwd_header: 10}}
      then:
        - sl_send_reply: [483, "Too Many Hops"]
        - exit
    - if: {not: {sanity_check: ["1511", "7"]}}
      then:
        - xlog: "Malformed SIP message from $si:$sp"
        - exit

  WITHINDLG:
    - if: {not: has_totag}
      then: [return]
    - if: loose_route                   # sequential requests follow the route set
      then:
        - if: {is_method: BYE}
          then: [{setflag: FLT_ACC}, {setflag: FLT_ACCFAILED}]
        - route: RELAY
    - if: {is_method: SUBSCRIBE}
      then:
        - if: is_myself
          then: [{route: PRESENCE}]
    - if: {is_method: ACK}
      then:
        - if: t_check_trans             # ACK after a 487 or a 404 upstream
          then: [t_relay, exit]
        - exit                          # ACK without matching transaction
    - sl_send_reply: [404, "Not here"]
    - exit

  REGISTRAR:
    - if: {not: {is_method: REGISTER}}
      then: [return]
    - sl_send_reply: [404, "No registrar"]   # until the registrar exists
    - exit

  PRESENCE:
    - if: {not: {is_method: "PUBLISH|SUBSCRIBE"}}
      then: [return]
    - sl_send_reply: [404, "Not here"]
    - exit

  FROMNODES:                            # sipdisp: ds_is_from_list, so calls from
    - if: {not: ds_is_from_list}        # a FreeSWITCH node are never dispatched
      then: [return]                    # back to the nodes
    - if: is_myself                     # for a user here: lookup("location")
      then:                             # once the registrar exists
        - sl_send_reply: [404, "Not found"]
        - exit
    - route: RELAY                      # elsewhere: to the Request-URI

  DISPATCH:
    - if: {not: {ds_select_dst: [0, 4]}}   # round robin over set 0
      then:
        - send_reply: [404, "No destination"]
        - exit
    - xdbg: "--- SCRIPT: going to <$ru> via <$du> (attrs: $xavp(_dsdst_=>attrs))"
    - t_set_fr: [0, 2000]               # 2 s per branch, then the next node
    - t_on_failure: RTF_DISPATCH
    - route: RELAY
    - exit

failure_routes:
  RTF_DISPATCH:
    - if: t_is_canceled
      then: [exit]
    - if:                               # next destination: a reply in
        any:                            # proxy.failover_codes (the seed: 500), or
          - all: [{not: t_branch_timeout}, {t_check_status: "${proxy.failover_codes}"}]
          - all: [t_branch_timeout, {not: t_branch_replied}]   # a silent timeout
      then:
        - ds_mark_dst: ip
        - if: ds_next_dst
          then:
            - xdbg: "--- SCRIPT: retrying to <$ru> via <$du> (attrs: $xavp(_dsdst_=>attrs))"
            - t_set_fr: [0, 2000]
            - t_on_failure: RTF_DISPATCH
            - route: RELAY
            - exit
"""


def default_routing():
    """The built-in routing spec as a fresh dict (request_route, routes, failure_routes)."""
    return yaml.safe_load(DEFAULT_ROUTING_YAML)
