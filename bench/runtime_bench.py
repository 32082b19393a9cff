"""Agent runtime vs onnxruntime vs scikit-learn, same models, same machine, same run.

    .venv/bin/python bench/runtime_bench.py [--quick]

Models (30 features, scikit-learn's breast-cancer data): a 100-tree depth-3
GradientBoostingClassifier, a 64-32 MLPClassifier, a LogisticRegression and a
LinearRegression (each behind a StandardScaler but the last). For each: single-row latency
(one call, one row: what a FHIR or HL7 request costs) and 1000-row batch time per row,
the agent given Python lists (what its pipeline passes, answers as lists) or, like
onnxruntime, a float32 numpy matrix (``WasmModel.predict_matrix``: bytes in, one float32
array out, no Python step per row); and the cold load of a module (compile, and from the
on-disk cache). Times are CPU time of the calling thread (every side computes in it:
onnxruntime with one intra-op thread, as the agent runs), medians of repeated runs, so a
busy neighbour on a shared machine does not count; scikit-learn's may use BLAS threads and
is wall-clock.

``bundle predict`` on a 100k-row CSV (the demo bundle's holdout rows repeated): the
agent's ``score_file`` (read, score, CSV text out) against a pandas + onnxruntime script
doing the same with the demo's ``model.onnx`` (``read_csv``, the categorical column
mapped to its code, ``InferenceSession.run``, ``to_csv``), CPU time of the work in
process, and of the whole command in a fresh process (``edge-agent bundle predict``
against ``python script.py``, imports included).

Memory: resident set of a fresh process serving the demo model (fixtures/demo) either way
(import, load the committed bundle's ``model.wasm`` into ``WasmModel``, compiling it or
from a warm module cache, or the ONNX file into an ``InferenceSession``; then 1000
one-row predictions): VmRSS at the end and the peak (VmHWM). Each side imports only what
it needs (numpy for onnxruntime, not for the agent).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from agent.compiler.build import compile_onnx
from agent.limits import Limits
from agent.local import load
from agent.runtime.cache import ModuleCache
from agent.runtime.model import WasmModel


def per_call(
    fn: Callable[[], object],
    calls: int,
    repeats: int = 5,
    clock: Callable[[], float] = time.thread_time,
) -> float:
    """Median over ``repeats`` of the mean seconds per call of ``calls`` calls, by
    ``clock`` (CPU time of this thread unless told)."""
    fn()
    samples = []
    for _ in range(repeats):
        start = clock()
        for _ in range(calls):
            fn()
        samples.append((clock() - start) / calls)
    return statistics.median(samples)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    single_calls, batch_calls = int(5000 * scale) or 1, int(20 * scale) or 1

    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    batch = np.tile(x, (2, 1))[:1000]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {
            "GB 100x depth 3": GradientBoostingClassifier(
                n_estimators=100, max_depth=3, random_state=0
            ).fit(x, y),
            "MLP 64-32": make_pipeline(
                StandardScaler(),
                MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=300, random_state=0),
            ).fit(x, y),
            "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
                x, y
            ),
            "linear": LinearRegression().fit(x, y.astype(np.float64)),
        }

    print(
        f"machine: {cpu_name()}, {platform.machine()}, Python {platform.python_version()}, "
        f"wasmtime {version('wasmtime')}, onnxruntime {version('onnxruntime')}, "
        f"scikit-learn {version('scikit-learn')}"
    )
    header = (
        f"{'model':<16} {'measure':<22} {'agent':>10} {'onnxruntime':>12} "
        f"{'sklearn':>10} {'agent/ort':>10} {'agent/skl':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, model in models.items():
        bench_model(name, model, x, batch, single_calls, batch_calls)
    bench_bundle_predict(10_000 if args.quick else 100_000)
    bench_rss()


def bench_model(
    name: str, model: Any, x: np.ndarray, batch: np.ndarray, single_calls: int, batch_calls: int
) -> None:
    """Print the three rows (single row, batch, load) of one model."""
    options_ = {"zipmap": False} if hasattr(model, "predict_proba") else None
    onx = to_onnx(model, x[:1], options=options_)
    compiled = compile_onnx(onx)
    runtime = WasmModel.load(compiled.wasm, limits=Limits())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        onx.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feed = session.get_inputs()[0].name
    row_list = [x[0].tolist()]
    row_np = x[:1]
    batch_list = batch.tolist()
    library = model.predict_proba if hasattr(model, "predict_proba") else model.predict
    wall = time.perf_counter
    rows = {
        "1 row (us/call)": (
            per_call(lambda: runtime.predict(row_list), single_calls),
            per_call(lambda: session.run(None, {feed: row_np}), single_calls),
            per_call(lambda: library(row_np), max(single_calls // 20, 1), clock=wall),
            1,
        ),
        "1000 rows list (us/row)": (
            per_call(lambda: runtime.predict(batch_list), batch_calls),
            per_call(lambda: session.run(None, {feed: batch}), batch_calls),
            per_call(lambda: library(batch), batch_calls, clock=wall),
            1000,
        ),
        "1000 rows f32 (us/row)": (
            per_call(lambda: runtime.predict_matrix(batch), batch_calls),
            per_call(lambda: session.run(None, {feed: batch}), batch_calls),
            per_call(lambda: library(batch), batch_calls, clock=wall),
            1000,
        ),
    }
    for measure, (agent_s, ort_s, skl_s, n) in rows.items():
        a, o, s = (v / n * 1e6 for v in (agent_s, ort_s, skl_s))
        print(
            f"{name:<16} {measure:<22} {a:>10.2f} {o:>12.2f} {s:>10.2f} "
            f"{a / o:>10.2f} {a / s:>10.3f}"
        )
    with tempfile.TemporaryDirectory() as folder:
        cache = ModuleCache(Path(folder), Path(folder) / "digests")
        cold = per_call(lambda: WasmModel.load(compiled.wasm, limits=Limits()), 3, 3, wall)
        WasmModel.load(compiled.wasm, limits=Limits(), cache=cache)
        cached = per_call(
            lambda: WasmModel.load(compiled.wasm, limits=Limits(), cache=cache), 20, 3, wall
        )
        ort_load = per_call(
            lambda: ort.InferenceSession(
                onx.SerializeToString(), options, providers=["CPUExecutionProvider"]
            ),
            3,
            3,
            wall,
        )
    print(
        f"{name:<16} {'load (ms)':<22} {cached * 1e3:>10.2f} {ort_load * 1e3:>12.2f} "
        f"{'-':>10} {cached / ort_load:>10.2f} {'-':>10}   "
        f"(agent uncached compile: {cold * 1e3:.1f} ms; module {len(compiled.wasm)} B)"
    )


DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo"
DEMO_BUNDLE = DEMO / "build" / "deterioration"

# The peer of ``bundle predict``: what a data scientist writes with pandas and onnxruntime
# for the demo model (its ZipMap output gives one dict per row).
_PANDAS_SCRIPT = """
import sys
import numpy as np
import onnxruntime as ort
import pandas as pd

FEATURES = {features!r}
LEVELS = {levels!r}

def score(path):
    frame = pd.read_csv(path)
    x = frame[FEATURES].copy()
    for column, levels in LEVELS.items():
        x[column] = x[column].map({{level: float(i) for i, level in enumerate(levels)}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession({model!r}, options, providers=["CPUExecutionProvider"])
    label, probabilities = session.run(None, {{"X": x.to_numpy(np.float32)}})
    out = pd.DataFrame({{"label": label}})
    for k in range({n_classes}):
        out[f"probability_{{k}}"] = [p[k] for p in probabilities]
    return out.to_csv(index=False, float_format="%.9g")

if __name__ == "__main__":
    sys.stdout.write(score(sys.argv[1]))
"""
_ROWS = "rows = [[float((7 * i + j) % 13) for j in range(9)] for i in range(1000)]\n"
_REPORT = (
    "status = open('/proc/self/status').read()\n"
    "print(*(status.split(k + ':')[1].split()[0] for k in ('VmRSS', 'VmHWM')))\n"
)


def _agent_script(cache_dir: Path | None) -> str:
    wasm = DEMO / "build" / "deterioration" / "model.wasm"
    cache = (
        f", cache=ModuleCache(Path({str(cache_dir)!r}), Path({str(cache_dir)!r}) / 'digests')"
        if cache_dir
        else ""
    )
    return (
        "from pathlib import Path\n"
        "from agent.limits import Limits\n"
        "from agent.runtime.cache import ModuleCache\n"
        "from agent.runtime.model import WasmModel\n"
        f"model = WasmModel.load(Path({str(wasm)!r}).read_bytes(), limits=Limits(){cache})\n"
        + _ROWS
        + "for row in rows:\n    model.predict([row])\n"
        + _REPORT
    )


_ORT_SCRIPT = (
    "import numpy as np\n"
    "import onnxruntime as ort\n"
    "options = ort.SessionOptions()\n"
    "options.intra_op_num_threads = 1\n"
    "options.inter_op_num_threads = 1\n"
    f"session = ort.InferenceSession({str(DEMO / 'model.onnx')!r}, options,"
    " providers=['CPUExecutionProvider'])\n" + _ROWS + "for row in rows:\n"
    "    session.run(None, {'X': np.asarray([row], dtype=np.float32)})\n" + _REPORT
)


def serving_rss(script: str) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB of a fresh interpreter running ``script``."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    rss, peak = (int(v) / 1024 for v in done.stdout.split()[-2:])
    return rss, peak


def bench_bundle_predict(n_rows: int) -> None:
    """Print ``bundle predict`` on ``n_rows`` CSV rows against the pandas + onnxruntime
    script: CPU seconds of the work in this process (median of three), and of the whole
    command in a fresh process (median of three; imports and start-up included)."""
    model = load(DEMO_BUNDLE)
    manifest = model.manifest
    with (DEMO / "holdout.csv").open(newline="") as handle:
        holdout = list(csv.reader(handle))
    levels = {f.name: list(f.levels) for f in manifest.inputs if f.levels}
    script = _PANDAS_SCRIPT.format(
        features=manifest.feature_names(),
        levels=levels,
        model=str(DEMO / "model.onnx"),
        n_classes=len(manifest.outputs) - 1,
    )
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "features.csv"
        with data.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(holdout[0])
            body = holdout[1:]
            writer.writerows(body[i % len(body)] for i in range(n_rows))
        peer_file = Path(folder) / "pandas_onnxruntime.py"
        peer_file.write_text(script)
        peer = runpy.run_path(str(peer_file))["score"]
        agent_s = per_call(lambda: model.score_file(data), 1, 3, time.process_time)
        peer_s = per_call(lambda: peer(data), 1, 3, time.process_time)
        agent_cmd = [sys.executable, "-m", "agent.cli", "bundle", "predict", str(DEMO_BUNDLE)]
        agent_run = statistics.median(_child_cpu([*agent_cmd, str(data)]) for _ in range(3))
        peer_run = statistics.median(
            _child_cpu([sys.executable, str(peer_file), str(data)]) for _ in range(3)
        )
    print(
        f"\n{'bundle predict, ' + format(n_rows, ',') + ' CSV rows':<34} {'agent':>8} "
        f"{'pandas+ort':>11} {'agent/peer':>11}"
    )
    for measure, (a, p) in {
        "the work, in process (CPU s)": (agent_s, peer_s),
        "the command, fresh process (CPU s)": (agent_run, peer_run),
    }.items():
        print(f"{measure:<34} {a:>8.3f} {p:>11.3f} {a / p:>11.2f}")


def _child_cpu(argv: list[str]) -> float:
    """User + system CPU seconds of running ``argv`` to the end (output discarded)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        argv,
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_rss() -> None:
    """Print RSS and peak RSS of a process serving the demo model (median of three fresh
    processes each): the agent compiling the module in-process, the agent loading it from
    a warm compiled-module cache (how the agent serves after its first start), and
    onnxruntime."""
    with tempfile.TemporaryDirectory() as cache:
        serving_rss(_agent_script(Path(cache)))  # warms the cache
        scripts = {
            "agent, compiling": _agent_script(None),
            "agent, cached module": _agent_script(Path(cache)),
            "onnxruntime": _ORT_SCRIPT,
        }
        print(
            f"\n{'demo model served by':<22} {'RSS (MiB)':>10} {'peak (MiB)':>11} "
            f"{'/ onnxruntime':>14}"
        )
        results = {}
        for name, script in scripts.items():
            samples = [serving_rss(script) for _ in range(3)]
            results[name] = (
                statistics.median(s[0] for s in samples),
                statistics.median(s[1] for s in samples),
            )
    ort_rss = results["onnxruntime"][0]
    for name, (rss, peak) in results.items():
        print(f"{name:<22} {rss:>10.1f} {peak:>11.1f} {rss / ort_rss:>14.2f}")


if __name__ == "__main__":
    main()
