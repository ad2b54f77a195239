"""SHAP for the companion report: the coalition histories, the linear explainer's additivity, and the
network explainer recovering known effects (real shap; the 'network' here is a known function)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from domain.visits import EncodedHistories
from model import explain
from model.companion import Attention

A, B, C, OTHER = 5, 6, 7, 9


def _history(*visits: list[int], max_codes: int = 4) -> EncodedHistories:
    codes = np.zeros((1, 3, max_codes), dtype=np.int32)
    timeline = np.zeros((1, 3, 5), dtype=np.float32)
    for i, visit in enumerate(visits, start=3 - len(visits)):
        codes[0, i, : len(visit)] = visit
        timeline[0, i, 0] = 1.0
    return EncodedHistories(codes, timeline)


def test_a_coalition_takes_codes_out_everywhere_and_puts_missing_ones_in_the_index_visit():
    base = _history([A, OTHER], [A, B])
    built = explain.with_codes(base, np.array([A, B, C]), np.array([[0, 1, 1], [1, 0, 0], [1, 1, 1]]))
    first, second, third = built.codes
    assert not (first == A).any() and (first == B).sum() == 1 and first[-1].tolist().count(C) == 1
    assert (first == OTHER).sum() == 1, "codes outside the explained set stay"
    assert (second == A).sum() == 2 and not (second == B).any() and not (second == C).any()
    assert (third == A).sum() == 2 and (third == C).sum() == 1
    assert np.array_equal(built.timeline[2], base.timeline[0])


def test_a_full_index_visit_gives_up_its_last_slot():
    base = _history([OTHER, OTHER + 1, OTHER + 2, OTHER + 3])
    built = explain.with_codes(base, np.array([A]), np.array([[1]]))
    assert built.codes[0, -1].tolist() == [OTHER, OTHER + 1, OTHER + 2, A]


def _additive(weights: dict[int, float]):
    def predict(inputs: dict) -> np.ndarray:
        flat = inputs["codes"].reshape(len(inputs["codes"]), -1)
        return 0.2 + sum(w * (flat == code).any(axis=1) for code, w in weights.items())

    return predict


def test_kernel_shap_recovers_the_effects_of_an_additive_model():
    rng = np.random.default_rng(1)
    histories = []
    for _ in range(40):
        histories.append([int(c) for c in rng.choice([A, B, C, OTHER], size=rng.integers(1, 4), replace=False)])
    codes = np.zeros((40, 3, 4), dtype=np.int32)
    codes[:, -1, :3] = [h + [0] * (3 - len(h)) for h in histories]
    timeline = np.zeros((40, 3, 5), dtype=np.float32)
    timeline[:, -1, 0] = 1
    x = EncodedHistories(codes, timeline)
    weights = {A: 0.3, B: -0.1, C: 0.05, OTHER: 0.02}
    names = [f"code{i}" for i in range(12)]
    config = explain.ShapConfig(network_samples=8, codes=3, background=10, coalitions=200)
    shown = explain.network_shap(_additive(weights), "known", x, names, config)
    assert shown.names == [names[c] for c in explain.frequent_codes(x, 3)]
    background_mean = explain.presence(x, explain.frequent_codes(x, 3))[
        explain._rows(40, config.background, config.seed + 1)
    ].mean(axis=0)
    for k in range(len(shown.rows)):
        for j, code in enumerate(explain.frequent_codes(x, 3)):
            expected = weights[int(code)] * (shown.data[k, j] - background_mean[j])
            assert shown.values[k, j] == pytest.approx(expected, abs=1e-6)


def test_linear_shap_adds_up_to_the_log_odds_against_the_background():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    dense = (rng.random((300, 30)) < 0.2).astype(float)
    y = (dense[:, 0] + dense[:, 3] - dense[:, 7] + rng.normal(0, 0.5, 300) > 0.4).astype(int)
    model = LogisticRegression(l1_ratio=1.0, solver="liblinear", C=0.3).fit(dense, y)
    kept = np.flatnonzero(model.coef_.reshape(-1))
    assert 0 < len(kept) < 30, "the L1 penalty drops features"
    config = explain.ShapConfig(logistic_samples=50, logistic_background=300)
    shown = explain.logistic_shap(model, sparse.csr_matrix(dense), [f"f{i}" for i in range(30)], config)
    assert shown.names == [f"f{i}" for i in kept]
    margin = model.decision_function(dense)
    np.testing.assert_allclose(shown.values.sum(axis=1), margin[shown.rows] - margin.mean(), atol=1e-6)
    ranking = shown.global_ranking(3)
    assert ranking[0]["feature"] in {"f0", "f3", "f7"}


def test_attention_by_visit_position_and_the_example_history():
    weights = np.array([[0, 0, 1.0], [0, 0.25, 0.75], [0.1, 0.3, 0.6]])
    attention = Attention(weights, np.array([1, 2, 3]), np.zeros((3, 3)), [0.2, 0.1])
    rows = attention.by_position()
    assert [r["visits_before_index"] for r in rows] == [0, 1, 2]
    assert [r["histories"] for r in rows] == [2, 2, 1]
    assert rows[0]["mean_weight"] == pytest.approx(0.675) and rows[2]["mean_weight"] == pytest.approx(0.1)
    assert attention.example() == 2
    single = Attention(weights[:1], np.array([1]), np.zeros((1, 3)), [0.0])
    assert single.by_position() == [] and single.example() is None
