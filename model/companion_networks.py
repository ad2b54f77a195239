"""Keras networks of the companion models, all over the same ``(visits, features)`` input.

Every network takes the encoded history of ``preprocessing.visits`` (left-padded, scored
visit last) and returns the probability of the outcome for the last visit, so the device
runs each of them the same way. The visit representation is a dense layer without bias
over the multi-hot visit row: a learned code embedding, pooled by sum.

* ``lstm``, ``gru``, ``bilstm`` — the mortality notebook's recurrent models: padded visits
  masked, dropout, one probability from the last state.
* ``rnn_last_hf`` — the heart-failure paper's sequence labeller: a GRU gives every visit its
  own readmission probability; training weights the loss on the last index visit (the
  others get ``aux_weight``), and the exported graph reads the last step.
* ``cnn_wide`` — convolutions whose kernels span whole visits (1, 2 and 3 visits wide and
  every feature), max-pooled over time.
* ``mlp`` — dense layers over the last (index) visit only.

Recurrent layers are unrolled to the fixed history length so the graph converts to
built-in TFLite ops (float and full-integer int8).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MORTALITY_NETWORKS = ("lstm", "gru", "bilstm")
READMISSION_NETWORKS = ("rnn_last_hf", "cnn_wide", "mlp")
SEQUENCE_OUTPUT = ("rnn_last_hf",)


@dataclass(frozen=True)
class CompanionNetworkConfig:
    """Sizes and training settings of every companion network; defaults in one place."""

    embedding: int = 32
    units: int = 32
    dropout: float = 0.3
    cnn_filters: int = 16
    cnn_widths: tuple[int, ...] = (1, 2, 3)
    mlp_units: tuple[int, ...] = (64, 32)
    learning_rate: float = 2e-3
    batch_size: int = 16
    epochs: int = 40
    aux_weight: float = 0.1
    seed: int = 0

    def to_json(self) -> dict:
        data = asdict(self)
        data["cnn_widths"] = list(self.cnn_widths)
        data["mlp_units"] = list(self.mlp_units)
        return data


def _visit_embedding(inputs, config: CompanionNetworkConfig):
    import keras

    masked = keras.layers.Masking(0.0, name="padded_visits")(inputs)
    pooled = keras.layers.Dense(config.embedding, use_bias=False, name="code_embedding")(masked)
    return keras.layers.Dropout(config.dropout, name="embedding_dropout")(pooled)


def build(kind: str, max_visits: int, n_features: int, config: CompanionNetworkConfig):
    """The training graph of ``kind`` (sequence output for ``rnn_last_hf``)."""
    import keras

    inputs = keras.Input((max_visits, n_features), name="visits")
    if kind in ("lstm", "gru", "bilstm"):
        seq = _visit_embedding(inputs, config)
        if kind == "lstm":
            state = keras.layers.LSTM(config.units, unroll=True, name="lstm")(seq)
        elif kind == "gru":
            state = keras.layers.GRU(config.units, unroll=True, name="gru")(seq)
        else:
            state = keras.layers.Bidirectional(keras.layers.LSTM(config.units, unroll=True), name="bilstm")(seq)
        state = keras.layers.Dropout(config.dropout, name="state_dropout")(state)
        outputs = keras.layers.Dense(1, activation="sigmoid", name="risk")(state)
    elif kind == "rnn_last_hf":
        seq = _visit_embedding(inputs, config)
        seq = keras.layers.GRU(config.units, return_sequences=True, unroll=True, name="gru")(seq)
        seq = keras.layers.Dropout(config.dropout, name="state_dropout")(seq)
        outputs = keras.layers.Dense(1, activation="sigmoid", name="risk_per_visit")(seq)
    elif kind == "cnn_wide":
        embedded = keras.layers.Dense(config.embedding, use_bias=False, name="code_embedding")(inputs)
        pooled = []
        for width in config.cnn_widths:
            conv = keras.layers.Conv1D(config.cnn_filters, width, activation="relu", name=f"visits_{width}")(embedded)
            pooled.append(keras.layers.GlobalMaxPooling1D(name=f"max_{width}")(conv))
        merged = keras.layers.Concatenate(name="all_widths")(pooled) if len(pooled) > 1 else pooled[0]
        merged = keras.layers.Dropout(config.dropout, name="dropout")(merged)
        outputs = keras.layers.Dense(1, activation="sigmoid", name="risk")(merged)
    elif kind == "mlp":
        last = keras.layers.Cropping1D((max_visits - 1, 0), name="index_visit")(inputs)
        head = keras.layers.Flatten(name="index_flat")(last)
        for i, units in enumerate(config.mlp_units):
            head = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(head)
            head = keras.layers.Dropout(config.dropout, name=f"dropout_{i}")(head)
        outputs = keras.layers.Dense(1, activation="sigmoid", name="risk")(head)
    else:
        raise ValueError(f"unknown companion network {kind!r}")
    return keras.Model(inputs, outputs, name=kind)


def inference_graph(model, kind: str):
    """The graph the device runs: one probability per history (the last step for sequence labellers)."""
    import keras

    if kind not in SEQUENCE_OUTPUT:
        return model
    max_visits = model.input.shape[1]
    last = keras.layers.Cropping1D((max_visits - 1, 0), name="index_step")(model.output)
    return keras.Model(model.input, keras.layers.Flatten(name="risk")(last), name=f"{kind}_inference")


def initialise_embedding(model, code_vectors) -> bool:
    """Put pre-trained code vectors (rows 0…len−1 of the visit row) into the code embedding.

    Scaled to the spread of the layer's random initialisation; returns False when the
    network has no code embedding (the MLP).
    """
    import numpy as np

    try:
        layer = model.get_layer("code_embedding")
    except ValueError:
        return False
    kernel = layer.get_weights()[0]
    vectors = np.asarray(code_vectors, dtype=np.float32)
    spread = float(vectors[2:].std()) or 1.0
    kernel[: len(vectors)] = vectors / spread * float(kernel.std())
    layer.set_weights([kernel])
    return True


def fit(
    kind: str,
    x,
    y,
    sample_weight,
    config: CompanionNetworkConfig,
    visit_labels=None,
    visit_weights=None,
    code_vectors=None,
):
    """Train one network; ``sample_weight`` carries the class weights (or ones).

    For sequence labellers ``visit_labels``/``visit_weights`` are ``(n, max_visits)``;
    ``code_vectors`` (optional) initialise the code embedding.
    """
    import keras
    import numpy as np

    keras.utils.set_random_seed(config.seed)
    model = build(kind, x.shape[1], x.shape[2], config)
    if code_vectors is not None:
        initialise_embedding(model, code_vectors)
    model.compile(keras.optimizers.Adam(config.learning_rate), loss="binary_crossentropy")
    if kind in SEQUENCE_OUTPUT:
        targets = visit_labels[..., None].astype("float32")
        weights = (visit_weights * sample_weight[:, None]).astype("float32")
    else:
        targets, weights = np.asarray(y, "float32"), np.asarray(sample_weight, "float32")
    model.fit(
        x, targets, sample_weight=weights, epochs=config.epochs, batch_size=config.batch_size, shuffle=True, verbose=0
    )
    return model


def predict(model, kind: str, x):
    """Probabilities of the last visit."""
    import numpy as np

    graph = inference_graph(model, kind)
    return np.asarray(graph(x, training=False)).reshape(-1).astype("float64")


def parameters(model) -> int:
    return int(model.count_params())
