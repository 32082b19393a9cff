"""A bundle directory scored in a notebook or a script: ``agent.load(path).predict(data)``,
and the file reading and writing that ``edge-agent bundle predict`` shares with it.

This is a data scientist's tool for checking a build, not a trust decision: ``model.wasm``
is checked against the manifest's sha256 and size, the signature is not verified
(``edge-agent bundle verify`` does that). The module runs in the same wasmtime sandbox
the agent uses.

Cells are read as on every path of the agent (``agent.cells``): empty cells and ``NA``,
``NaN``, ``null`` (any case), ``None``, a float NaN or pandas' ``NA`` are missing, and here
become NaN for the module (models that learnt a missing-value direction handle it, others
give NaN outputs); a categorical feature takes its level names; anything else must be a
finite number. pandas is optional and imported only when a DataFrame is passed; pyarrow
(the ``[parquet]`` extra) only when a Parquet file is named.
"""

from __future__ import annotations

import array
import csv
import hashlib
import io
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.bundle.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    BundleManifest,
    OutputKind,
)
from agent.bundle.verify import file_limit, is_safe_name
from agent.cells import UnreadableCell, encode_row, encode_text_column, label_text
from agent.contributions import NOT_AVAILABLE, Explainer, load_explainer
from agent.errors import BundleError, DigestMismatch, RecordError
from agent.limits import Limits
from agent.runtime.model import WasmModel
from agent.types import Contributions


def read_bundle(directory: Path, limits: Limits) -> tuple[BundleManifest, dict[str, bytes]]:
    """The manifest and every file it lists (``model.wasm``, ``explain.json`` when built),
    each matching its sha256 and size (``DigestMismatch``)."""
    manifest_path = directory / MANIFEST_FILE
    try:
        if manifest_path.stat().st_size > limits.manifest_max:
            raise BundleError(f"{MANIFEST_FILE} is larger than limits.manifest_max")
        manifest = BundleManifest.model_validate_json(manifest_path.read_bytes())
    except OSError as exc:
        raise BundleError(f"cannot read the bundle in {directory}") from exc
    except ValueError as exc:
        raise BundleError(f"{MANIFEST_FILE} is not a valid manifest") from exc
    files: dict[str, bytes] = {}
    for name, entry in manifest.files.items():
        if not is_safe_name(name) or entry.size > file_limit(name, limits):
            raise BundleError(f"{MANIFEST_FILE} lists a file it may not: {name!r}")
        try:
            content = (directory / name).read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read {name} in {directory}") from exc
        if len(content) != entry.size or hashlib.sha256(content).hexdigest() != entry.sha256:
            raise DigestMismatch(f"{name} does not match the manifest's sha256/size")
        files[name] = content
    return manifest, files


class LocalModel:
    """A bundle loaded for scoring in process; build with :func:`load`."""

    def __init__(
        self, manifest: BundleManifest, runtime: WasmModel, explainer: Explainer | None = None
    ) -> None:
        self.manifest = manifest
        self._runtime = runtime
        self._explainer = explainer

    def predict(self, data: Any) -> Any:
        """Score ``data``: a pandas DataFrame (columns named after the features, any order,
        extra columns ignored) gives a DataFrame with one column per output, the same
        index, class labels as text; rows (sequences in the manifest's input order, or
        mappings by feature name) give one list of floats per row (a label as its class
        index). Raises ``RecordError``
        naming the row and feature of a cell that cannot be read."""
        if _is_frame(data):
            return self._predict_frame(data)
        return self.score(self._rows(data))

    def explain(self, data: Any) -> Any:
        """Each feature's contribution to the explained output (docs/explain.md), for the
        same inputs as ``predict``: a DataFrame gives a DataFrame with a column
        ``contribution_<feature>`` per feature and ``contribution_base``, on the frame's
        index; rows give one ``Contributions`` per row. A bundle without
        contribution data raises ``BundleError`` saying so."""
        if not _is_frame(data):
            return self._explain_rows(self._rows(data))
        import pandas as pd

        explained = self._explain_rows(self._frame_rows(data))
        return pd.DataFrame(contribution_columns(self.manifest, explained), index=data.index)

    def _explain_rows(self, rows: Sequence[Sequence[float]]) -> list[Contributions]:
        if self._explainer is None:
            raise BundleError(NOT_AVAILABLE)
        return [self._explainer.contributions(row) for row in rows]

    def score_file(
        self, features: Path, out: Path | None = None, *, contributions: bool = False
    ) -> str:
        """Score a features file (CSV, or Parquet by suffix) into ``out`` (CSV or Parquet by
        suffix), one column per output and, with ``contributions``, ``contribution_<feature>``
        and ``contribution_base``; with no ``out``, returns the CSV text (what
        ``edge-agent bundle predict`` prints). The file's rows go into the module as one
        float32 matrix (``WasmModel.predict_matrix``): no Python step per row between the
        reading and the writing."""
        table = read_features(features, self.manifest)
        explained = self._explain_rows(table.rows()) if contributions else None
        outputs = _output_columns(
            self._runtime.predict_matrix(table.matrix()) if table.n_rows else [],
            len(self.manifest.outputs),
        )
        return write_columns(result_columns(self.manifest, outputs, explained), out)

    def score(self, rows: list[list[float]]) -> list[list[float]]:
        """Score rows already encoded (floats in manifest input order, NaN for missing,
        level indices)."""
        return self._runtime.predict(rows) if rows else []

    def _rows(self, data: Any) -> list[list[float]]:
        return [self._encode_row(row, f"row {i}") for i, row in enumerate(data)]

    def _frame_rows(self, frame: Any) -> list[list[float]]:
        absent = [f.name for f in self.manifest.inputs if f.name not in frame.columns]
        if absent:
            raise RecordError(f"the DataFrame lacks columns: {', '.join(absent)}")
        columns = [frame[f.name].tolist() for f in self.manifest.inputs]
        return [
            encode_row(self.manifest.inputs, values, f"row {i}")
            for i, values in enumerate(zip(*columns, strict=True))
        ]

    def _encode_row(self, row: Sequence[object] | Mapping[str, object], where: str) -> list[float]:
        if isinstance(row, Mapping):
            absent = [f.name for f in self.manifest.inputs if f.name not in row]
            if absent:
                raise RecordError(f"{where} lacks features: {', '.join(absent)}")
            values: Sequence[object] = [row[f.name] for f in self.manifest.inputs]
        else:
            values = row
        if len(values) != len(self.manifest.inputs):
            raise RecordError(
                f"{where} has {len(values)} values, the model reads {len(self.manifest.inputs)}"
            )
        return encode_row(self.manifest.inputs, values, where)

    def _predict_frame(self, frame: Any) -> Any:
        import pandas as pd

        predictions = self.score(self._frame_rows(frame))
        outputs = [[row[k] for row in predictions] for k in range(len(self.manifest.outputs))]
        return pd.DataFrame(result_columns(self.manifest, outputs), index=frame.index)


def _is_frame(data: Any) -> bool:
    """A pandas DataFrame, recognised without importing pandas."""
    return type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns")


@dataclass(frozen=True)
class FeatureTable:
    """A features file encoded (``agent.cells``), column by column in manifest input
    order: NaN for missing, level indices for categorical features."""

    columns: list[list[float]]
    n_rows: int

    def rows(self) -> list[list[float]]:
        return [list(row) for row in zip(*self.columns, strict=True)]

    def matrix(self) -> memoryview[float]:
        """The rows as a C-contiguous float32 matrix (``WasmModel.predict_matrix``'s
        input; a value beyond the f32 range becomes an infinity, as on every path into a
        module). Needs at least one row."""
        width = len(self.columns)
        cells = array.array("f", bytes(4 * self.n_rows * width))
        for k, column in enumerate(self.columns):
            cells[k::width] = array.array("f", column)
        return memoryview(cells).cast("B").cast("f", [self.n_rows, width])


# Rows read, transposed and encoded at a time. csv.reader makes a list per row, which the
# cyclic collector tracks: a chunk well under its young-generation threshold (700) is
# garbage before a collection can promote it, so no full collection ever walks a file's
# row lists (with the whole file read first, those collections cost 60% of the reading of
# 100k rows; measured with 256, 1024 and 4096 rows per chunk).
_CHUNK_ROWS = 256


def read_features(path: Path, manifest: BundleManifest) -> FeatureTable:
    """A features file (CSV, or Parquet by its ``.parquet`` suffix), encoded. Extra
    columns are ignored; a missing column or a cell that cannot be read is a
    ``RecordError`` naming the line (CSV) or row (Parquet) and feature.

    A CSV is read as ``csv.DictReader`` reads it (blank lines skipped, a short row's
    missing cells None, a long row's extra cells ignored, the last of two columns of one
    name wins) and encoded a column at a time (``encode_text_column``)."""
    if is_parquet(path):
        rows = _read_parquet(path, manifest)
        return FeatureTable(
            [[row[k] for row in rows] for k in range(len(manifest.inputs))], len(rows)
        )
    columns: list[list[float]] = [[] for _ in manifest.inputs]
    n_rows = 0
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        absent = [f.name for f in manifest.inputs if f.name not in header]
        if absent:
            raise RecordError(f"features CSV lacks columns: {', '.join(absent)}")
        at = {name: i for i, name in enumerate(header)}
        records = filter(None, reader)
        while chunk := list(itertools.islice(records, _CHUNK_ROWS)):
            cells = list(itertools.zip_longest(*chunk))
            short = [None] * len(chunk)
            try:
                for column, feature in zip(columns, manifest.inputs, strict=True):
                    i = at[feature.name]
                    column.extend(
                        encode_text_column(feature, cells[i] if i < len(cells) else short)
                    )
            except UnreadableCell:
                _first_unreadable(header, chunk, 2 + n_rows, manifest)
                raise  # unreachable: the row-by-row reading raises for the same cell
            n_rows += len(chunk)
    return FeatureTable(columns, n_rows)


def _first_unreadable(
    header: list[str], records: list[list[str]], first_line: int, manifest: BundleManifest
) -> None:
    """Read ``records`` row by row, as ``encode_row`` does, for the ``RecordError`` of the
    first cell in file order that cannot be read (the column-wise reading stops at the
    first in column order)."""
    for line, record in enumerate(records, start=first_line):
        by_name = dict(zip(header, record, strict=False))
        encode_row(
            manifest.inputs,
            [by_name.get(f.name) for f in manifest.inputs],
            f"features CSV line {line}",
        )


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _pyarrow_parquet() -> Any:
    """``pyarrow.parquet``, or a ``RecordError`` saying how to get it: Parquet support is
    the optional ``[parquet]`` extra, imported only when a Parquet file is named."""
    try:
        import pyarrow.parquet
    except ImportError:
        raise RecordError(
            "Parquet needs pyarrow: pip install 'edge-inference-agent[parquet]' (or use CSV)"
        ) from None
    return pyarrow.parquet


def _read_parquet(path: Path, manifest: BundleManifest) -> list[list[float]]:
    parquet = _pyarrow_parquet()
    try:
        names = set(parquet.read_schema(path).names)
        absent = [f.name for f in manifest.inputs if f.name not in names]
        if absent:
            raise RecordError(f"features Parquet lacks columns: {', '.join(absent)}")
        table = parquet.read_table(path, columns=manifest.feature_names())
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise RecordError(f"cannot read {path.name} as Parquet") from exc
    columns = [table.column(f.name).to_pylist() for f in manifest.inputs]
    return [
        encode_row(manifest.inputs, values, f"features Parquet row {i}")
        for i, values in enumerate(zip(*columns, strict=True))
    ]


Cell = str | float | None


def _output_columns(flat: Sequence[float], n_outputs: int) -> list[Sequence[float]]:
    """A row-major flat array of outputs as one sequence per output."""
    return [flat[k::n_outputs] for k in range(n_outputs)]


def result_columns(
    manifest: BundleManifest,
    outputs: Sequence[Sequence[float]],
    explained: Sequence[Contributions] | None = None,
) -> dict[str, list[Cell]]:
    """The result table from one sequence of values per output: one column per output (a
    label as its class text), then, when ``explained``, ``contribution_<feature>`` per
    feature and ``contribution_base``."""
    columns: dict[str, list[Cell]] = {}
    for spec, values in zip(manifest.outputs, outputs, strict=True):
        if spec.kind is OutputKind.label and spec.classes:
            columns[spec.name] = [label_text(spec.classes, v) for v in values]
        else:
            columns[spec.name] = list(values)
    if explained is not None:
        columns.update(contribution_columns(manifest, explained))
    return columns


def contribution_columns(
    manifest: BundleManifest, explained: Sequence[Contributions]
) -> dict[str, list[Cell]]:
    """``contribution_<feature>`` per feature, then ``contribution_base``."""
    columns: dict[str, list[Cell]] = {
        f"contribution_{name}": [c.values[j][1] for c in explained]
        for j, name in enumerate(manifest.feature_names())
    }
    columns["contribution_base"] = [c.base for c in explained]
    return columns


def write_columns(columns: Mapping[str, Sequence[Cell]], out: Path | None) -> str:
    """``columns`` written to ``out`` as Parquet (by its suffix) or CSV; with no ``out``,
    the CSV text is returned instead (numbers to 9 significant digits, NaN as ``nan``)."""
    if out is not None and is_parquet(out):
        parquet = _pyarrow_parquet()
        import pyarrow

        parquet.write_table(pyarrow.table({k: list(v) for k, v in columns.items()}), out)
        return ""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(list(columns))
    writer.writerows(zip(*map(_csv_cells, columns.values()), strict=True))
    if out is not None:
        out.write_text(text.getvalue(), encoding="utf-8")
        return ""
    return text.getvalue()


def _csv_cells(values: Sequence[Cell]) -> list[str]:
    """A result column as CSV text: numbers to 9 significant digits, NaN as ``nan``."""
    return ["" if v is None else v if isinstance(v, str) else f"{v:.9g}" for v in values]


def load(directory: Path | str, *, limits: Limits | None = None) -> LocalModel:
    """Load the bundle in ``directory`` (``model.wasm`` checked against the manifest, the
    signature not verified) into the wasmtime sandbox."""
    limits = limits or Limits()
    manifest, files = read_bundle(Path(directory), limits)
    return LocalModel(
        manifest,
        WasmModel.load(files[MODEL_FILE], limits=limits),
        load_explainer(files, manifest, limits),
    )
