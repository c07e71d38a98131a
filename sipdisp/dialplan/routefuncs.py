"""The dialplan module's functions in the YAML route, declared in a routing
function table by :func:`register`.

    - dp_translate: [0, "$rU/$rU"]                    # the OpenSIPS seed's dp_translate("0","$rU/$rU")
    - dp_translate: [0, "$rU/$rU", "$var(attrs)"]     # attrs into a variable (OpenSIPS 1.x/2.x)
    - dp_translate: [0, "$rU", "$var(out)", "$var(attrs)"]   # OpenSIPS 3.x: input, output, attrs
    - dp_replace: [240, "+49$rU", "$var(newval)"]     # Kamailio dp_replace
    - if: {dp_match: [1, "$rU"]}                      # Kamailio dp_match: attrs only
      then: [{xlog: "service $var(attrs)"}]

The dialplan id is a number or a pseudo-variable holding one. The input is
any pseudo-variable (a template with dp_replace/dp_match, and the OpenSIPS
3.x form); the output a variable a route may assign (``$rU``, ``$ru``,
``$rd``, ``$du``, ``$var(x)``, ``$avp(x)``). The attrs of the matching rule
go to the named variable, else to ``dialplan.attrs_pvar``. Each call is
false when the dialplan id has no rules, no rule matches, or the rule's
subst_exp does not match the input.

A route that runs again after a suspension (a database read further on)
comes back here with the output already written into the input: each call
site keeps its outcome in ``ctx.vars`` and does not translate its own
output a second time.
"""

import itertools

from ..routing.pv import PV_RE
from ..routing.plugin import RouteError, int_arg, nargs, setter_arg, template_arg, value_arg

_sites = itertools.count(1)


def _dialplan(ctx):
    module = ctx.core.modules.dialplan
    if module is None:
        raise RuntimeError("the dialplan module is not running (dialplan.enabled)")
    return module


def translate(ctx, dpid, text, output=None, attrs=None, site=None):
    """Translate ``text`` with the rules of ``dpid``, writing the result with
    ``output(ctx, value)`` and the rule's attrs with ``attrs(ctx, value)``
    (either may be None); True if a rule matched and its substitution
    worked."""
    record = ctx.vars.get(site) if site is not None else None
    if record is not None and text in record:
        return True  # this site's input or output again: a re-run, already written
    if text is None or text == "":
        return False
    try:
        dpid = int(dpid)
    except (TypeError, ValueError):
        return False
    result = _dialplan(ctx).translate(dpid, str(text), ctx)
    if result is None or result.output is None:
        return False
    if attrs is not None:
        attrs(ctx, result.attrs)
    if output is not None:
        output(ctx, result.output)
        if site is not None:
            ctx.vars[site] = (str(text), result.output)
    return True


def _dpid_arg(value, where, env):
    if isinstance(value, str) and value.strip().startswith("$"):
        return value_arg(value, where, env)
    dpid = int_arg(value, where, "the dialplan id")
    return lambda ctx: dpid


def _is_pv(text):
    return isinstance(text, str) and PV_RE.fullmatch(text.strip()) is not None


def _attrs_arg(args, index, where, env):
    """The attrs setter: the argument at ``index``, else ``dialplan.attrs_pvar``."""
    if len(args) > index and args[index] not in (None, ""):
        return setter_arg(str(args[index]), where)
    cfg = env.config
    section = getattr(cfg, "dialplan", None) if cfg is not None else None
    if section is not None and section.attrs_pvar:
        return setter_arg(section.attrs_pvar, where)
    return None


def _check_enabled(where, name, env):
    cfg = env.config
    section = getattr(cfg, "dialplan", None) if cfg is not None else None
    if section is not None and not section.enabled:
        raise RouteError(where, f"{name} needs dialplan.enabled: true")


def _dp_translate(args, where, env):
    """Translate by the rules of a dialplan id: ``[dpid(, "src/dst"(, attrs_var))]`` or ``[dpid, input, output(, attrs_var)]``."""
    nargs("dp_translate", args, where, 1, 4,
          'dpid[, "src/dst"[, attrs]] or dpid, input, output[, attrs]')
    _check_enabled(where, "dp_translate", env)
    dpid = _dpid_arg(args[0], where, env)
    spec = str(args[1]) if len(args) > 1 else "$rU/$rU"
    src, sep, dst = spec.partition("/")
    if sep and _is_pv(src) and _is_pv(dst):
        # Kamailio and OpenSIPS 1.x/2.x: "src/dst", then the attrs variable
        if len(args) > 3:
            raise RouteError(where, 'dp_translate with "src/dst" takes at most 3 arguments')
        source, output, attrs = value_arg(src, where, env), setter_arg(dst, where), \
            _attrs_arg(args, 2, where, env)
    elif sep and _is_pv(src) and not dst:
        source, output, attrs = value_arg(src, where, env), None, _attrs_arg(args, 2, where, env)
    else:
        # OpenSIPS 3.x: input (any string), output variable, attrs variable
        source = template_arg(spec, where, env) if "$" in spec else (lambda ctx: spec)
        output = setter_arg(str(args[2]), where) if len(args) > 2 and args[2] else None
        attrs = _attrs_arg(args, 3, where, env)
    site = f"_dp_site:{next(_sites)}"
    return lambda ctx: translate(ctx, dpid(ctx), source(ctx), output, attrs, site)


def _dp_replace(args, where, env):
    """Translate a value into a variable: ``[dpid, input, output]`` (Kamailio dp_replace)."""
    nargs("dp_replace", args, where, 3, 3, "dpid, input, output")
    _check_enabled(where, "dp_replace", env)
    dpid = _dpid_arg(args[0], where, env)
    source = template_arg(str(args[1]), where, env)
    output = setter_arg(str(args[2]), where)
    attrs = _attrs_arg(args, 3, where, env)
    site = f"_dp_site:{next(_sites)}"
    return lambda ctx: translate(ctx, dpid(ctx), source(ctx), output, attrs, site)


def _dp_match(args, where, env):
    """True if a rule of the dialplan id matches; its attrs go to the attrs variable: ``[dpid, input(, attrs_var)]``."""
    nargs("dp_match", args, where, 2, 3, "dpid, input[, attrs]")
    _check_enabled(where, "dp_match", env)
    dpid = _dpid_arg(args[0], where, env)
    source = template_arg(str(args[1]), where, env)
    attrs = _attrs_arg(args, 2, where, env)
    return lambda ctx: translate(ctx, dpid(ctx), source(ctx), None, attrs)


def register(table):
    """Declare the dialplan module's functions in ``table``."""
    table.add("dp_translate", _dp_translate, action=True, condition=True)
    table.add("dp_replace", _dp_replace, action=True, condition=True)
    table.add("dp_match", _dp_match, action=True, condition=True)
