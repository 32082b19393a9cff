"""Model cards: built into the manifest from a YAML file, signed with it, shown by
``bundle inspect --card`` and on the status page; a manifest without one keeps its bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle.archive import read_bundle_dir
from agent.bundle.manifest import MANIFEST_FILE, BundleManifest
from agent.bundle.signing import sign_bundle_dir
from agent.bundle.trust import TrustStore
from agent.bundle.verify import verify_bundle
from agent.cli import main
from agent.compiler.build import load_card
from agent.errors import CompileError
from agent.intake.http.status_page import render
from agent.limits import Limits

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "fixtures" / "demo"
CARD = DEMO / "model-card.yaml"


def test_build_signs_the_card_into_the_manifest_and_inspect_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"
    command = [
        "bundle", "build", str(DEMO / "model.onnx"),
        "--reference", str(DEMO / "reference.csv"), "--schema", str(DEMO / "schema.yaml"),
        "--name", "deterioration", "--version", "1.0.1", "--card", str(CARD), "-o", str(out),
    ]  # fmt: skip
    assert main(command) == 0
    key = Ed25519PrivateKey.generate()
    sign_bundle_dir(out, key)
    verified = verify_bundle(
        read_bundle_dir(out, Limits()), TrustStore.of(key.public_key()), limits=Limits()
    )
    card = verified.manifest.card
    assert card is not None
    assert card.model_dump() == yaml.safe_load(CARD.read_text())
    capsys.readouterr()
    assert main(["bundle", "inspect", str(out), "--card"]) == 0
    shown = capsys.readouterr().out
    assert "intended use:        Flag adult ward inpatients" in shown
    assert "  - Not validated in paediatric, obstetric or ICU patients." in shown
    assert "validation.auroc 0.83" in shown
    assert main(["bundle", "inspect", str(out)]) == 0
    assert "intended use" not in capsys.readouterr().out  # only when asked


def test_a_bad_card_is_refused_by_field_before_compiling(tmp_path: Path) -> None:
    bad = tmp_path / "card.yaml"
    bad.write_text("intended_use: triage\nlimitatons: [typo]\n")
    with pytest.raises(CompileError, match="limitatons"):
        load_card(bad)
    with pytest.raises(CompileError, match="metrics"):
        load_card({"metrics": {"auroc": "high"}})
    assert load_card(None) is None


def test_a_manifest_without_a_card_keeps_its_signed_bytes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    raw = (DEMO / "build" / "deterioration" / MANIFEST_FILE).read_bytes()
    manifest = BundleManifest.model_validate_json(raw)
    assert manifest.card is None and manifest.canonical_bytes() == raw
    assert main(["bundle", "inspect", str(DEMO / "build" / "deterioration"), "--card"]) == 0
    assert "card:       none" in capsys.readouterr().out


def test_the_status_page_shows_the_card_of_the_active_version() -> None:
    card = load_card(CARD)
    assert card is not None
    status = {
        "site": "test",
        "ready": True,
        "configured": ["deterioration"],
        "act": {"psi": 0.25, "js": 0.1},
        "models": {"deterioration": {"version": "1.0.1"}},
        "cards": {"deterioration": json.loads(card.model_dump_json())},
    }
    page = render(status)
    assert "<summary>Model card</summary>" in page
    assert "<th>intended use</th><td>Flag adult ward inpatients" in page
    assert "Trained on synthetic data only.<br>Not validated" in page
    assert "Model card" not in render({**status, "cards": {}})
