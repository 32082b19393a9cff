from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.yamlfile import read_yaml


def test_line_of_follows_keys_and_indexes(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("site: x\nmodels:\n  - name: m\n    mapping: map.yaml\n  - name: n\n")
    document = read_yaml(path)
    assert document.line_of(("models", 0, "mapping")) == 4
    assert document.line_of(("models", 1)) == 5
    # an unknown key stops at the deepest known node
    assert document.line_of(("models", 0, "missing")) == 3


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\nb: [unclosed\nc: 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+"):
        read_yaml(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_yaml(tmp_path / "nope.yaml")
