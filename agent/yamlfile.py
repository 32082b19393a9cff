"""YAML that remembers where each key was written, so load-time errors can name the line.

Both the agent config and the site mappings are hand-edited YAML: an error that says
``agent.yaml:14: models.0.mapping: ...`` saves an operator a search. ``load_with_lines``
returns the plain document (PyYAML's safe constructor) and a map from each key path
(``("features", "heart_rate", "unit")``) to its 1-based line. Duplicate keys, where PyYAML
silently lets the last one win, are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from agent.errors import AgentError, ConfigError

KeyPath = tuple[str | int, ...]


def load_with_lines(
    text: str, filename: str, error: type[AgentError] = ConfigError
) -> tuple[Any, dict[KeyPath, int]]:
    """Parse ``text``; ``error`` naming ``filename:line`` on bad YAML or duplicate keys."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        document = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise error(f"{filename}:{line}: not valid YAML ({exc.problem})") from None
    except yaml.YAMLError:
        raise error(f"{filename}:1: not valid YAML") from None
    finally:
        loader.dispose()
    lines: dict[KeyPath, int] = {(): 1}
    if node is not None:
        _walk(node, (), lines, filename, error)
    return document, lines


def read_with_lines(
    path: Path, error: type[AgentError] = ConfigError
) -> tuple[Any, dict[KeyPath, int]]:
    """``load_with_lines`` of a file; an unreadable file is ``error`` too."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise error(f"{path}: cannot read: {reason}") from None
    return load_with_lines(text, str(path), error)


def _walk(
    node: yaml.Node,
    path: KeyPath,
    lines: dict[KeyPath, int],
    filename: str,
    error: type[AgentError],
) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            child = (*path, key)
            if child in lines:
                line = key_node.start_mark.line + 1
                raise error(f"{filename}:{line}: duplicate key {key!r}")
            lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, lines, filename, error)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines, filename, error)


def line_of(lines: dict[KeyPath, int], path: KeyPath) -> int:
    """The line of the deepest known prefix of ``path``."""
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return 1
