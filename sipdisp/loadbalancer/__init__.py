"""The resource-based load balancer (OpenSIPS load_balancer): destinations
with capacities per resource, selection by free capacity counted in dialog
profiles, failover, probing and the ``lb.*`` commands (docs/loadbalancer.md)."""

from .balancer import LB, LbDestination, LoadBalancer, profile_name, reply_codes, rows_from_config
from .resources import choose, parse_lb_flags, parse_requested, parse_resources

__all__ = ["LB", "LbDestination", "LoadBalancer", "choose", "parse_lb_flags",
           "parse_requested", "parse_resources", "profile_name", "reply_codes",
           "rows_from_config"]
