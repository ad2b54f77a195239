"""The device inference path: raw window -> scaling -> (int8) TFLite on LiteRT -> units.

Prefers ``ai-edge-litert`` and falls back to ``tflite-runtime``; no tensorflow here.
Models run on the built-in kernels without the default (XNNPACK) delegate: XNNPACK rounds
some int8 results one step differently, while the built-in integer kernels give the same
output on every runtime version and machine, which a dosing device needs more than speed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from device.contract.manifest import GoldenPair
from device.models.bundle import Bundle, BundleError
from domain.drift import DriftReferenceError, Reference
from domain.scaling import Scaling

GOLDEN_TOLERANCE_UNITS = 0.05


def interpreter_backend() -> str:
    """Name of the TFLite interpreter package this process will use."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        try:
            import tflite_runtime.interpreter  # noqa: F401
        except ImportError as exc:
            raise BundleError("no TFLite interpreter: install ai-edge-litert or tflite-runtime") from exc
        return "tflite-runtime"
    return "ai-edge-litert"


def make_interpreter(model: bytes, backend: str | None = None, threads: int = 1):
    """A TFLite interpreter for ``model`` bytes on the chosen (or best available) backend."""
    backend = backend or interpreter_backend()
    if backend == "ai-edge-litert":
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    elif backend == "tflite-runtime":
        from tflite_runtime.interpreter import Interpreter, OpResolverType
    else:
        raise ValueError(f"unknown TFLite backend {backend!r}")
    try:
        interpreter = Interpreter(
            model_content=model,
            num_threads=threads,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise BundleError(f"the TFLite model does not load on {backend}: {exc}") from exc
    return interpreter


def quantise(x: np.ndarray, dtype, scale: float, zero: int) -> np.ndarray:
    """A float input as the tensor of ``dtype``: int8 rounds half to even and clips; others cast."""
    if dtype == np.int8:
        x = np.clip(np.round(np.asarray(x, dtype=np.float32) / scale + zero), -128, 127)
    return np.asarray(x).astype(dtype)


def dequantise(raw: np.ndarray, dtype, scale: float, zero: int) -> float:
    """The first element of an output tensor as a float (dequantised for int8)."""
    value = float(np.asarray(raw).reshape(-1)[0])
    return (value - zero) * scale if dtype == np.int8 else value


class SingleOutputModel:
    """One TFLite model with one input and one output value, quantising int8 tensors as needed."""

    def __init__(self, model: bytes, input_shape: tuple[int, ...], backend: str | None = None) -> None:
        self.backend = backend or interpreter_backend()
        self._interpreter = make_interpreter(model, self.backend)
        inp = self._interpreter.get_input_details()[0]
        out = self._interpreter.get_output_details()[0]
        if tuple(inp["shape"]) != input_shape:
            raise BundleError(f"model input shape {tuple(inp['shape'])} is not {input_shape}")
        self._in_index, self._in_dtype = inp["index"], inp["dtype"]
        self._in_scale, self._in_zero = inp["quantization"]
        self._out_index, self._out_dtype = out["index"], out["dtype"]
        self._out_scale, self._out_zero = out["quantization"]

    def model_input(self, x: np.ndarray) -> np.ndarray:
        """The input tensor exactly as the model gets it: int8 models quantise (round half to even)."""
        return quantise(np.asarray(x, dtype=np.float32), self._in_dtype, self._in_scale, self._in_zero)

    def run_tensor(self, tensor: np.ndarray) -> np.ndarray:
        """The raw output tensor (int8 or float) for an input tensor from :meth:`model_input`."""
        self._interpreter.set_tensor(self._in_index, tensor)
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._out_index))

    def output_value(self, raw: np.ndarray) -> float:
        """The raw output as a float (dequantised for int8 models)."""
        return dequantise(raw, self._out_dtype, self._out_scale, self._out_zero)

    def run(self, x: np.ndarray) -> float:
        """The output value for one float input of the model's input shape."""
        return self.output_value(self.run_tensor(self.model_input(x)))


class NamedInputsModel:
    """One TFLite model with named inputs (each float, int8-quantised or integer) and one output value."""

    def __init__(self, model: bytes, shapes: Mapping[str, tuple[int, ...]], backend: str | None = None) -> None:
        self.backend = backend or interpreter_backend()
        self._interpreter = make_interpreter(model, self.backend)
        self._inputs = {}
        for detail in self._interpreter.get_input_details():
            name = next((n for n in shapes if n in detail["name"]), None)
            if name is None:
                raise BundleError(f"model input {detail['name']!r} is none of {', '.join(shapes)}")
            if tuple(detail["shape"]) != shapes[name]:
                raise BundleError(f"model input {name} has shape {tuple(detail['shape'])}, not {shapes[name]}")
            self._inputs[name] = (detail["index"], detail["dtype"], *detail["quantization"])
        if set(self._inputs) != set(shapes):
            raise BundleError(f"model inputs {sorted(self._inputs)} are not {sorted(shapes)}")
        out = self._interpreter.get_output_details()[0]
        self._out_index, self._out_dtype = out["index"], out["dtype"]
        self._out_scale, self._out_zero = out["quantization"]

    def run(self, inputs: dict[str, np.ndarray]) -> float:
        """The output value for one example's inputs (each of its model shape)."""
        for name, (index, dtype, scale, zero) in self._inputs.items():
            self._interpreter.set_tensor(index, quantise(inputs[name], dtype, scale, zero))
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._out_index)
        return dequantise(raw, self._out_dtype, self._out_scale, self._out_zero)


def golden_self_test(
    bundle: Bundle, role: str, predict: Callable[[GoldenPair], float], tolerance: float, unit: str
) -> float:
    """Run ``predict`` on each golden pair of the manifest; return the worst error, raise beyond ``tolerance``."""
    golden = bundle.manifest.golden
    if not golden:
        raise BundleError("bundle has no golden pairs for its self-test")
    worst = 0.0
    for pair in golden:
        expected = pair.outputs.get(role)
        if expected is None:
            raise BundleError(f"golden pair lacks an expected {role} output")
        got = predict(pair)
        if not math.isfinite(got):
            raise BundleError("self-test failed: the model gave a non-finite output")
        worst = max(worst, abs(got - float(expected)))
    if worst > tolerance:
        raise BundleError(
            f"self-test failed: golden outputs differ by up to {worst:.3f}{unit} (tolerance {tolerance}{unit})"
        )
    return worst


class DoseModel:
    """Runs one bundle's TFLite model on raw windows and returns units."""

    def __init__(self, bundle: Bundle, role: str = "int8", backend: str | None = None) -> None:
        self.bundle = bundle
        self.role = role
        self.spec = bundle.feature_spec
        try:
            self.scaling = Scaling.from_json(bundle.manifest.scaling or {}, self.spec.n_features)
        except ValueError as exc:
            raise BundleError(f"manifest scaling unusable: {exc}") from exc
        self._model = SingleOutputModel(bundle.model_bytes(role), (1, self.spec.window, self.spec.n_features), backend)
        self.backend = self._model.backend
        transform = bundle.manifest.output.residual_of
        self._residual_index = None if transform is None else self.spec.names.index(transform)
        try:
            self.reference = (
                None
                if bundle.manifest.reference is None
                else Reference.from_json(bundle.manifest.reference, self.spec.names)
            )
        except DriftReferenceError as exc:
            raise BundleError(f"manifest {exc}") from exc

    def model_input(self, window: np.ndarray) -> np.ndarray:
        """The model's input tensor for one raw ``(window, n_features)`` input: scaled, then quantised."""
        return self._model.model_input(self.scaling.apply(np.asarray(window, dtype=np.float32))[None, ...])

    def run_tensor(self, tensor: np.ndarray) -> np.ndarray:
        return self._model.run_tensor(tensor)

    def units(self, raw_output: np.ndarray, window: np.ndarray) -> float:
        """Units from the model's raw output: dequantised, plus the usual dose it is a change from."""
        value = self._model.output_value(raw_output)
        if self._residual_index is not None:
            value += float(window[-1, self._residual_index])
        return value

    def predict(self, window: np.ndarray) -> float:
        """Model units for one raw ``(window, n_features)`` input (may be non-finite)."""
        return self.units(self.run_tensor(self.model_input(window)), window)

    def predict_many(self, windows: np.ndarray) -> np.ndarray:
        return np.array([self.predict(w) for w in windows], dtype=np.float64)

    def self_test(self) -> float:
        """Run the manifest's golden pairs; return the worst error in units, raise if out of tolerance."""
        return golden_self_test(
            self.bundle,
            self.role,
            lambda pair: self.predict(np.asarray(pair.input, dtype=np.float32)),
            GOLDEN_TOLERANCE_UNITS,
            " U",
        )
