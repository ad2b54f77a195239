"""Keras -> TFLite: float32, and full-integer int8 calibrated on training windows.

The Keras model is exported as a SavedModel with a fixed ``[1, window, features]`` input and
converted from there (converting a Keras 3 model's concrete function directly leaves resource
variables the int8 calibrator cannot read). The int8 model takes and returns int8 tensors, as
a microcontroller would run it; the device quantises its standardised input with the
tensor's scale and zero point.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

REPRESENTATIVE_SAMPLES = 500


def _saved_model(model, window: int, n_features: int, out_dir: Path, input_name: str) -> Path:
    import tensorflow as tf

    path = out_dir / "saved_model"
    model.export(
        str(path), verbose=False, input_signature=[tf.TensorSpec([1, window, n_features], tf.float32, name=input_name)]
    )
    return path


def to_tflite(model, representative: np.ndarray, seed: int = 0, input_name: str = "window") -> dict[str, bytes]:
    """Convert to ``{"float": bytes, "int8": bytes}``; ``representative`` are scaled train inputs."""
    import tensorflow as tf

    _, window, n_features = representative.shape
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(representative), size=min(REPRESENTATIVE_SAMPLES, len(representative)), replace=False)
    calibration = representative[np.sort(picks)].astype(np.float32)

    def dataset():
        for row in calibration:
            yield [row[None, ...]]

    with tempfile.TemporaryDirectory() as tmp:
        saved = _saved_model(model, window, n_features, Path(tmp), input_name)
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

    return {
        "input": describe(interpreter.get_input_details()[0]),
        "output": describe(interpreter.get_output_details()[0]),
    }
