"""``agent.load(bundle).predict(...)`` and ``edge-agent bundle predict`` on pandas-written
data (issue 17): empty cells and ``NA`` are missing, level names are categories, and both
paths give the same numbers, which match the estimator itself."""

from __future__ import annotations

import argparse
import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier

import agent
from agent.cli import bundle_build_cmd
from agent.errors import RecordError

SCHEMA = {"features": {"size": {"levels": ["small", "large"]}}}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, object]:
    """A HistGradientBoosting model (it learns where missing values go) fitted on a frame
    with missing values and a categorical column coded 0/1, built into a bundle."""
    data = load_breast_cancer(as_frame=True).frame
    frame = data[["mean radius", "mean texture", "mean smoothness"]].astype(np.float32)
    frame.loc[::7, "mean texture"] = np.nan
    frame["size"] = (data["mean area"] > data["mean area"].median()).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(
            frame, data["target"]
        )
    folder = tmp_path_factory.mktemp("load")
    reference = frame.assign(size=frame["size"].map({0.0: "small", 1.0: "large"}))
    reference.to_csv(folder / "reference.csv", index=False)
    out = agent.build(
        model,
        reference=folder / "reference.csv",
        name="bc",
        version="1.0.0",
        out=folder / "bundle",
        schema=SCHEMA,
    )
    return out, frame, model


def _site_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The data as a site holds it: level names, pandas' own missing value in one column."""
    named = frame.assign(size=frame["size"].map({0.0: "small", 1.0: "large"}))
    named["mean smoothness"] = named["mean smoothness"].astype(object)
    named.loc[3, "mean smoothness"] = pd.NA
    return named


def test_a_frame_in_gives_a_frame_out_matching_the_estimator(
    fitted: tuple[Path, pd.DataFrame, object],
) -> None:
    bundle, frame, model = fitted
    site = _site_frame(frame)
    result = agent.load(bundle).predict(site[list(reversed(site.columns))])
    assert list(result.columns) == ["label", "probability_0", "probability_1"]
    assert result.index.equals(site.index)
    expected_frame = frame.copy()
    expected_frame.loc[3, "mean smoothness"] = np.nan
    expected = model.predict_proba(expected_frame)  # type: ignore[attr-defined]
    got = result[["probability_0", "probability_1"]].to_numpy()
    assert np.abs(got - expected).max() <= 1e-5
    labels = model.predict(expected_frame).astype(str)  # type: ignore[attr-defined]
    assert (result["label"].to_numpy() != labels).sum() == 0


def test_bundle_predict_reads_a_pandas_written_csv_like_load(
    fitted: tuple[Path, pd.DataFrame, object], tmp_path: Path
) -> None:
    bundle, frame, _ = fitted
    site = _site_frame(frame)
    site.to_csv(tmp_path / "site.csv", index=False)  # NaN and pd.NA written as empty cells
    text = (tmp_path / "site.csv").read_text().splitlines()
    assert ",," in text[8] and ",," in text[4]  # rows 7 and 3 have empty cells
    cells = text[1].split(",")
    text[1] = ",".join([cells[0], "NA", *cells[2:]])  # R's missing marker
    (tmp_path / "site.csv").write_text("\n".join(text) + "\n")
    site.loc[0, "mean texture"] = np.nan
    parser = argparse.ArgumentParser()
    bundle_build_cmd.register(parser.add_subparsers(required=True))
    args = parser.parse_args(
        ["predict", str(bundle), str(tmp_path / "site.csv"), "-o", str(tmp_path / "out.csv")]
    )
    assert args.func(args) == 0
    with (tmp_path / "out.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    from_frame = agent.load(bundle).predict(site)
    assert [r["label"] for r in rows] == from_frame["label"].tolist()
    cli = np.array([[float(r["probability_0"]), float(r["probability_1"])] for r in rows])
    assert np.abs(cli - from_frame[["probability_0", "probability_1"]].to_numpy()).max() <= 1e-8


def test_rows_in_give_rows_of_floats_out(fitted: tuple[Path, pd.DataFrame, object]) -> None:
    bundle = fitted[0]
    model = agent.load(bundle)
    rows = [
        [14.0, None, 0.1, "large"],
        [14.0, "NA", 0.1, "large"],
        [14.0, "", 0.1, "large"],
        {"size": "large", "mean smoothness": 0.1, "mean texture": math.nan, "mean radius": 14.0},
    ]
    results = model.predict(rows)
    assert all(isinstance(v, float) for row in results for v in row)
    assert results[0] == results[1] == results[2] == results[3]
    assert results[0][0] in (0.0, 1.0) and abs(sum(results[0][1:]) - 1.0) <= 1e-6


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[14.0, 20.0, 0.1, "medium"]], r"^row 0: 'size' is not one of its levels$"),
        ([[14.0, "twenty", 0.1, "large"]], r"^row 0: 'mean texture' is not a finite number$"),
        ([[14.0, 20.0, 0.1]], r"^row 0 has 3 values, the model reads 4$"),
        (
            [{"mean radius": 14.0, "size": "large"}],
            r"^row 0 lacks features: mean texture, mean smoothness$",
        ),
    ],
)
def test_a_cell_that_cannot_be_read_is_named_without_its_value(
    fitted: tuple[Path, pd.DataFrame, object], rows: list[list[object]], message: str
) -> None:
    with pytest.raises(RecordError, match=message):
        agent.load(fitted[0]).predict(rows)


def test_a_frame_without_a_feature_is_refused_naming_it(
    fitted: tuple[Path, pd.DataFrame, object],
) -> None:
    bundle, frame, _ = fitted
    with pytest.raises(RecordError, match=r"^the DataFrame lacks columns: mean texture$"):
        agent.load(bundle).predict(frame.drop(columns="mean texture"))


def test_load_rows_and_csv_need_neither_numpy_nor_pandas_nor_onnx(tmp_path: Path) -> None:
    """A hospital server has no [build] extra: scoring rows with agent.load, or a CSV as
    ``bundle predict`` does (read, one float32 matrix through the module, CSV out), imports
    none of the data-science stack (checked in a fresh interpreter)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]  # the interpreter imports this checkout's agent
    demo = root / "fixtures" / "demo" / "build" / "deterioration"
    features = tmp_path / "features.csv"
    features.write_text((root / "fixtures" / "demo" / "holdout.csv").read_text())
    script = (
        "import sys, agent\n"
        "from pathlib import Path\n"
        f"model = agent.load({str(demo)!r})\n"
        "rows = model.predict([[86, 17, 36.3, 95, 96, 'NA', 139, 62, 'male']])\n"
        "assert len(rows) == 1 and len(rows[0]) == 3, rows\n"
        f"assert model.score_file(Path({str(features)!r})).count('\\n') == 201\n"
        "print(sorted(m for m in ('numpy', 'pandas', 'onnx', 'sklearn', 'pyarrow') "
        "if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=root,
    )
    assert done.stdout.strip() == "[]"


def _bundle_predict(*argv: str) -> None:
    parser = argparse.ArgumentParser()
    bundle_build_cmd.register(parser.add_subparsers(required=True))
    args = parser.parse_args(["predict", *argv])
    assert args.func(args) == 0


def test_parquet_in_and_out_scores_like_a_frame(
    fitted: tuple[Path, pd.DataFrame, object], tmp_path: Path
) -> None:
    """A pandas-written Parquet file (nulls, level names as a category column) through
    ``bundle predict``, Parquet out: the same numbers as ``predict(frame)``."""
    pq = pytest.importorskip("pyarrow.parquet")
    bundle, frame, _ = fitted
    site = _site_frame(frame)
    site["size"] = site["size"].astype("category")
    site["mean smoothness"] = site["mean smoothness"].astype("Float64")  # pd.NA -> a null
    site.to_parquet(tmp_path / "site.parquet")
    _bundle_predict(str(bundle), str(tmp_path / "site.parquet"), "-o", str(tmp_path / "o.parquet"))
    table = pq.read_table(tmp_path / "o.parquet").to_pandas()
    expected = agent.load(bundle).predict(_site_frame(frame))
    assert list(table.columns) == ["label", "probability_0", "probability_1"]
    assert table["label"].tolist() == expected["label"].tolist()
    got = table[["probability_0", "probability_1"]].to_numpy()
    assert np.abs(got - expected[["probability_0", "probability_1"]].to_numpy()).max() == 0.0


def test_parquet_without_pyarrow_is_refused_saying_how_to_get_it(
    fitted: tuple[Path, pd.DataFrame, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import raises ImportError
    (tmp_path / "site.parquet").write_bytes(b"PAR1")
    with pytest.raises(RecordError, match=r"\[parquet\]"):
        agent.load(fitted[0]).score_file(tmp_path / "site.parquet")


def test_bundle_predict_adds_contributions_that_add_up_to_the_log_odds(
    fitted: tuple[Path, pd.DataFrame, object], tmp_path: Path
) -> None:
    bundle, frame, _ = fitted
    _site_frame(frame).to_csv(tmp_path / "site.csv", index=False)
    out = tmp_path / "out.csv"
    _bundle_predict(str(bundle), str(tmp_path / "site.csv"), "-o", str(out), "--contributions")
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = ["mean radius", "mean texture", "mean smoothness", "size"]
    assert list(rows[0])[3:] == [f"contribution_{n}" for n in names] + ["contribution_base"]
    for row in rows[:50]:
        margin = math.fsum(float(row[f"contribution_{n}"]) for n in names)
        margin += float(row["contribution_base"])
        assert 1 / (1 + math.exp(-margin)) == pytest.approx(float(row["probability_1"]), abs=1e-6)
