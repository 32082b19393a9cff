"""Agent runtime vs onnxruntime vs scikit-learn, same models, same machine, same run.

    .venv/bin/python bench/runtime_bench.py [--quick]

Models (30 features, scikit-learn's breast-cancer data): a 100-tree depth-3
GradientBoostingClassifier and a 64-32 MLPClassifier. For each: single-row latency (one
call, one row: what a FHIR or HL7 request costs) and 1000-row batch latency per row, the
agent given Python lists (what its pipeline passes) or, like onnxruntime, a float32 numpy
matrix (copied in as bytes: the difference is the cost of converting lists); and
the cold load of a module (compile, and from the on-disk cache). Times are medians of
repeated runs; onnxruntime runs with one intra-op thread, as the agent does.

Memory: resident set of a fresh process serving the demo model (fixtures/demo) either way
(import, load the committed bundle's ``model.wasm`` into ``WasmModel``, compiling it or
from a warm module cache, or the ONNX file into an ``InferenceSession``; then 1000
one-row predictions): VmRSS at the end and the peak (VmHWM). Each side imports only what
it needs (numpy for onnxruntime, not for the agent).
"""

from __future__ import annotations

import argparse
import platform
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
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from agent.compiler.build import compile_onnx
from agent.limits import Limits
from agent.runtime.cache import ModuleCache
from agent.runtime.model import WasmModel


def per_call(fn: Callable[[], object], calls: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean seconds per call of ``calls`` calls."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls)
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
    bench_rss()


def bench_model(
    name: str, model: Any, x: np.ndarray, batch: np.ndarray, single_calls: int, batch_calls: int
) -> None:
    """Print the three rows (single row, batch, load) of one model."""
    onx = to_onnx(model, x[:1], options={"zipmap": False})
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
    rows = {
        "1 row (us/call)": (
            per_call(lambda: runtime.predict(row_list), single_calls),
            per_call(lambda: session.run(None, {feed: row_np}), single_calls),
            per_call(lambda: model.predict_proba(row_np), max(single_calls // 20, 1)),
            1,
        ),
        "1000 rows (us/row)": (
            per_call(lambda: runtime.predict(batch_list), batch_calls),
            per_call(lambda: session.run(None, {feed: batch}), batch_calls),
            per_call(lambda: model.predict_proba(batch), batch_calls),
            1000,
        ),
        "1000 rows f32 (us/row)": (
            per_call(lambda: runtime.predict(batch), batch_calls),  # type: ignore[arg-type]
            per_call(lambda: session.run(None, {feed: batch}), batch_calls),
            per_call(lambda: model.predict_proba(batch), batch_calls),
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
        cold = per_call(lambda: WasmModel.load(compiled.wasm, limits=Limits()), 3, 3)
        WasmModel.load(compiled.wasm, limits=Limits(), cache=cache)
        cached = per_call(
            lambda: WasmModel.load(compiled.wasm, limits=Limits(), cache=cache), 20, 3
        )
        ort_load = per_call(
            lambda: ort.InferenceSession(
                onx.SerializeToString(), options, providers=["CPUExecutionProvider"]
            ),
            3,
            3,
        )
    print(
        f"{name:<16} {'load (ms)':<22} {cached * 1e3:>10.2f} {ort_load * 1e3:>12.2f} "
        f"{'-':>10} {cached / ort_load:>10.2f} {'-':>10}   "
        f"(agent uncached compile: {cold * 1e3:.1f} ms; module {len(compiled.wasm)} B)"
    )


DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo"
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
