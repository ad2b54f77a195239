"""The companion baseline's sparse summary features and the imbalance rules (pure, no training)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from model import companion
from preprocessing.visits import TIMELINE_FEATURES, Visit, VisitSpec
from preprocessing.vocabulary import Vocabulary

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
