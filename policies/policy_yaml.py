"""Reading policy YAML strictly: integer spellings kept, duplicate keys refused.

Why this is its own module: PyYAML's SafeLoader silently keeps the last of two equal keys and
reads ``0043`` as octal; for a document that an approval signs, both must be visible to the
validator instead. This is the only place that turns text into plain data.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml

from policies.policy_checks import PolicyError, _YamlInt


class _PolicyLoader(yaml.SafeLoader):
    """SafeLoader that keeps integer spellings and refuses duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self.construct_object(key_node)
            if key in seen:  # plain scalars (str, int, bool, date, ...) are hashable
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> _YamlInt:
    assert isinstance(node, yaml.ScalarNode)
    value = _YamlInt(loader.construct_yaml_int(node))
    value.text = str(node.value)
    return value


_PolicyLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _read_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=_PolicyLoader)  # a SafeLoader: builds plain data only
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(YAML)"
        problem = ": ".join(p for p in (exc.context, exc.problem) if p)
        raise PolicyError(source, where, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(source, "(YAML)", f"invalid YAML: {exc}") from None
