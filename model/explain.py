"""SHAP explanations of the companion models for the report (training side; the device uses occlusion).

* **L1 logistic regression** — ``shap.LinearExplainer`` on the features the L1 penalty kept
  (non-zero coefficients), interventional, with the cohort as background: in log-odds, exact
  for a linear model.
* **The exported network** — ``shap.KernelExplainer`` over the presence of the ``codes`` codes
  seen most often in the cohort's histories. A coalition keeps a history's present codes that
  are in it, takes out those that are not (from every visit) and, for a code the background
  patient has and this one does not, adds it to the index visit; codes outside the explained
  set stay as they are. The background is a small random sample of the cohort's patients, so
  a code's value is measured against the population's rate of having it.

One patient's explanation (the one the network ranks riskiest) lists its top codes by SHAP value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from domain.visits import EncodedHistories
from domain.vocabulary import OOV, PAD

Predict = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class ShapConfig:
    """How much of the cohort the explanations cover; defaults in one place."""

    logistic_samples: int = 2000  # rows explained for the L1 summary (all when fewer)
    logistic_background: int = 2000  # rows whose means the interventional explainer measures against
    network_samples: int = 60  # histories the network's KernelExplainer explains
    codes: int = 20  # most frequent codes whose presence the network's explanation varies
    background: int = 10  # background patients of the KernelExplainer
    coalitions: int = 400  # model evaluations per explained history and background patient
    top: int = 10  # features listed in the report
    seed: int = 0


@dataclass(frozen=True)
class Explanation:
    """SHAP values of one model: rows explained × features, their values, and the features' names."""

    model: str
    values: np.ndarray
    data: np.ndarray
    names: list[str]
    space: str  # what the values add up to: "log-odds" or "probability"
    rows: np.ndarray  # the cohort rows explained, in order

    def global_ranking(self, top: int) -> list[dict]:
        """Features by mean |SHAP| over the explained rows, largest first."""
        mean_abs = np.abs(self.values).mean(axis=0)
        order = np.argsort(-mean_abs, kind="stable")[:top]
        return [
            {"feature": self.names[i], "mean_abs_shap": float(mean_abs[i]), "mean_value": float(self.data[:, i].mean())}
            for i in order
            if mean_abs[i] > 0
        ]

    def patient(self, row: int, top: int) -> list[dict]:
        """One explained row's features by |SHAP|, largest first, with the feature's value."""
        values = self.values[row]
        order = np.argsort(-np.abs(values), kind="stable")[:top]
        return [
            {"feature": self.names[i], "shap": float(values[i]), "value": float(self.data[row, i])}
            for i in order
            if values[i] != 0
        ]


def _rows(n: int, size: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))


def logistic_shap(model, summary, names: list[str], config: ShapConfig) -> Explanation:
    """SHAP of the fitted L1 logistic regression on its kept features, in log-odds."""
    import shap

    kept = np.flatnonzero(model.coef_.reshape(-1))
    if len(kept) == 0:
        raise ValueError("the L1 model kept no feature: nothing to explain")

    def dense(rows: np.ndarray) -> np.ndarray:  # only the rows needed: the whole cohort would not fit at scale
        return np.asarray(summary[rows][:, kept].todense(), dtype=np.float64)

    n = summary.shape[0]
    background = dense(_rows(n, config.logistic_background, config.seed + 1))
    linear = (model.coef_.reshape(-1)[kept], float(model.intercept_[0]))
    explainer = shap.LinearExplainer(linear, shap.maskers.Independent(background, max_samples=len(background)))
    rows = _rows(n, config.logistic_samples, config.seed)
    data = dense(rows)
    values = np.asarray(explainer.shap_values(data))
    return Explanation("logistic_l1", values, data, [names[i] for i in kept], "log-odds", rows)


def frequent_codes(x: EncodedHistories, count: int) -> np.ndarray:
    """Vocabulary indices of the ``count`` codes in most histories (padding and unknown codes excluded)."""
    rows = np.repeat(np.arange(len(x), dtype=np.int64), x.codes.shape[1] * x.codes.shape[2])
    pairs = np.unique(rows * (int(x.codes.max()) + 1) + x.codes.reshape(-1))  # (history, code), each once
    frequency = np.bincount(pairs % (int(x.codes.max()) + 1), minlength=OOV + 1)  # no histories × vocabulary matrix
    frequency[[PAD, OOV]] = 0
    return np.array([int(i) for i in np.argsort(-frequency, kind="stable")[:count] if frequency[i] > 0])


def presence(x: EncodedHistories, codes: np.ndarray) -> np.ndarray:
    """``(n, len(codes))``: 1 where the history has the code in any visit."""
    flat = x.codes.reshape(len(x), -1)
    return np.stack([(flat == c).any(axis=1) for c in codes], axis=1).astype(np.float64)


def with_codes(base: EncodedHistories, codes: np.ndarray, coalitions: np.ndarray) -> EncodedHistories:
    """One history (``base``, a single row) rebuilt for each row of ``coalitions``.

    Where a coalition has code ``j`` off, the code is taken out of every visit; where it has it
    on and the history lacks it, it is added to the index visit (a free slot, else the last one).
    """
    m = len(coalitions)
    out = np.repeat(base.codes, m, axis=0)
    for j, code in enumerate(codes):
        off = coalitions[:, j] < 0.5
        out[off] = np.where(out[off] == code, PAD, out[off])
        index_visit = out[:, -1, :]
        missing = ~off & ~(out == code).any(axis=(1, 2))
        free = np.argmax(index_visit == PAD, axis=1)
        slot = np.where(index_visit[np.arange(m), free] == PAD, free, index_visit.shape[1] - 1)
        index_visit[np.flatnonzero(missing), slot[missing]] = code
    return EncodedHistories(out, np.repeat(base.timeline, m, axis=0))


def network_shap(
    predict: Predict, model_name: str, x: EncodedHistories, names: list[str], config: ShapConfig
) -> Explanation:
    """KernelSHAP of a network over the presence of the cohort's most frequent codes, in probability."""
    import shap

    codes = frequent_codes(x, config.codes)
    data = presence(x, codes)
    background = data[_rows(len(x), config.background, config.seed + 1)]
    explained = _rows(len(x), config.network_samples, config.seed)
    values = np.zeros((len(explained), len(codes)))
    for k, row in enumerate(explained):
        base = x.take(np.array([row]))

        def f(coalitions: np.ndarray, base: EncodedHistories = base) -> np.ndarray:
            return predict(with_codes(base, codes, np.asarray(coalitions)).inputs())

        explainer = shap.KernelExplainer(f, background)
        values[k] = np.asarray(explainer.shap_values(data[row], nsamples=config.coalitions, silent=True)).reshape(-1)
    return Explanation(model_name, values, data[explained], [names[int(c)] for c in codes], "probability", explained)


def summary_plot(explanation: Explanation, path, title: str, top: int) -> None:
    """SHAP's own summary (beeswarm) plot of one explanation, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    shap.summary_plot(
        explanation.values,
        explanation.data,
        feature_names=explanation.names,
        max_display=top,
        show=False,
        plot_size=(7, 0.35 * min(top, len(explanation.names)) + 1.5),
        rng=np.random.default_rng(0),
    )
    plt.title(title, fontsize=9)
    plt.tight_layout()
    plt.savefig(path, dpi=110)
    plt.close("all")
