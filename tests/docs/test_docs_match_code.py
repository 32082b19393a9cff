"""The docs say what the code does: every metric a started pipeline registers is in
docs/metrics.md with its type and labels (and nothing else is), every reason slug of
``agent/errors.py`` is in docs/outcomes.md, every test the docs cite exists, every config key
is in docs/operations.md's reference with its default (and no other key is), and the alert
rules and dashboard query only metrics that exist.

Docs drift silently: a merged change renames a metric, adds a config field or moves a test,
and the page an operator reads still says the old thing. These checks make that a failure.
"""

from __future__ import annotations

import enum
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from agent.config import AgentConfig, load_config
from agent.errors import AgentError
from agent.limits import Limits
from agent.pipeline import ScoringPipeline

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def _subclasses(cls: type[AgentError]) -> Iterator[type[AgentError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """The cells of every table row under ``heading`` (up to the next heading of its level
    or above), header and rule lines left out."""
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n")
    end = len(text)
    for match in re.finditer(r"\n(#+) ", text[start + 1 :]):
        if len(match.group(1)) <= len(level):
            end = start + 1 + match.start()
            break
    rows = []
    for line in text[start:end].splitlines():
        if line.startswith("| `"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


# --- metrics ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """name -> (type, labels) of every metric family a pipeline started from a config with
    the audit log and live performance on registers (counters under their ``_total``)."""
    folder = tmp_path_factory.mktemp("pipeline")
    (folder / "mapping.yaml").write_text(
        (REPO / "config" / "mappings" / "demo-site.yaml").read_text(encoding="utf-8")
    )
    (folder / "audit.key").write_text("a" * 64)
    (folder / "agent.yaml").write_text(
        "store: {root: store}\n"
        "trust: {keys: []}\n"
        "models: [{name: deterioration, mapping: mapping.yaml}]\n"
        "audit: {path: audit.jsonl, hmac_key_file: audit.key}\n"
        "performance: {enabled: true}\n"
    )
    registry = CollectorRegistry()
    pipeline = ScoringPipeline.from_config(load_config(folder / "agent.yaml"), registry)
    try:
        # label names as declared, so series with no sample yet are checked too
        found: dict[str, tuple[str, str]] = {}
        for collector in registry._collector_to_names:
            names = getattr(collector, "_labelnames", None)
            kind = getattr(collector, "_type", None)
            if names is not None and kind is not None:  # the client's Counter and Gauge
                found[collector._name] = (kind, ", ".join(sorted(names)))  # type: ignore[attr-defined]
            else:  # the collectors that build their families at a scrape
                for family in collector.describe():  # type: ignore[attr-defined]
                    found[family.name] = (family.type, ", ".join(sorted(family._labelnames)))
    finally:
        pipeline.stop()
    return {
        (f"{name}_total" if kind == "counter" else name): (kind, labels)
        for name, (kind, labels) in found.items()
    }


def test_metrics_doc_lists_exactly_the_registered_metrics_with_their_labels(
    registered: dict[str, tuple[str, str]],
) -> None:
    text = (DOCS / "metrics.md").read_text(encoding="utf-8")
    documented = {}
    for name, kind, labels in re.findall(
        r"^\| `(edge_agent_\w+)` \| (\w+) \| ([^|]*)\|", text, re.M
    ):
        labels = "" if labels.strip() == "(none)" else labels
        documented[name] = (
            kind,
            ", ".join(sorted(x.strip() for x in labels.split(",") if x.strip())),
        )
    assert documented == registered


def test_every_label_name_is_in_the_label_table(registered: dict[str, tuple[str, str]]) -> None:
    text = (DOCS / "metrics.md").read_text(encoding="utf-8")
    table = {row[0].strip("`") for row in _table_rows(text, "## Labels")}
    used = {label for _, labels in registered.values() for label in labels.split(", ") if label}
    assert used <= table, used - table


def test_alert_rules_and_dashboard_query_registered_metrics(
    registered: dict[str, tuple[str, str]],
) -> None:
    suffixes = ("_bucket", "_sum", "_count", "_created")
    for path in (
        REPO / "deploy" / "prometheus" / "edge-agent.rules.yml",
        REPO / "deploy" / "prometheus" / "edge-agent.rules.test.yml",
        REPO / "deploy" / "grafana" / "edge-agent.json",
    ):
        for name in set(re.findall(r"edge_agent_\w+", path.read_text(encoding="utf-8"))):
            base = next((name[: -len(s)] for s in suffixes if name.endswith(s)), name)
            assert name in registered or base in registered, f"{path.name}: {name}"


def test_operations_names_every_alert_rule() -> None:
    rules = (REPO / "deploy" / "prometheus" / "edge-agent.rules.yml").read_text(encoding="utf-8")
    operations = (DOCS / "operations.md").read_text(encoding="utf-8")
    for alert in re.findall(r"- alert: (\w+)", rules):
        assert f"`{alert}`" in operations, alert


# --- reasons and test references ---------------------------------------------------------


def test_every_reason_slug_is_in_the_outcome_vocabulary_or_named_beside_it() -> None:
    text = (DOCS / "outcomes.md").read_text(encoding="utf-8")
    slugs = {cls.reason for cls in _subclasses(AgentError)}
    missing = sorted(s for s in slugs if f"`{s}`" not in text)
    assert not missing, f"reasons not in docs/outcomes.md: {missing}"


def test_every_test_the_docs_cite_exists() -> None:
    docs = [REPO / "README.md", *DOCS.glob("*.md"), *(DOCS / "adr").glob("*.md")]
    cited = 0
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        for path, name in re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", text):
            cited += 1
            source = REPO / path
            assert source.is_file(), f"{doc.name}: {path}"
            if name:
                assert re.search(rf"(def|class) {name}\b", source.read_text(encoding="utf-8")), (
                    f"{doc.name}: {path}::{name}"
                )
    assert cited > 10  # the pattern still finds what the docs write


# --- configuration -----------------------------------------------------------------------


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The config sections an annotation holds (``X``, ``X | None``, ``list[X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list or any(
        _is_list(arg) for arg in typing.get_args(annotation)
    )


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_render(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "none"
    return str(value) or '""'


def config_keys(
    section: type[BaseModel] = AgentConfig, prefix: str = ""
) -> Iterator[tuple[str, str]]:
    """Every key a site can write, as ``section.key`` (``[]`` for a list of sections), and
    its default as docs/operations.md writes it (a ``limits`` key: the ``Limits`` value)."""
    for name, field in section.model_fields.items():
        key = prefix + name
        inner = _models(field.annotation)
        if inner:
            for model in inner:
                yield from config_keys(model, key + ("[]." if _is_list(field.annotation) else "."))
            continue
        if field.default is not PydanticUndefined:
            default = field.default
        elif field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
        else:
            yield key, "required"
            continue
        if prefix == "limits." and default is None:
            default = getattr(Limits(), name)
        yield key, _render(default)


def test_operations_reference_lists_every_config_key_with_its_default() -> None:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    documented = {
        row[0].strip("`"): row[1].strip("`")
        for row in _table_rows(text, "## Configuration reference")
    }
    assert documented == dict(config_keys())


def test_every_code_path_the_docs_name_exists() -> None:
    docs = [REPO / "README.md", *DOCS.glob("*.md"), *(DOCS / "adr").glob("*.md")]
    for doc in docs:
        for path in re.findall(r"`(agent/[\w/.]+)`", doc.read_text(encoding="utf-8")):
            assert (REPO / path).exists(), f"{doc.name}: {path}"


def test_architecture_names_every_module_of_the_package() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    package = REPO / "agent"
    parts = [p.name for p in package.glob("*.py") if p.name != "__init__.py"]
    parts += [f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()]
    unnamed = sorted(
        part for part in parts if f"`{part}" not in text
    )  # `intake/http/` names intake/
    assert not unnamed, f"not in docs/architecture.md: {unnamed}"
