"""Companion risk models on the device: a visit history → a probability, on LiteRT.

These bundles (1-year mortality, 30-day readmission) are risk context for the clinician.
Their output never reaches the safety supervisor or the dose: nothing here imports it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from device.contract.manifest import GoldenPair
from device.contract.messages import RiskModelInfo
from device.models.bundle import Bundle, BundleError
from device.models.inference import NamedInputsModel, golden_self_test
from domain.visits import EncodedHistories, Visit

COMPANION_NAMES = ("mortality", "readmission")
GOLDEN_TOLERANCE = 0.02


class RiskModel:
    """One companion bundle's TFLite model, fed encoded visit histories."""

    def __init__(self, bundle: Bundle, role: str | None = None, backend: str | None = None) -> None:
        """``role`` defaults to the model the bundle names for the device (the one that matched Keras)."""
        if not bundle.is_companion:
            raise BundleError(f"bundle {bundle.name!r} is not a companion (visit-history) model")
        self.bundle = bundle
        self.role = role or bundle.manifest.output.device_role or "int8"
        try:
            self.spec = bundle.visit_spec
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"visit spec unusable: {exc}") from exc
        shapes = {name: (1, *shape) for name, shape in self.spec.shapes.items()}
        self._model = NamedInputsModel(bundle.model_bytes(self.role), shapes, backend)
        self.backend = self._model.backend

    @property
    def name(self) -> str:
        return self.bundle.name

    def describe(self) -> RiskModelInfo:
        """What the risk message and the page say about this model."""
        data = self.bundle.manifest.data
        return RiskModelInfo(
            version=self.bundle.version,
            network=self.bundle.manifest.output.network,
            runs=self.role,
            demo_trained=bool(data.get("demo_trained", False)),
            label=str(data.get("label", "")),
        )

    def predict(self, visits: Sequence[Visit]) -> float:
        return float(self.predict_many(self.spec.encode(visits))[0])

    def predict_many(self, encoded: EncodedHistories) -> np.ndarray:
        """Probability for each encoded history."""
        out = np.empty(len(encoded), dtype=np.float64)
        for i in range(len(encoded)):
            value = self._model.run({"codes": encoded.codes[i : i + 1], "timeline": encoded.timeline[i : i + 1]})
            out[i] = min(max(value, 0.0), 1.0)
        return out

    def self_test(self) -> float:
        """Run the manifest's golden histories; return the worst error, raise if out of tolerance."""
        return golden_self_test(self.bundle, self.role, self._predict_golden, GOLDEN_TOLERANCE, "")

    def _predict_golden(self, pair: GoldenPair) -> float:
        from domain.validation import ValidationError, decode_visit_history

        try:
            history = decode_visit_history({"patient": "golden", "visits": pair.history})
        except ValidationError as exc:
            raise BundleError(f"golden history unusable: {exc.reason}") from exc
        return self.predict(history.visits)
