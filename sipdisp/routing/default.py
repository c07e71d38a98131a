"""The built-in route: the Kamailio seed's ``request_route`` (dispatcher in
front of FreeSWITCH), used when ``routing.request_route`` is null.

``etc/sipdisp.yaml`` carries the same text, so operators see and edit it;
a unit test keeps the two identical. Comments name the seed's lines.
"""

import yaml

DEFAULT_ROUTING_YAML = """\
request_route:
  - route: REQINIT                      # per request initial checks
  - route: NATDETECT                    # sipdisp: NAT detection (Kamailio WITH_NAT)
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
  - route: AUTH                         # sipdisp: digest auth when auth.enabled
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
  - route: MSILO                        # sipdisp: offline messages (msilo.enabled)
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
    - if: {all: [{is_method: OPTIONS}, is_myself, {eq: ["$rU", null]}]}
      then:                            # keepalive pings to sipdisp itself
        - sl_send_reply: [200, "Keepalive"]  # (Kamailio's default REQINIT)
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

  NATDETECT:                            # Kamailio's route[NATDETECT]: a client
    - force_rport                       # behind NAT registers its source address
    - if: {nat_uac_test: 19}            # (received) and gets its Contact fixed
      then:
        - if: {is_method: REGISTER}
          then: [fix_nated_register]
        - if: {all: [{not: {is_method: REGISTER}}, {ne: ["$proto", ws]}, {ne: ["$proto", wss]}]}
          then: [fix_nated_contact]     # not for WebSocket clients: their flow
                                          # token reaches them (RFC 7118)
        - setflag: FLT_NATS

  AUTH:                                 # Kamailio's route[AUTH] (WITH_AUTH)
    - if: {eq: ["${auth.enabled}", false]}
      then: [return]
    - if: {is_method: "ACK|CANCEL"}
      then: [return]
    - if: is_trusted                    # FreeSWITCH nodes (ds_is_from_list) and
      then: [return]                    # auth.trusted: never challenged
    - if: {any: [{is_method: REGISTER}, is_from_local]}
      then:
        - if: {not: {auth_check: ["", subscriber]}}   # 401 REGISTER, 407 others
          then: [{auth_challenge: ["", 0]}, exit]
        - if: {is_method: REGISTER}
          then:
            - if: {not: db_check_to}
              then: [{sl_send_reply: [403, "Forbidden auth ID"]}, exit]
          else:
            - if: {not: db_check_from}
              then: [{sl_send_reply: [403, "Forbidden auth ID"]}, exit]
            - consume_credentials
        - return
    - if: {not: is_uri_host_local}      # neither from nor to a local user
      then: [{sl_send_reply: [403, "Relay Forbidden"]}, exit]

  REGISTRAR:                            # save("location"): 200 listing the bindings
    - if: {not: {is_method: REGISTER}}  # (registrar.enabled false: 404 No registrar)
      then: [return]
    - save: location
    - if: {eq: ["${msilo.enabled}", true]}  # msilo: messages stored while she was
      then: [m_dump]                    # offline go to the contact she registered
    - exit

  MSILO:                                # msilo (msilo.enabled): a MESSAGE for a
    - if: {any: [{eq: ["${msilo.enabled}", false]}, {not: {is_method: MESSAGE}}, {not: is_myself}]}
      then: [return]                    # local user reaches her contacts, or is
    - if: {lookup: location}            # stored (202 Accepted) until her next
      then: [{route: RELAY}]            # REGISTER
    - if: {not: m_store}                # over msilo.max_messages
      then: [{sl_send_reply: [480, "Temporarily Unavailable"]}, exit]

  PRESENCE:                             # presence (presence.enabled): PUBLISH and
    - if: {not: {is_method: "PUBLISH|SUBSCRIBE"}}  # SUBSCRIBE for our own domains
      then: [return]                    # (and in-dialog SUBSCRIBEs to us) are
    - if: {all: [{eq: ["${presence.enabled}", true]}, is_myself]}  # answered here
      then:
        - if: {is_method: PUBLISH}
          then:
            # an authenticated user publishes her own state only (the
            # presentity is the To user): not a neighbour's
            - if: {all: [{eq: ["${auth.enabled}", true]}, {not: is_trusted}, {not: db_check_to}]}
              then: [{sl_send_reply: [403, "Publish Your Own State Only"]}, exit]
            - handle_publish            # RFC 3903: 200 with SIP-ETag, 412, 489 ...
            - exit
        - handle_subscribe              # RFC 6665: 200 and a NOTIFY, 481 ...
        - exit
    - sl_send_reply: [404, "Not here"]
    - exit

  FROMNODES:                            # sipdisp: ds_is_from_list, so calls from
    - if: {not: ds_is_from_list}        # a FreeSWITCH node are never dispatched
      then: [return]                    # back to the nodes
    - if: is_myself                     # for a user here: her registered contacts
      then: [{route: LOCATION}]
    - route: RELAY                      # elsewhere: to the Request-URI

  LOCATION:                             # Kamailio's route[LOCATION]: fork in
    - if: {lookup: location}            # parallel to every reachable contact
      then: [{route: RELAY}]
    - if: {registered: location}        # registered, but no contact reachable
      then:
        - sl_send_reply: [480, "Temporarily Unavailable"]
        - exit
    - sl_send_reply: [404, "Not found"]
    - exit

  DISPATCH:
    - if: {not: {ds_select_dst: [0, 4]}}   # round robin over set 0
      then:
        - send_reply: [404, "No destination"]
        - exit
    - xdbg: "--- SCRIPT: going to <$ru> via <$du> (attrs: $xavp(_dsdst_=>attrs))"
    - t_set_fr: [0, "${proxy.branch_timeout}"]  # 2 s per branch, then the next node
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
            - t_set_fr: [0, "${proxy.branch_timeout}"]
            - t_on_failure: RTF_DISPATCH
            - route: RELAY
            - exit
"""


def default_routing():
    """The built-in routing spec as a fresh dict (request_route, routes, failure_routes)."""
    return yaml.safe_load(DEFAULT_ROUTING_YAML)
