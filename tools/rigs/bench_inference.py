"""Inference timing per suggestion: Keras float vs TFLite float vs TFLite int8.

docs/evaluation.md, "Device performance".

TFLite is timed through the device path (``DoseModel.predict``: scaling, quantisation,
interpreter) on the bundle's golden windows, on LiteRT here and on tflite-runtime 2.14 in its
own environment when one is given. The Keras network is rebuilt from the bundle's recorded
architecture (same layers and sizes; weights do not change the cost) and called on one
window at a time with ``predict_on_batch`` (its compiled path), as a device would.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from device.models.bundle import Bundle, default_bundle_path, open_bundle
from device.models.inference import DoseModel
from tools.rigs.figures import percentile

TFLITE214_ENV = "ADVISOR_TFLITE214_PYTHON"


@dataclass(frozen=True)
class InferenceTiming:
    model: str
    runtime: str
    p50_ms: float
    p99_ms: float
    repeats: int


def _timing(model: str, runtime: str, samples: list[float]) -> InferenceTiming:
    return InferenceTiming(
        model,
        runtime,
        round(statistics.median(samples) * 1000, 4),
        round(percentile(samples, 99) * 1000, 4),
        len(samples),
    )


def _windows(bundle: Bundle) -> list[np.ndarray]:
    return [np.asarray(g.input, dtype=np.float32) for g in bundle.manifest.golden]


def time_tflite(bundle: Bundle, role: str, repeats: int, warmup: int = 50) -> list[float]:
    model = DoseModel(bundle, role)
    windows = _windows(bundle)
    for i in range(warmup):
        model.predict(windows[i % len(windows)])
    samples = []
    for i in range(repeats):
        window = windows[i % len(windows)]
        start = time.perf_counter()
        model.predict(window)
        samples.append(time.perf_counter() - start)
    return samples


def time_keras(bundle: Bundle, repeats: int, warmup: int = 50) -> list[float] | None:
    try:
        from model.network import NetworkConfig, build_model
    except ImportError:
        return None
    try:
        import keras  # noqa: F401
    except ImportError:
        return None
    recorded = bundle.manifest.training.get("network", {})
    known = {k: v for k, v in recorded.items() if k in NetworkConfig.__dataclass_fields__}
    if "dense_units" in known:
        known["dense_units"] = tuple(known["dense_units"])
    config = NetworkConfig(**known)
    spec = bundle.feature_spec
    network = build_model(spec.window, spec.n_features, config)
    windows = [w[None, ...] for w in _windows(bundle)]
    for i in range(warmup):
        network.predict_on_batch(windows[i % len(windows)])
    samples = []
    for i in range(repeats):
        start = time.perf_counter()
        network.predict_on_batch(windows[i % len(windows)])
        samples.append(time.perf_counter() - start)
    return samples


_TFLITE214_SCRIPT = """
import json, sys
from device.models.bundle import open_bundle, default_bundle_path
from tools.rigs.bench_inference import time_tflite
bundle = open_bundle(sys.argv[1])
print(json.dumps({role: time_tflite(bundle, role, int(sys.argv[2])) for role in ("float", "int8")}))
"""


def time_tflite214(bundle_path: Path, repeats: int) -> dict[str, list[float]] | None:
    python = os.environ.get(TFLITE214_ENV)
    if not python:
        return None
    done = subprocess.run(
        [python, "-c", _TFLITE214_SCRIPT, str(bundle_path), str(repeats)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        cwd=Path(__file__).resolve().parents[2],
    )
    if done.returncode != 0:
        raise RuntimeError(f"tflite-runtime timing failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def measure_inference(bundle_path: Path | None = None, repeats: int = 2000) -> list[InferenceTiming]:
    """Every model × runtime available here, side by side in this one run."""
    path = bundle_path or default_bundle_path("dose")
    bundle = open_bundle(path)
    timings = []
    keras_samples = time_keras(bundle, repeats)
    if keras_samples is not None:
        timings.append(_timing("Keras float", "tensorflow", keras_samples))
    for role in ("float", "int8"):
        timings.append(_timing(f"TFLite {role}", "ai-edge-litert", time_tflite(bundle, role, repeats)))
    other = time_tflite214(path, repeats)
    if other is not None:
        for role in ("float", "int8"):
            timings.append(_timing(f"TFLite {role}", "tflite-runtime 2.14", other[role]))
    return timings


def bundle_sizes(bundle_path: Path | None = None) -> dict[str, int]:
    path = bundle_path or default_bundle_path("dose")
    bundle = open_bundle(path)
    sizes = {f"{role}_tflite_bytes": len(bundle.model_bytes(role)) for role in ("float", "int8")}
    sizes["bundle_bytes"] = sum(len(data) for data in bundle.files.values())
    return sizes


def to_rows(timings: list[InferenceTiming]) -> list[dict]:
    return [asdict(t) for t in timings]


def not_measured(timings: list[InferenceTiming]) -> list[str]:
    """The rows this run could not measure, and why (so a missing row is never silent)."""
    runtimes = {(t.model, t.runtime) for t in timings}
    missing = []
    if ("Keras float", "tensorflow") not in runtimes:
        missing.append("Keras float on tensorflow: keras/tensorflow not installed (the 'train' extra)")
    if not any(r == "tflite-runtime 2.14" for _, r in runtimes):
        missing.append(f"TFLite on tflite-runtime 2.14: {TFLITE214_ENV} not set (bash tests/run.sh prepares one)")
    return missing


def table(timings: list[InferenceTiming]) -> str:
    """Markdown table with each row's median relative to TFLite int8 on LiteRT (the device's path)."""
    base = next((t.p50_ms for t in timings if t.model == "TFLite int8" and t.runtime == "ai-edge-litert"), None)
    lines = ["| model | runtime | p50 ms | p99 ms | p50 vs TFLite int8 on LiteRT |", "|---|---|---:|---:|---:|"]
    for t in timings:
        ratio = f"{t.p50_ms / base:.2f}×" if base else ""
        lines.append(f"| {t.model} | {t.runtime} | {t.p50_ms:.3f} | {t.p99_ms:.3f} | {ratio} |")
    lines.append(f"\n{timings[0].repeats} timed calls each, one window per call, after warm-up.")
    lines += [f"Not measured: {why}." for why in not_measured(timings)]
    return "\n".join(lines)
