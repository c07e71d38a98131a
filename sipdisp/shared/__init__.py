"""State shared by several sipdisp nodes through Redis (issue 16): dialog
profile and load-balancer counters, dispatcher destination states and the
nonce secret. See docs/cluster.md."""
