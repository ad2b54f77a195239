"""The companion baseline's sparse summary features and the imbalance rules (pure, no training)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from domain.visits import TIMELINE_FEATURES, Visit, VisitSpec
from domain.vocabulary import Vocabulary
from model import companion

VOCAB = Vocabulary(("dx9:4280", "px9:3605", "rx:heparin"))
T0 = datetime(2130, 1, 1)


def visit(day: float, *codes: str) -> Visit:
    return Visit(T0 + timedelta(days=day), T0 + timedelta(days=day + 3), frozenset(codes))


def test_summary_features_hold_the_index_visit_the_mean_of_earlier_ones_and_their_count():
    spec = VisitSpec(VOCAB, max_visits=3, max_codes=4)
    x = spec.encode_many([[visit(0, "dx9:4280", "rx:heparin"), visit(50, "dx9:4280"), visit(90, "px9:3605")]])
    summary = companion.summary_features(x, len(VOCAB)).toarray()[0]
    names = companion.summary_feature_names(spec)
    value = dict(zip(names, summary, strict=True))
    assert len(names) == 2 * (len(VOCAB) + len(TIMELINE_FEATURES)) + 1 == len(summary)
    assert value["index visit: px9:3605"] == 1.0 and value["index visit: dx9:4280"] == 0.0
    assert value["earlier visits: dx9:4280"] == 1.0  # in both earlier visits
    assert value["earlier visits: rx:heparin"] == 0.5  # in one of two
    assert value["index visit: present"] == 1.0 and value["earlier visits: present"] == 1.0
    assert value["earlier visits (count)"] == 1.0  # two of at most two earlier visits


def test_smote_is_refused_for_code_inputs_and_runs_on_summary_features():
    spec = VisitSpec(VOCAB, max_visits=2, max_codes=4)
    histories = [[visit(0, "dx9:4280")], [visit(0, "rx:heparin")], [visit(0, "px9:3605", "dx9:4280")]] * 4
    x = spec.encode_many(histories)
    y = np.array([1, 0, 0] * 4)
    rows = np.arange(len(y))
    with pytest.raises(companion.CompanionError, match="an average of two codes is not a code"):
        companion._resample("smote", rows, y, x, seed=0)
    features, labels, _, origin = companion._resample("smote", rows, y, companion.summary_features(x, len(VOCAB)), 0)
    assert features.shape[0] == len(labels) == 16 and (labels == 1).sum() == 8 and (origin < 0).sum() == 4
    oversampled, labels, _, _ = companion._resample("random_oversampling", rows, y, x, 0)
    assert len(oversampled) == len(labels) == 16 and oversampled.codes.shape[1:] == (2, 4)


def _dense_summary(x, vocabulary_size: int) -> np.ndarray:
    """The summary features written out densely, as their definition reads (a reference for small data)."""
    n, visits, _ = x.codes.shape
    width = vocabulary_size + x.timeline.shape[2]
    out = np.zeros((n, 2 * width + 1), dtype=np.float64)
    for i in range(n):
        earlier = x.timeline[i, :-1, 0].sum()
        share = 1.0 / max(earlier, 1.0)
        for code in x.codes[i, -1][x.codes[i, -1] > 0]:
            out[i, code] += 1.0
        for v in range(visits - 1):
            for code in x.codes[i, v][x.codes[i, v] > 0]:
                out[i, width + code] += share
        out[i, vocabulary_size:width] = x.timeline[i, -1]
        out[i, width + vocabulary_size : 2 * width] = x.timeline[i, :-1].sum(axis=0) * share
        out[i, -1] = earlier / max(visits - 1, 1)
    return out


def test_summary_features_equal_their_dense_definition_on_random_histories():
    rng = np.random.default_rng(3)
    codes = [f"dx9:{c}" for c in range(40)]
    spec = VisitSpec(Vocabulary(tuple(sorted(codes[:30]))), max_visits=4, max_codes=6)
    histories = [
        [visit(30 * v, *rng.choice(codes, int(rng.integers(1, 9)), replace=False)) for v in range(rng.integers(1, 7))]
        for _ in range(60)
    ]
    x = spec.encode_many(histories)
    matrix = companion.summary_features(x, len(spec.vocabulary))
    np.testing.assert_allclose(matrix.toarray(), _dense_summary(x, len(spec.vocabulary)), rtol=1e-6)
    assert matrix.has_canonical_format and matrix.dtype == np.float32


def test_summary_features_stay_sparse_at_full_vocabulary_size():
    """73,342 samples × 40,015 columns was built densely first: 16 GB resident at full MIMIC-IV scale."""
    import tracemalloc

    from domain.visits import EncodedHistories

    n, vocabulary = 20_000, 20_002
    rng = np.random.default_rng(0)
    codes = np.zeros((n, 10, 64), np.int32)
    codes[:, -3:, :20] = rng.integers(2, vocabulary, (n, 3, 20))
    timeline = np.zeros((n, 10, 5), np.float32)
    timeline[:, -3:, :] = rng.random((n, 3, 5))
    tracemalloc.start()
    matrix = companion.summary_features(EncodedHistories(codes, timeline), vocabulary)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert matrix.shape == (n, 2 * (vocabulary + 5) + 1)
    assert peak < 200 * 2**20, f"{peak / 2**20:.0f} MiB: a dense {n} × {matrix.shape[1]} float32 would be 3 GiB"


@pytest.mark.e2e  # the parallel fits run in worker processes
def test_l1_folds_fitted_two_at_a_time_equal_the_folds_one_by_one(mimic_dir):
    from dataclasses import replace

    from preprocessing.cohorts import mortality_cohort
    from preprocessing.mimic import read_mimic

    config = companion.CompanionTrainingConfig(task="mortality", folds=3)
    cohort = mortality_cohort(read_mimic(mimic_dir))
    enc = companion._encode(cohort, cohort.samples, config)
    folds = companion._folds(cohort, enc, config)
    results = {}
    for jobs in (1, 2):
        lines: list[str] = []
        clock = companion.StudyClock(3)
        run = replace(config, logistic_jobs=jobs)
        results[jobs] = companion._cross_validate_logistic(folds, run, "class_weights", lines.append, clock)
        assert len(lines) == 3 and clock.done == 3 and "fold 3/3" in lines[-1]
    np.testing.assert_array_equal(results[1][0], results[2][0])
    assert results[1][2] == results[2][2]  # the same non-zero coefficients
    assert companion.logistic_jobs(config, 65) == 1 and companion.logistic_jobs(config, 70_000) >= 1
    with pytest.raises(ValueError, match="logistic_jobs"):
        companion.CompanionTrainingConfig(logistic_jobs=0)
