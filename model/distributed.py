"""Data-parallel training of a companion network on several machines (``tf.distribute``).

Past one machine, every worker holds one patient shard (``read_mimic(folder, Shard(k, n))``):
it encodes its own patients with the shared vocabulary (built from the shards' code counts,
which add up, :meth:`Vocabulary.from_counts`) and trains on them; the workers exchange only
gradients. ``MultiWorkerMirroredStrategy`` all-reduces every step's gradients over gRPC, so
the replicas stay identical: each step is one step of the global batch, as on one machine.

Keras 3's ``model.fit`` does not run under ``MultiWorkerMirroredStrategy`` (keras-team/keras
#20585), so this is a small custom loop: the same network, loss weighting, Adam and early
stopping as :func:`companion_networks.fit`, with every worker taking the same number of steps
(the collective all-reduce would wait forever for a worker that stopped early).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from model import companion_networks


@dataclass(frozen=True)
class Cluster:
    """The workers (``host:port`` each) and which of them this process is."""

    workers: tuple[str, ...]
    index: int

    def __post_init__(self) -> None:
        if not self.workers or not 0 <= self.index < len(self.workers):
            raise ValueError(f"worker {self.index} is not one of the {len(self.workers)} workers")

    def tf_config(self) -> str:
        """``TF_CONFIG``, as every TensorFlow worker reads it."""
        return json.dumps({"cluster": {"worker": list(self.workers)}, "task": {"type": "worker", "index": self.index}})


def strategy(cluster: Cluster):
    """The all-reduce strategy of ``cluster``; create it before any other TensorFlow work in the process."""
    os.environ["TF_CONFIG"] = cluster.tf_config()
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


@dataclass
class ParallelFit:
    model: object  # the Keras model, identical on every worker
    losses: list[float]  # training loss per epoch, over all workers
    validation_losses: list[float]
    steps_per_epoch: int
    global_batch: int
    rows: int  # training rows over all workers


def fit_data_parallel(
    strategy,
    kind: str,
    inputs: dict,
    y,
    sample_weight,
    vocabulary_size: int,
    config: companion_networks.CompanionNetworkConfig,
    visit_labels=None,
    visit_weights=None,
) -> ParallelFit:
    """Train ``kind`` on this worker's rows together with the other workers' rows.

    Every worker calls this at the same time with its own rows. The global batch follows the
    global row count as on one machine; each worker holds back ``validation_share`` of its
    rows for early stopping, judged on the loss over every worker's held-back rows.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    workers = strategy.num_replicas_in_sync
    targets, weights = companion_networks.training_targets(kind, y, sample_weight, visit_labels, visit_weights)
    order = np.random.default_rng(config.seed).permutation(len(targets))
    held = np.sort(order[: int(len(order) * config.validation_share)] if config.patience else order[:0])
    kept = np.sort(order[len(held) :])

    def every(value: float) -> list[float]:
        """``value`` of every worker (an all-gather)."""
        per_replica = strategy.run(lambda: tf.constant([value], tf.float64))
        return [float(v) for v in strategy.gather(per_replica, axis=0).numpy()]

    if min(every(len(kept))) < 1:
        raise ValueError("every worker needs training rows: a shard without samples cannot join the cluster")
    rows = int(sum(every(len(kept))))
    global_batch = config.batch_for(rows)
    per_worker = max(1, global_batch // workers)
    global_batch = per_worker * workers
    steps = max(1, int(min(every(len(kept) // per_worker))))
    validation_steps = int(max(every(-(-len(held) // per_worker)))) if config.patience else 0
    per_sample = float(np.prod(targets.shape[1:])) if targets.ndim > 1 else 1.0

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF  # rows are local

    def batches(rows_, shuffle: bool, count: int):
        part = ({k: v[rows_] for k, v in inputs.items()}, targets[rows_], weights[rows_])
        data = tf.data.Dataset.from_tensor_slices(part)
        if shuffle:
            data = data.shuffle(min(len(rows_), 100_000), seed=config.seed, reshuffle_each_iteration=True)
        # training: a worker with fewer rows repeats them; validation: each row once, then zero-weight padding
        data = data.repeat() if shuffle else data.concatenate(_zero_rows(part))
        return strategy.experimental_distribute_dataset(data.batch(per_worker).take(count).with_options(options))

    with strategy.scope():
        keras.utils.set_random_seed(config.seed)
        _, max_visits, max_codes = inputs["codes"].shape
        model = companion_networks.build(
            kind, max_visits, max_codes, inputs["timeline"].shape[2], vocabulary_size, config
        )
        optimizer = keras.optimizers.Adam(config.learning_rate)
        optimizer.build(model.trainable_variables)

    def weighted_loss(batch, training: bool):
        x, t, w = batch
        p = model(x, training=training)
        terms = keras.losses.binary_crossentropy(tf.reshape(t, tf.shape(p)), p)
        return tf.reduce_sum(terms * tf.reshape(w, tf.shape(terms)))

    def train_step(batch):
        with tf.GradientTape() as tape:
            loss = weighted_loss(batch, True) / (global_batch * per_sample)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train(batch):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(train_step, args=(batch,)), axis=None)

    @tf.function
    def validate(batch):
        per_replica = strategy.run(lambda b: weighted_loss(b, False), args=(batch,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    held_weight = sum(every(float(weights[held].sum()))) if config.patience else 0.0
    losses, validation_losses, best, waited = [], [], None, 0
    for _ in range(config.epochs):
        epoch = [float(train(b)) for b in batches(kept, True, steps)]
        losses.append(sum(epoch) / len(epoch))
        if not validation_steps or held_weight <= 0:
            continue
        validation_losses.append(sum(float(validate(b)) for b in batches(held, False, validation_steps)) / held_weight)
        if best is None or validation_losses[-1] < best[0]:
            best, waited = (validation_losses[-1], model.get_weights()), 0
        else:
            waited += 1
            if waited >= config.patience:
                break
    if best is not None:
        model.set_weights(best[1])
    return ParallelFit(model, losses, validation_losses, steps, global_batch, rows)


def _zero_rows(part):
    """Endless rows of zeros with zero weight: a worker out of held-back rows still joins every validation step."""
    import tensorflow as tf

    x, t, w = part
    zero = (
        {k: tf.zeros((1, *v.shape[1:]), v.dtype) for k, v in x.items()},
        tf.zeros((1, *t.shape[1:]), t.dtype),
        tf.zeros((1, *w.shape[1:]), w.dtype),
    )
    return tf.data.Dataset.from_tensor_slices(zero).repeat()
