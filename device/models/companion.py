"""Companion risk models on the device: a visit history → a probability, on LiteRT.

These bundles (1-year mortality, 30-day readmission) are risk context for the clinician.
Their output never reaches the safety supervisor or the dose: nothing here imports it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from device.contract.manifest import GoldenPair
from device.contract.messages import Contribution, RiskModelInfo
from device.models.bundle import Bundle, BundleError
from device.models.inference import NamedInputsModel, golden_self_test
from domain.visits import EncodedHistories, Visit
from domain.vocabulary import OOV, PAD

COMPANION_NAMES = ("mortality", "readmission")
GOLDEN_TOLERANCE = 0.02
TOP_CONTRIBUTIONS = 5
UNKNOWN_CODES = "codes outside the model's vocabulary"


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

    def contributions(self, visits: Sequence[Visit], top: int = TOP_CONTRIBUTIONS) -> list[Contribution]:
        """The codes that moved this history's probability most, by occlusion.

        Each distinct code of the encoded history is taken out of every visit it appears in and
        the model run again: one inference per distinct code, cheap enough for the device. The
        change is the probability with the code minus without it. Codes outside the vocabulary
        share one index, so they are taken out together and named as such.
        """
        encoded = self.spec.encode(visits)
        with_all = float(self.predict_many(encoded)[0])
        indices = [int(i) for i in np.unique(encoded.codes) if i != PAD]
        changes = []
        for index in indices:
            codes = encoded.codes.copy()
            codes[codes == index] = PAD
            without = float(self.predict_many(EncodedHistories(codes, encoded.timeline))[0])
            name = UNKNOWN_CODES if index == OOV else self.spec.vocabulary.codes[index - 2]
            changes.append(Contribution(name, round(with_all - without, 4)))
        changes.sort(key=lambda c: (-abs(c.change), c.code))
        return changes[:top]

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
