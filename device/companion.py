"""Companion risk models on the device: a visit history → a probability, on LiteRT.

These bundles (1-year mortality, 30-day readmission) are risk context for the clinician.
Their output never reaches the safety supervisor or the dose: nothing here imports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from preprocessing.visits import Visit

from .bundle import Bundle, BundleError
from .inference import interpreter_backend, make_interpreter

COMPANION_NAMES = ("mortality", "readmission")
GOLDEN_TOLERANCE = 0.02


class RiskModel:
    """One companion bundle's TFLite model, fed encoded visit histories."""

    def __init__(self, bundle: Bundle, role: str | None = None, backend: str | None = None) -> None:
        """``role`` defaults to the model the bundle names for the device (the one that matched Keras)."""
        if not bundle.is_companion:
            raise BundleError(f"bundle {bundle.name!r} is not a companion (visit-history) model")
        self.bundle = bundle
        self.role = role or str(bundle.manifest.get("output", {}).get("device_role", "int8"))
        try:
            self.spec = bundle.visit_spec
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"visit spec unusable: {exc}") from exc
        self.backend = backend or interpreter_backend()
        self._interpreter = make_interpreter(bundle.model_bytes(self.role), self.backend)
        inp = self._interpreter.get_input_details()[0]
        out = self._interpreter.get_output_details()[0]
        expected = (1, *self.spec.shape)
        if tuple(inp["shape"]) != expected:
            raise BundleError(f"model input shape {tuple(inp['shape'])} is not {expected}")
        self._in_index, self._in_dtype = inp["index"], inp["dtype"]
        self._in_scale, self._in_zero = inp["quantization"]
        self._out_index, self._out_dtype = out["index"], out["dtype"]
        self._out_scale, self._out_zero = out["quantization"]

    @property
    def name(self) -> str:
        return self.bundle.name

    def describe(self) -> dict:
        """What the risk message and the page say about this model."""
        data = self.bundle.manifest.get("data", {})
        return {"version": self.bundle.version, "network": self.bundle.manifest.get("output", {}).get("network"),
                "runs": self.role,
                "demo_trained": bool(data.get("demo_trained", False)), "label": data.get("label", "")}

    def predict_encoded(self, x: np.ndarray) -> float:
        """Probability for one encoded ``(max_visits, n_features)`` history."""
        x = np.asarray(x, dtype=np.float32)[None, ...]
        if self._in_dtype == np.int8:
            x = np.clip(np.round(x / self._in_scale + self._in_zero), -128, 127).astype(np.int8)
        self._interpreter.set_tensor(self._in_index, x.astype(self._in_dtype))
        self._interpreter.invoke()
        value = float(self._interpreter.get_tensor(self._out_index).reshape(-1)[0])
        if self._out_dtype == np.int8:
            value = (value - self._out_zero) * self._out_scale
        return min(max(value, 0.0), 1.0)

    def predict(self, visits: Sequence[Visit]) -> float:
        return self.predict_encoded(self.spec.encode(visits))

    def predict_many(self, encoded: np.ndarray) -> np.ndarray:
        return np.array([self.predict_encoded(row) for row in encoded], dtype=np.float64)

    def self_test(self) -> float:
        """Run the manifest's golden histories; return the worst error, raise if out of tolerance."""
        from preprocessing.validation import ValidationError, decode_visit_history

        golden = self.bundle.manifest.get("golden", [])
        if not golden:
            raise BundleError("bundle has no golden histories for its self-test")
        worst = 0.0
        for pair in golden:
            expected = pair.get("outputs", {}).get(self.role)
            if expected is None:
                raise BundleError(f"golden pair lacks an expected {self.role} output")
            try:
                history = decode_visit_history({"patient": "golden", "visits": pair.get("history")})
            except ValidationError as exc:
                raise BundleError(f"golden history unusable: {exc.reason}") from exc
            got = self.predict(history.visits)
            if not math.isfinite(got):
                raise BundleError("self-test failed: the model gave a non-finite output")
            worst = max(worst, abs(got - float(expected)))
        if worst > GOLDEN_TOLERANCE:
            raise BundleError(f"self-test failed: golden probabilities differ by up to {worst:.3f} "
                              f"(tolerance {GOLDEN_TOLERANCE})")
        return worst
