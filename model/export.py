"""Keras -> TFLite: float32, and full-integer int8 calibrated on training windows.

The Keras model is exported as a SavedModel with fixed batch-of-one inputs — one
``[1, window, features]`` tensor, or named tensors (the companion models' ``codes`` and
``timeline``) — and converted from there (converting a Keras 3 model's concrete function
directly leaves resource variables the int8 calibrator cannot read). The int8 model takes and
returns int8 tensors for its float inputs, as a microcontroller would run it (integer inputs
such as code indices stay integers); the device quantises with each tensor's scale and zero point.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

REPRESENTATIVE_SAMPLES = 500


Representative = np.ndarray | dict[str, np.ndarray]


def _signature(representative: Representative, input_name: str):
    import tensorflow as tf

    if isinstance(representative, dict):
        specs = {
            name: tf.TensorSpec([1, *array.shape[1:]], tf.as_dtype(array.dtype), name=name)
            for name, array in representative.items()
        }
        return [specs]
    return [tf.TensorSpec([1, *representative.shape[1:]], tf.float32, name=input_name)]


def to_tflite(model, representative: Representative, seed: int = 0, input_name: str = "window") -> dict[str, bytes]:
    """Convert to ``{"float": bytes, "int8": bytes}``; ``representative`` are training inputs
    (one array, or arrays by input name)."""
    import tensorflow as tf

    arrays = representative if isinstance(representative, dict) else {input_name: representative}
    n = len(next(iter(arrays.values())))
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(n, size=min(REPRESENTATIVE_SAMPLES, n), replace=False))
    calibration = {name: array[picks] for name, array in arrays.items()}

    def dataset():
        for i in range(len(picks)):
            sample = {name: array[i : i + 1] for name, array in calibration.items()}
            yield sample if isinstance(representative, dict) else [sample[input_name].astype(np.float32)]

    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved_model"
        model.export(str(saved), verbose=False, input_signature=_signature(representative, input_name))
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        float_model = converter.convert()
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        int8_model = converter.convert()
    return {"float": float_model, "int8": int8_model}


def tensor_quantization(model_bytes: bytes) -> dict:
    """Input/output dtype, shape and (scale, zero point) of a TFLite model, for the manifest."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=model_bytes, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter.allocate_tensors()

    def describe(detail: dict) -> dict:
        scale, zero = detail["quantization"]
        return {
            "dtype": np.dtype(detail["dtype"]).name,
            "shape": [int(d) for d in detail["shape"]],
            "scale": float(scale),
            "zero_point": int(zero),
        }

    inputs = interpreter.get_input_details()
    described = {"input": describe(inputs[0]), "output": describe(interpreter.get_output_details()[0])}
    if len(inputs) > 1:
        described["inputs"] = {detail["name"]: describe(detail) for detail in inputs}
    return described
