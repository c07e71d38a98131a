"""
Read a YAML configuration file and validate it against a schema.
"""

import yaml

from sipdisp.config.model import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key written twice in one mapping."""


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: let PyYAML report it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_error(path, error):
    mark = getattr(error, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    if context and getattr(error, "context_mark", None) is not None:
        problem = f"{problem} ({context} at line {error.context_mark.line + 1})"
    return ConfigError(where, f"YAML error: {problem}")


def load_config(path, schema):
    """
    Read the YAML file at C{path}, validate it against C{schema} (a
    L{Schema}) and return a L{Config}.

    An empty file is valid and gives all defaults.  Raises L{ConfigError}
    for an unreadable file, a YAML syntax error (located as C{file:line}) or
    an invalid value (located by its dotted key).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        raise _yaml_error(path, e) from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(str(path), "expected a mapping of sections at the top level")
    return schema.validate(raw)
