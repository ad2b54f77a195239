"""Data-parallel training across two worker processes on loopback (``tf.distribute`` over gRPC).

The step past one machine for training: each worker holds one patient shard of the real
MIMIC demo, the vocabulary comes from the shards' code counts, and the gradients are
all-reduced every step — so both workers must end with the very same weights, having each
trained on its own patients only.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from domain.vocabulary import Vocabulary
from model.companion import CompanionTrainingConfig, build_vocabulary, code_counts
from preprocessing.cohorts import mortality_cohort
from preprocessing.mimic import Shard, read_mimic

ROOT = Path(__file__).resolve().parents[1]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_shard_code_counts_give_the_whole_vocabulary(mimic_dir):
    config = CompanionTrainingConfig()
    whole = mortality_cohort(read_mimic(mimic_dir)).samples
    counts: Counter[str] = Counter()
    for k in (1, 2, 3):
        counts += code_counts(mortality_cohort(read_mimic(mimic_dir, Shard(k, 3))).samples)
    assert counts == code_counts(whole)
    assert Vocabulary.from_counts(counts, config.min_code_count, config.max_vocabulary) == build_vocabulary(
        whole, config
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_two_workers_train_one_model_each_on_its_own_patients(mimic_dir, tmp_path):
    config = CompanionTrainingConfig()
    counts: Counter[str] = Counter()
    for k in (1, 2):
        counts += code_counts(mortality_cohort(read_mimic(mimic_dir, Shard(k, 2))).samples)
    vocabulary = tmp_path / "vocabulary.json"
    vocabulary.write_text(json.dumps(Vocabulary.from_counts(counts, config.min_code_count).to_json()))
    cluster = ",".join(f"127.0.0.1:{p}" for p in _free_ports(2))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.distributed_worker",
                "--mimic",
                str(mimic_dir),
                "--cluster",
                cluster,
                "--index",
                str(i),
                "--vocabulary",
                str(vocabulary),
                "--out",
                str(tmp_path / f"worker{i}.npz"),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in (0, 1)
    ]
    try:
        logs = [w.communicate(timeout=300)[0] for w in workers]
    finally:
        for w in workers:
            w.kill()
    assert [w.returncode for w in workers] == [0, 0], "\n".join(logs[i][-3000:] for i in (0, 1))
    results = [np.load(tmp_path / f"worker{i}.npz") for i in (0, 1)]

    whole = mortality_cohort(read_mimic(mimic_dir))
    local = [int(r["local_samples"]) for r in results]
    assert sum(local) == len(whole.samples) and min(local) > 0  # each worker encoded only its shard
    assert not set(results[0]["subjects"]) & set(results[1]["subjects"])
    assert all(s % 2 == i for i, r in enumerate(results) for s in r["subjects"])
    # the gradients were all-reduced: one model, although the workers saw different patients
    np.testing.assert_array_equal(results[0]["weights"], results[1]["weights"])
    np.testing.assert_allclose(results[0]["losses"], results[1]["losses"])
    assert int(results[0]["rows"]) == sum(n - int(n * 0.15) for n in local)  # 15 % held back for early stopping
    losses = results[0]["losses"]
    assert len(losses) >= 2 and losses[-1] < losses[0]  # it learned
    assert len(results[0]["validation_losses"]) == len(losses)
