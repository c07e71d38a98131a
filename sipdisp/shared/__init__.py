"""State shared by several sipdisp nodes through Redis (issue 16): dialog
profile and load-balancer counters, dispatcher and load-balancer destination
states, the nonce secret, pike counts and bans. See docs/cluster.md."""
