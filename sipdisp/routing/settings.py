"""
The C{routing} section: the route steps, named routes and Python route
module.  The check that the routing compiles needs every subsystem's route
functions, so L{sipdisp.schema} attaches it.
"""

import copy

from ..config.model import ConfigError, Key, Nullable, Section, Str, Type


class RouteSteps(Type):
    """A route: a YAML list of steps (checked in depth when the routing compiles)."""

    expected = "a list of route steps"

    def parse(self, value, where):
        """A deep copy of the list (the compiler checks the steps themselves)."""
        if not isinstance(value, list):
            raise self.wrong(value, where)
        return copy.deepcopy(value)

    def describe(self):
        """The type's name in docs/configuration.md."""
        return "list of steps"


class RouteTable(Type):
    """Named routes: a mapping of route name to a list of steps."""

    expected = "a mapping of route names to lists of steps"

    def parse(self, value, where):
        """A copy of the mapping, each route checked to be a list."""
        if not isinstance(value, dict):
            raise self.wrong(value, where)
        steps = RouteSteps()
        return {str(name): steps.parse(body, f"{where}.{name}") for name, body in value.items()}

    def describe(self):
        """The type's name in docs/configuration.md."""
        return "mapping of name -> steps"


class BranchFlagNames(Type):
    """Branch flag names: a mapping of name to bit number 0-31."""

    expected = "a mapping of flag names to bit numbers 0-31"

    def parse(self, value, where):
        """The mapping, each bit checked to be 0-31 and each name an identifier."""
        if not isinstance(value, dict):
            raise self.wrong(value, where)
        out = {}
        for name, bit in value.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ConfigError(where, f"bad flag name {name!r}")
            if isinstance(bit, bool) or not isinstance(bit, int) or not 0 <= bit <= 31:
                raise ConfigError(f"{where}.{name}", f"expected a bit number 0-31, got {bit!r}")
            out[name] = bit
        return out

    def describe(self):
        """The type's name in docs/configuration.md."""
        return "mapping of name -> bit"


ROUTING = Section(
    "routing",
    "How requests are routed: a route in Kamailio's vocabulary, compiled once at start-up, or a Python function (docs/routing.md).",
    Key("request_route", Nullable(RouteSteps()), None,
        "The main route; null uses the built-in route, the Kamailio seed's request_route (written out in etc/sipdisp.yaml)."),
    Key("routes", RouteTable(), {},
        "Named routes, called with 'route: NAME'; they add to or replace the built-in ones of the same name."),
    Key("failure_routes", RouteTable(), {},
        "Named failure routes, armed with 't_on_failure: NAME'; they add to or replace the built-in ones."),
    Key("onreply_routes", RouteTable(), {},
        "Named reply routes (Kamailio onreply_route), armed with 't_on_reply: NAME': run for every reply a branch receives, before it is relayed; drop there drops a provisional reply."),
    Key("branch_routes", RouteTable(), {},
        "Named branch routes (Kamailio branch_route), armed with 't_on_branch: NAME': run once per branch just before it is sent; drop there drops the branch."),
    Key("branch_flags", BranchFlagNames(), {"NAT": 6, "FLB_NATB": 6, "SIP_PING_FLAG": 7,
                                             "FLB_NATSIPPING": 7},
        "Names of branch flags (setbflag/isbflagset/resetbflag) and their bits 0-31, stored with a registered contact as usrloc cflags; bit 6 marks a contact NATed, bit 7 has it pinged (nat.ping_nated_only)."),
    Key("module", Nullable(Str()), None,
        "A Python request route 'package.module:function' called with each request's context instead of request_route."),
)
