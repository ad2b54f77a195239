"""The shipped bundle runs the same on ai-edge-litert and tflite-runtime 2.14, without training libs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.models import bundle as bundle_mod
from device.models.inference import DoseModel

from .conftest import IN_CI, ROOT

GOLDEN_SCRIPT = """
import json, sys
import numpy as np
from device.models import bundle
from device.models.inference import DoseModel, interpreter_backend
b = bundle.open_bundle(bundle.default_bundle_path("dose"))
out = {"backend": interpreter_backend(), "numpy": np.__version__}
for role in ("int8", "float"):
    model = DoseModel(b, role)
    out[role] = [model.predict(np.asarray(g.input, dtype=np.float32)) for g in b.manifest.golden]
    out[role + "_self_test"] = model.self_test()
print(json.dumps(out))
"""

BLOCK_TRAINING_STACK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {'tensorflow', 'pandas', 'sklearn', 'keras'}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
"""


def _run(python: str, script: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([python, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _litert_outputs() -> dict:
    b = bundle_mod.open_bundle(bundle_mod.default_bundle_path("dose"))
    return {
        role: [
            DoseModel(b, role, backend="ai-edge-litert").predict(np.asarray(g.input, np.float32))
            for g in b.manifest.golden
        ]
        for role in ("int8", "float")
    }


@pytest.mark.e2e
def test_tflite_runtime_214_gives_the_same_outputs():
    python = os.environ.get("ADVISOR_TFLITE214_PYTHON")
    if not python or not Path(python).exists():
        message = "tflite-runtime 2.14 environment not set up (run bash tests/run.sh)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    theirs = _run(python, GOLDEN_SCRIPT)
    assert theirs["backend"] == "tflite-runtime"
    assert theirs["numpy"].startswith("1.")
    ours = _litert_outputs()
    np.testing.assert_allclose(theirs["float"], ours["float"], atol=1e-4)
    np.testing.assert_allclose(theirs["int8"], ours["int8"], atol=1e-6)  # bit-exact integer kernels


@pytest.mark.e2e
def test_device_path_runs_without_tensorflow_pandas_or_sklearn():
    result = _run(
        sys.executable, BLOCK_TRAINING_STACK + "\nimport model.evaluation, device.rules.safety\n" + GOLDEN_SCRIPT
    )
    assert result["backend"] == "ai-edge-litert"
    assert result["int8_self_test"] <= 0.05


COMPANION_SCRIPT = """
import json
from device.models import bundle
from device.models.companion import RiskModel
from device.models.inference import interpreter_backend
from domain.validation import decode_visit_history
out = {"backend": interpreter_backend()}
for name in ("mortality", "readmission"):
    b = bundle.open_bundle(bundle.default_bundle_path(name))
    histories = [decode_visit_history({"patient": "g", "visits": g.history}).visits for g in b.manifest.golden]
    for role in ("int8", "float"):
        model = RiskModel(b, role)
        out[f"{name}/{role}"] = [model.predict(h) for h in histories]
        out[f"{name}/{role}/self_test"] = model.self_test()
print(json.dumps(out))
"""


@pytest.mark.e2e
def test_companion_bundles_run_the_same_on_tflite_runtime_214_and_without_training_libs():
    python = os.environ.get("ADVISOR_TFLITE214_PYTHON")
    ours = _run(sys.executable, BLOCK_TRAINING_STACK + COMPANION_SCRIPT)
    assert ours["backend"] == "ai-edge-litert"
    assert all(v <= 0.02 for k, v in ours.items() if k.endswith("self_test"))
    if not python or not Path(python).exists():
        message = "tflite-runtime 2.14 environment not set up (run bash tests/run.sh)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    theirs = _run(python, COMPANION_SCRIPT)
    assert theirs["backend"] == "tflite-runtime"
    for key in ours:
        if not key.endswith("self_test") and key != "backend":
            tolerance = 1e-6 if key.endswith("int8") else 1e-4
            np.testing.assert_allclose(theirs[key], ours[key], atol=tolerance, err_msg=key)
