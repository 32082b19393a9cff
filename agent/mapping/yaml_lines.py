"""YAML that remembers where each key was written, so load-time errors can name the line.

``load_with_lines`` returns the plain document (built by PyYAML's safe constructor) and a
map from each key path (``("features", "heart_rate", "unit")``) to its 1-based line.
Duplicate keys, which PyYAML silently lets the last one win, are refused.
"""

from __future__ import annotations

from typing import Any

import yaml

from agent.errors import MappingError

Path_ = tuple[str | int, ...]


def load_with_lines(text: str, filename: str) -> tuple[Any, dict[Path_, int]]:
    """Parse ``text``; MappingError with ``filename:line`` on bad YAML or duplicate keys."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        document = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise MappingError(f"{filename}:{line}: not valid YAML ({exc.problem})") from None
    except yaml.YAMLError:
        raise MappingError(f"{filename}:1: not valid YAML") from None
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {(): 1}
    if node is not None:
        _walk(node, (), lines, filename)
    return document, lines


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], filename: str) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            child = (*path, key)
            if child in lines:
                raise MappingError(f"{filename}:{key_node.start_mark.line + 1}: "
                                   f"duplicate key {key!r}")
            lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, lines, filename)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines, filename)


def line_of(lines: dict[Path_, int], path: Path_) -> int:
    """The line of the deepest known prefix of ``path``."""
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return 1
