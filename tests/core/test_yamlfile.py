from pathlib import Path

import pytest

from agent.errors import ConfigError, MappingError
from agent.yamlfile import line_of, load_with_lines, read_with_lines


def test_lines_follow_keys_and_indexes(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("site: x\nmodels:\n  - name: m\n    mapping: map.yaml\n  - name: n\n")
    document, lines = read_with_lines(path)
    assert document["models"][1]["name"] == "n"
    assert line_of(lines, ("models", 0, "mapping")) == 4
    assert line_of(lines, ("models", 1)) == 5
    # an unknown key falls back to the deepest known prefix
    assert line_of(lines, ("models", 0, "missing")) == 3


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\nb: [unclosed\nc: 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: not valid YAML"):
        read_with_lines(path)


def test_duplicate_keys_are_refused_with_the_callers_error() -> None:
    with pytest.raises(MappingError, match=r"m\.yaml:3: duplicate key 'a'"):
        load_with_lines("a: 1\nb: 2\na: 3\n", "m.yaml", MappingError)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_with_lines(tmp_path / "nope.yaml")
