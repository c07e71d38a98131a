"""
The C{routing} section: the route steps, named routes and Python route
module.  The check that the routing compiles needs every subsystem's route
functions, so L{sipdisp.schema} attaches it.
"""

import copy

from ..config.model import Key, Nullable, Section, Str, Type


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


ROUTING = Section(
    "routing",
    "How requests are routed: a route in Kamailio's vocabulary, compiled once at start-up, or a Python function (docs/routing.md).",
    Key("request_route", Nullable(RouteSteps()), None,
        "The main route; null uses the built-in route, the Kamailio seed's request_route (written out in etc/sipdisp.yaml)."),
    Key("routes", RouteTable(), {},
        "Named routes, called with 'route: NAME'; they add to or replace the built-in ones of the same name."),
    Key("failure_routes", RouteTable(), {},
        "Named failure routes, armed with 't_on_failure: NAME'; they add to or replace the built-in ones."),
    Key("module", Nullable(Str()), None,
        "A Python request route 'package.module:function' called with each request's context instead of request_route."),
)
