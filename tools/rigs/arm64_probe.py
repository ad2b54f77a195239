"""Run the device path on this machine and print the result as JSON (see tools/rigs/arm64_check.sh).

Bundle verification, golden self-test on both models, then every decision point of one
AIM-94 patient through features → LiteRT int8 → safety supervisor. Only the device's
dependencies are needed (no tensorflow, pandas or scikit-learn).
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from device.models.bundle import default_bundle_path, open_bundle
from device.models.inference import DoseModel, interpreter_backend
from model.evaluation import evaluate
from preprocessing import aim94


def main(data_dir: str, patient: int) -> None:
    bundle = open_bundle(default_bundle_path("dose"))
    self_test = {role: DoseModel(bundle, role).self_test() for role in ("int8", "float")}
    rows = evaluate(bundle, aim94.read_folder(Path(data_dir), patients=(patient,)))
    print(
        json.dumps(
            {
                "machine": platform.machine(),
                "python": platform.python_version(),
                "backend": interpreter_backend(),
                "bundle": bundle.version,
                "self_test_worst_units": self_test,
                "decisions": [[r.ts, r.seq, round(r.model_units, 6), r.suggested_units, r.status] for r in rows],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
