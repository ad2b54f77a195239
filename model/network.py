"""The hybrid LSTM-GRU dose regressor and its training (Keras)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture and training settings; every default lives here."""

    lstm_units: int = 64
    gru_units: int = 32
    dense_units: tuple[int, ...] = (64, 32)
    current_step_skip: bool = True
    dropout: float = 0.3  # after the recurrent layers and each dense layer, in training only
    ensemble: int = 3  # members trained with seeds seed, seed + 1, …; the exported model averages them
    learning_rate: float = 1e-3
    batch_size: int = 64
    max_epochs: int = 200
    patience: int = 15
    seed: int = 0

    def to_json(self) -> dict:
        data = asdict(self)
        data["dense_units"] = list(self.dense_units)
        return data


def build_model(window: int, n_features: int, config: NetworkConfig, name: str = "hybrid_lstm_gru"):
    """Stacked LSTM then GRU over the window, with the current step fed to the dense head.

    The recurrent layers are unrolled to the fixed window so the graph converts to
    full-integer int8 TFLite.
    """
    import keras

    inputs = keras.Input((window, n_features), name="window")
    seq = keras.layers.LSTM(config.lstm_units, return_sequences=True, unroll=True, name="lstm")(inputs)
    seq = keras.layers.GRU(config.gru_units, unroll=True, name="gru")(seq)
    if config.dropout:
        seq = keras.layers.Dropout(config.dropout, name="gru_dropout")(seq)
    head = seq
    if config.current_step_skip:
        current = keras.layers.Cropping1D((window - 1, 0), name="current_step")(inputs)
        current = keras.layers.Flatten(name="current_flat")(current)
        head = keras.layers.Concatenate(name="head_input")([seq, current])
    for i, units in enumerate(config.dense_units):
        head = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(head)
        if config.dropout:
            head = keras.layers.Dropout(config.dropout, name=f"dense_{i}_dropout")(head)
    outputs = keras.layers.Dense(1, name="units")(head)
    return keras.Model(inputs, outputs, name=name)


def _fit_one(x_train, y_train, x_val, y_val, config: NetworkConfig, seed: int, on_epoch):
    import keras

    keras.utils.set_random_seed(seed)
    model = build_model(x_train.shape[1], x_train.shape[2], config, f"hybrid_lstm_gru_{seed}")
    model.compile(keras.optimizers.Adam(config.learning_rate), loss="mae")
    callbacks = [
        keras.callbacks.EarlyStopping(patience=config.patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(patience=max(2, config.patience // 2), factor=0.5),
    ]
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=on_epoch))
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=config.max_epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    return model, {k: [float(v) for v in vals] for k, vals in history.history.items()}


def train(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: NetworkConfig,
    on_epoch: Callable[[int, dict], None] | None = None,
):
    """Fit with MAE loss, early stopping on validation MAE; return (model, history dict).

    With ``config.ensemble`` > 1 each member is trained on its own (seeds ``seed + i``) and the
    returned model is one graph that averages them; the history is the first member's, plus
    ``member_epochs``.
    """
    import keras

    members, histories = [], []
    for i in range(config.ensemble):
        model, history = _fit_one(x_train, y_train, x_val, y_val, config, config.seed + i, on_epoch)
        members.append(model)
        histories.append(history)
    history = dict(histories[0])
    history["member_epochs"] = [float(len(h["loss"])) for h in histories]
    if len(members) == 1:
        return members[0], history
    inputs = keras.Input((x_train.shape[1], x_train.shape[2]), name="window")
    outputs = keras.layers.Average(name="ensemble_mean")([m(inputs) for m in members])
    return keras.Model(inputs, outputs, name="hybrid_lstm_gru_ensemble"), history


def predict(model, x: np.ndarray) -> np.ndarray:
    return model.predict(x, batch_size=1024, verbose=0)[:, 0].astype(np.float64)
