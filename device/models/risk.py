"""Risk context from the companion models: a ``patients`` payload in, a ``risk`` message out.

Pure logic, no sockets. The result is shown beside the dose on the bedside page; it never
feeds the dose model or the safety supervisor.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path

from device.contract.messages import Risk, RiskModelInfo
from device.models import signing
from device.models.bundle import BundleError, default_bundle_path, open_bundle
from device.models.companion import COMPANION_NAMES, RiskModel
from domain.validation import VisitHistory

log = logging.getLogger("advisor.risk")
STATEMENT = "Risk context only: these estimates do not change the dose suggestion."
MAX_REMEMBERED_PATIENTS = 1000


def load_risk_models(configured: tuple[Path, ...], keys: list[signing.PublicKey]) -> tuple[dict, list[str]]:
    """Companion models by name (configured bundles first, then the packaged defaults) and notes."""
    models: dict[str, RiskModel] = {}
    notes: list[str] = []
    for path in (*configured, *(default_bundle_path(name) for name in COMPANION_NAMES)):
        try:
            bundle = open_bundle(path, keys)
            if bundle.name not in COMPANION_NAMES:
                raise BundleError(f"bundle {path} is a {bundle.name!r} model, not a companion model")
            if bundle.name in models:
                continue
            model = RiskModel(bundle)
            model.self_test()
        except (BundleError, OSError) as exc:
            notes.append(f"risk bundle {path} was not used: {exc}")
            continue
        models[bundle.name] = model
    return models, notes


class RiskAssessor:
    """Runs every loaded companion model on a visit history and remembers the latest per patient."""

    def __init__(self, models: dict[str, RiskModel]) -> None:
        self.models = models
        self._latest: OrderedDict[str, Risk] = OrderedDict()
        self._lock = threading.Lock()

    def describe(self) -> dict[str, RiskModelInfo]:
        return {name: model.describe() for name, model in self.models.items()}

    def _probability(self, name: str, history: VisitHistory) -> float | None:
        model = self.models.get(name)
        return round(model.predict(history.visits), 4) if model is not None else None

    def score(self, history: VisitHistory) -> Risk:
        """The companion models' risk for a valid visit history, remembered as the patient's latest,
        with the codes that contributed most to each model's figure."""
        risk = Risk(
            patient=history.patient,
            mortality_1y=self._probability("mortality", history),
            readmission_30d=self._probability("readmission", history),
            models=self.describe(),
            visits=len(history.visits),
            computed_at=datetime.now(UTC).isoformat(timespec="seconds"),
            note=STATEMENT,
            contributions={name: model.contributions(history.visits) for name, model in self.models.items()},
        )
        with self._lock:
            self._latest[history.patient] = risk
            self._latest.move_to_end(history.patient)
            while len(self._latest) > MAX_REMEMBERED_PATIENTS:
                self._latest.popitem(last=False)
        return risk

    def latest(self, patient: str) -> Risk | None:
        with self._lock:
            return self._latest.get(patient)

    def patients(self) -> list[str]:
        with self._lock:
            return list(self._latest)
