"""One worker of a data-parallel companion training run, as a machine of a cluster runs it.

    python -m tests.distributed_worker --mimic DIR --cluster H:P,H:P --index K --vocabulary V.json --out R.npz

It reads its own patient shard (K+1 of the cluster's size), encodes it with the shared
vocabulary and trains a GRU with the other workers (``model.distributed``); it writes the
final weights, the loss curves and its row counts for the test to compare.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mimic", type=Path, required=True)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--vocabulary", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from model import distributed

    cluster = distributed.Cluster(tuple(args.cluster.split(",")), args.index)
    strategy = distributed.strategy(cluster)  # before any other TensorFlow work

    from domain.visits import VisitSpec
    from domain.vocabulary import Vocabulary
    from model.companion import class_weights
    from model.companion_networks import CompanionNetworkConfig
    from preprocessing.cohorts import mortality_cohort
    from preprocessing.mimic import Shard, read_mimic

    shard = Shard(args.index + 1, len(cluster.workers))
    cohort = mortality_cohort(read_mimic(args.mimic, shard))
    spec = VisitSpec(Vocabulary.from_json(json.loads(args.vocabulary.read_text())))
    x = spec.encode_many([s.visits for s in cohort.samples])
    y = np.array([s.label for s in cohort.samples])
    config = CompanionNetworkConfig(epochs=8, patience=3)
    result = distributed.fit_data_parallel(
        strategy, "gru", x.inputs(), y, class_weights(y), len(spec.vocabulary), config
    )
    np.savez(
        args.out,
        weights=np.concatenate([w.reshape(-1) for w in result.model.get_weights()]),
        losses=np.array(result.losses),
        validation_losses=np.array(result.validation_losses),
        local_samples=len(y),
        rows=result.rows,
        global_batch=result.global_batch,
        steps=result.steps_per_epoch,
        subjects=np.array(sorted({s.subject_id for s in cohort.samples})),
    )


if __name__ == "__main__":
    main()
