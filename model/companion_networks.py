"""Keras networks of the companion models, all over the same two inputs.

Every network takes the encoded history of ``domain.visits`` — ``codes`` (vocabulary
indices per visit, 0-padded) and ``timeline`` (per-visit timing, all-zero for padding) — and
returns the probability of the outcome for the last visit, so the device runs each of them
the same way. A visit is the sum of its codes' learned embedding vectors (the padding index
contributes nothing), joined with its timeline: the sparse form of a multi-hot row times a
weight matrix, costing per code a visit has rather than per code in the vocabulary.

* ``lstm``, ``gru``, ``bilstm`` — the mortality notebook's recurrent models: padded visits
  masked, dropout, one probability from the last state.
* ``rnn_last_hf`` — the heart-failure paper's sequence labeller: a GRU gives every visit its
  own readmission probability; training weights the loss on the last index visit (the
  others get ``aux_weight``), and the exported graph reads the last step.
* ``cnn_wide`` — convolutions whose kernels span whole visits (1, 2 and 3 visits wide and
  every feature), max-pooled over time.
* ``mlp`` — dense layers over the last (index) visit only.
* ``talstm`` — a time-aware LSTM with attention: each visit also carries how long before
  the index admission it ended (the sum of the later visits' gaps, so irregular intervals
  are encoded, not just the order), the LSTM's per-visit states are scored, each score is
  lowered by a learned rate times that elapsed time, and a softmax over the real visits
  weighs them; the weighted states and the last state give the probability. The attention
  weights are a named layer (:func:`attention_weights`), so the report can show which
  visits the model looked at.

Recurrent layers are unrolled to the fixed history length so the graph converts to
built-in TFLite ops (float and full-integer int8).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MORTALITY_NETWORKS = ("lstm", "gru", "bilstm", "talstm")
READMISSION_NETWORKS = ("rnn_last_hf", "cnn_wide", "mlp", "talstm")
SEQUENCE_OUTPUT = ("rnn_last_hf",)
ATTENTION = ("talstm",)
GAP_COLUMN = 2  # timeline: days since the previous discharge, as a fraction of 365 (domain.visits)
PADDING_SCORE = 8.0  # a padded visit's attention score sits this far below: its weight is e^-8 of a real one


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
    batch_size: int = 16  # at least; larger cohorts get about 1/200 of their rows per batch, at most max_batch_size
    max_batch_size: int = 256
    epochs: int = 40  # at most; training stops when the validation loss has not improved for `patience`
    patience: int = 5
    validation_share: float = 0.15  # of the training rows, for early stopping only
    aux_weight: float = 0.1
    seed: int = 0

    def batch_for(self, rows: int) -> int:
        """The batch size for ``rows`` training rows: small data keeps small batches, big data fewer steps."""
        return int(min(self.max_batch_size, max(self.batch_size, rows // 200)))

    def to_json(self) -> dict:
        data = asdict(self)
        data["cnn_widths"] = list(self.cnn_widths)
        data["mlp_units"] = list(self.mlp_units)
        return data


def _visits(codes, timeline, vocabulary_size: int, config: CompanionNetworkConfig):
    """Per visit: the sum of its codes' embedding vectors, joined with its timeline (B, V, E + T)."""
    import keras
    from keras import ops

    embedded = keras.layers.Embedding(vocabulary_size, config.embedding, name="code_embedding")(codes)
    present = ops.expand_dims(ops.cast(ops.greater(codes, 0), "float32"), -1)
    pooled = ops.sum(embedded * present, axis=2)
    return keras.layers.Concatenate(name="visit")([pooled, timeline])


def build(
    kind: str, max_visits: int, max_codes: int, n_timeline: int, vocabulary_size: int, config: CompanionNetworkConfig
):
    """The training graph of ``kind`` (sequence output for ``rnn_last_hf``)."""
    import keras

    codes = keras.Input((max_visits, max_codes), dtype="int32", name="codes")
    timeline = keras.Input((max_visits, n_timeline), name="timeline")
    visits = _visits(codes, timeline, vocabulary_size, config)
    if kind in ("lstm", "gru", "bilstm", "rnn_last_hf"):
        seq = keras.layers.Masking(0.0, name="padded_visits")(visits)
        seq = keras.layers.Dropout(config.dropout, name="embedding_dropout")(seq)
    if kind in ("lstm", "gru", "bilstm"):
        if kind == "lstm":
            state = keras.layers.LSTM(config.units, unroll=True, name="lstm")(seq)
        elif kind == "gru":
            state = keras.layers.GRU(config.units, unroll=True, name="gru")(seq)
        else:
            state = keras.layers.Bidirectional(keras.layers.LSTM(config.units, unroll=True), name="bilstm")(seq)
        state = keras.layers.Dropout(config.dropout, name="state_dropout")(state)
        outputs = keras.layers.Dense(1, activation="sigmoid", name="risk")(state)
    elif kind == "rnn_last_hf":
        seq = keras.layers.GRU(config.units, return_sequences=True, unroll=True, name="gru")(seq)
        seq = keras.layers.Dropout(config.dropout, name="state_dropout")(seq)
        outputs = keras.layers.Dense(1, activation="sigmoid", name="risk_per_visit")(seq)
    elif kind == "cnn_wide":
        pooled = []
        for width in config.cnn_widths:
            conv = keras.layers.Conv1D(config.cnn_filters, width, activation="relu", name=f"visits_{width}")(visits)
            pooled.append(keras.layers.GlobalMaxPooling1D(name=f"max_{width}")(conv))
        merged = keras.layers.Concatenate(name="all_widths")(pooled) if len(pooled) > 1 else pooled[0]
        merged = keras.layers.Dropout(config.dropout, name="dropout")(merged)
        outputs = keras.layers.Dense(1, activation="sigmoid", name="risk")(merged)
    elif kind == "talstm":
        outputs = _time_aware_attention(visits, timeline, max_visits, config)
    elif kind == "mlp":
        last = keras.layers.Cropping1D((max_visits - 1, 0), name="index_visit")(visits)
        head = keras.layers.Flatten(name="index_flat")(last)
        for i, units in enumerate(config.mlp_units):
            head = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(head)
            head = keras.layers.Dropout(config.dropout, name=f"dropout_{i}")(head)
        outputs = keras.layers.Dense(1, activation="sigmoid", name="risk")(head)
    else:
        raise ValueError(f"unknown companion network {kind!r}")
    return keras.Model({"codes": codes, "timeline": timeline}, outputs, name=kind)


def _attention_layers():
    """The two small layers of the ``talstm`` head (built on first use: keras is imported lazily)."""
    import keras
    from keras import ops

    class EndOfMask(keras.layers.Layer):
        """Passes its input on and stops the padding mask: the attention handles padding itself."""

        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.supports_masking = True

        def call(self, inputs):
            return ops.copy(inputs)  # a new tensor: the input's own would keep its mask attached

        def compute_mask(self, inputs, mask=None):
            return None

    class TimeDecay(keras.layers.Layer):
        """Elapsed time times one learned non-negative rate: how much an older visit's score drops."""

        def build(self, input_shape) -> None:
            self.rate = self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(0.1),
                constraint=keras.constraints.NonNeg(),
                name="rate",
            )

        def call(self, inputs):
            return inputs * self.rate

    return EndOfMask, TimeDecay


def _time_aware_attention(visits, timeline, max_visits: int, config: CompanionNetworkConfig):
    """The ``talstm`` head: elapsed time joined to each visit, LSTM states, time-decayed attention."""
    import keras
    import numpy as np
    from keras import ops

    end_of_mask, time_decay = _attention_layers()
    later = np.triu(np.ones((max_visits, max_visits), dtype="float32"), k=1).T  # [s, t] = 1 when s > t
    summed = keras.layers.Dense(
        max_visits,
        use_bias=False,
        trainable=False,
        kernel_initializer=keras.initializers.Constant(later),
        name="elapsed",
    )
    elapsed = summed(timeline[:, :, GAP_COLUMN])  # (B, V): years before the index admission, gaps capped at a year
    present = timeline[:, :, 0]
    seq = keras.layers.Concatenate(name="visit_with_elapsed")([visits, ops.expand_dims(elapsed * present, -1)])
    seq = keras.layers.Masking(0.0, name="padded_visits")(seq)
    seq = keras.layers.Dropout(config.dropout, name="embedding_dropout")(seq)
    states = keras.layers.LSTM(config.units, return_sequences=True, unroll=True, name="lstm")(seq)
    states = end_of_mask(name="states")(states)
    hidden = keras.layers.Dense(config.units // 2, activation="tanh", name="attention_hidden")(states)
    score = keras.layers.Flatten(name="scores")(keras.layers.Dense(1, use_bias=False, name="attention_score")(hidden))
    lowered = time_decay(name="time_decay")(elapsed) + (1.0 - present) * PADDING_SCORE
    weights = keras.layers.Softmax(name="attention")(keras.layers.Subtract(name="visit_scores")([score, lowered]))
    context = ops.sum(ops.expand_dims(weights, -1) * states, axis=1)
    last = keras.layers.Flatten(name="index_state")(keras.layers.Cropping1D((max_visits - 1, 0), name="index")(states))
    merged = keras.layers.Concatenate(name="context_and_last")([context, last])
    merged = keras.layers.Dropout(config.dropout, name="state_dropout")(merged)
    return keras.layers.Dense(1, activation="sigmoid", name="risk")(merged)


def attention_weights(model, inputs: dict):
    """A ``talstm`` model's attention over the visits of each history, ``(n, max_visits)``, in batches."""
    import keras
    import numpy as np

    probe = keras.Model(model.input, model.get_layer("attention").output)
    n = len(inputs["codes"])
    out = [
        np.asarray(probe({k: v[i : i + PREDICT_BATCH] for k, v in inputs.items()}, training=False))
        for i in range(0, n, PREDICT_BATCH)
    ]
    return np.concatenate(out) if out else np.zeros((0, model.input["codes"].shape[1]))


def time_decay(model) -> float:
    """A ``talstm`` model's learned drop in attention score per year before the index admission."""
    return float(model.get_layer("time_decay").get_weights()[0])


def inference_graph(model, kind: str):
    """The graph the device runs: one probability per history (the last step for sequence labellers)."""
    import keras

    if kind not in SEQUENCE_OUTPUT:
        return model
    max_visits = model.output.shape[1]
    last = keras.layers.Cropping1D((max_visits - 1, 0), name="index_step")(model.output)
    return keras.Model(model.input, keras.layers.Flatten(name="risk")(last), name=f"{kind}_inference")


def initialise_embedding(model, code_vectors) -> bool:
    """Put pre-trained code vectors (one row per vocabulary index) into the code embedding.

    Scaled to the spread of the layer's random initialisation; the padding row (multiplied
    by zero) and the out-of-vocabulary row (no context to learn from) keep theirs.
    """
    import numpy as np

    layer = model.get_layer("code_embedding")
    table = layer.get_weights()[0]
    vectors = np.asarray(code_vectors, dtype=np.float32)
    spread = float(vectors[2:].std()) or 1.0
    table[2 : len(vectors)] = vectors[2:] / spread * float(table.std())
    layer.set_weights([table])
    return True


def dataset(inputs: dict, targets, weights, batch_size: int, shuffle: bool, seed: int):
    """A ``tf.data`` pipeline over the encoded arrays: shuffled batches, prefetched."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((inputs, targets, weights))
    if shuffle:
        data = data.shuffle(min(len(targets), 100_000), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def training_targets(kind: str, y, sample_weight, visit_labels=None, visit_weights=None):
    """What the loss compares with the output and each term's weight: per history, or per visit (labellers)."""
    import numpy as np

    if kind in SEQUENCE_OUTPUT:
        return visit_labels[..., None].astype("float32"), (visit_weights * sample_weight[:, None]).astype("float32")
    return np.asarray(y, "float32"), np.asarray(sample_weight, "float32")


def fit(
    kind: str,
    inputs: dict,
    y,
    sample_weight,
    vocabulary_size: int,
    config: CompanionNetworkConfig,
    visit_labels=None,
    visit_weights=None,
    code_vectors=None,
):
    """Train one network; ``sample_weight`` carries the class weights (or ones).

    ``inputs`` holds ``codes`` and ``timeline`` arrays; for sequence labellers
    ``visit_labels``/``visit_weights`` are ``(n, max_visits)``; ``code_vectors`` (optional)
    initialise the code embedding. Batches stream from ``tf.data``. A random
    ``validation_share`` of the rows is held back for early stopping (the best epoch's
    weights are kept); the caller's test rows are never among them.
    """
    import keras
    import numpy as np

    keras.utils.set_random_seed(config.seed)
    _, max_visits, max_codes = inputs["codes"].shape
    model = build(kind, max_visits, max_codes, inputs["timeline"].shape[2], vocabulary_size, config)
    if code_vectors is not None:
        initialise_embedding(model, code_vectors)
    model.compile(keras.optimizers.Adam(config.learning_rate), loss="binary_crossentropy")
    targets, weights = training_targets(kind, y, sample_weight, visit_labels, visit_weights)
    order = np.random.default_rng(config.seed).permutation(len(targets))
    held = order[: int(len(order) * config.validation_share)] if config.patience else order[:0]
    kept = np.sort(order[len(held) :])

    def part(rows) -> tuple[dict, np.ndarray, np.ndarray]:
        return {k: v[rows] for k, v in inputs.items()}, targets[rows], weights[rows]

    callbacks, validation = [], None
    if len(held):
        validation = dataset(*part(np.sort(held)), config.batch_for(len(kept)), False, config.seed)
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
        )
    batches = dataset(*part(kept), config.batch_for(len(kept)), True, config.seed)
    model.fit(batches, validation_data=validation, epochs=config.epochs, callbacks=callbacks, shuffle=False, verbose=0)
    return model


PREDICT_BATCH = 1024


def predict(model, kind: str, inputs: dict):
    """Probabilities of the last visit, in batches."""
    import numpy as np

    graph = inference_graph(model, kind)
    n = len(inputs["codes"])
    out = [
        np.asarray(graph({k: v[i : i + PREDICT_BATCH] for k, v in inputs.items()}, training=False)).reshape(-1)
        for i in range(0, n, PREDICT_BATCH)
    ]
    return np.concatenate(out).astype("float64") if out else np.zeros(0)


def parameters(model) -> int:
    return int(model.count_params())
