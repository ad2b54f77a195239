"""``advisor train mortality|readmission``: MIMIC → cohort → networks and L1 logistic
regression under stratified k-fold cross-validation → the best network as TFLite → bundle.

Performance figures are out-of-fold: every sample is scored by a model that never saw it.
Resampling for class imbalance (random oversampling, SMOTE) happens inside the training
folds only. The exported network is then refitted on the whole cohort; its TFLite/Keras
parity is measured on the whole cohort through the device inference path, which ``model/``
does not import (the caller passes ``device_predict``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from device.contract.manifest import Manifest
from domain.visits import TIMELINE_FEATURES, EncodedHistories, Visit, VisitSpec
from domain.vocabulary import Vocabulary, count_codes
from model import bundle_writer, classification_metrics, companion_networks, explain, export, fairness, skipgram
from preprocessing.cohorts import Cohort, mortality_cohort, readmission_cohort
from preprocessing.demographics import sample_groups
from preprocessing.mimic import MimicData, read_mimic

DevicePredict = Callable[[Path, str, EncodedHistories], np.ndarray]
Progress = Callable[[str], None]

TASKS = ("mortality", "readmission")
LOGISTIC = "logistic_l1"
IMBALANCE_METHODS = ("class_weights", "random_oversampling", "smote")
MODEL_LABELS = {
    "lstm": "LSTM",
    "gru": "GRU",
    "bilstm": "bidirectional LSTM",
    "rnn_last_hf": "RNN, last-index loss",
    "cnn_wide": "CNN-Wide",
    "mlp": "MLP on the index visit",
    "talstm": "time-aware LSTM with attention",
    LOGISTIC: "L1 logistic regression (timeline summary)",
}
OUTPUTS = {
    "mortality": "probability of death within 365 days of ICU discharge",
    "readmission": "probability of a new admission within 30 days of this discharge",
}
DEMO_PATIENT_LIMIT = 1000
SMALL_DATA_NOTE = (
    "This data set is too small for a meaningful AUROC: the figures below are wide "
    "intervals around a handful of positives, shown to prove the pipeline, not the model."
)


class CompanionError(Exception):
    """Training cannot proceed on this data; the message says why."""


@dataclass(frozen=True)
class CompanionTrainingConfig:
    """Everything ``train mortality|readmission`` can vary; defaults in one place."""

    task: str = "mortality"
    index: str = "auto"  # readmission: "hf", "all", or "auto" (hf when it has enough positives)
    max_visits: int = 10
    max_codes: int = 64  # codes kept per visit (diagnoses, then procedures, then drugs)
    min_code_count: int = 2
    max_vocabulary: int = 20_000  # the rest share the out-of-vocabulary index
    network: companion_networks.CompanionNetworkConfig = field(
        default_factory=companion_networks.CompanionNetworkConfig
    )
    folds: int = 5
    bootstrap: int = 1000
    fairness_bootstrap: int = 200  # resamples per group of the fairness table (4 attributes × their groups)
    fairness_min_class: int = fairness.MIN_CLASS  # positives and negatives a group needs to be read
    imbalance_network: dict = field(default_factory=lambda: {"mortality": "gru", "readmission": "mlp"})
    logistic_c: float = 1.0
    target_sensitivity: float = 0.8
    importance_features: int = 100
    importance_samples: int = 2000  # toggled on a random subset: two predictions per feature
    shap: explain.ShapConfig = field(default_factory=explain.ShapConfig)
    parity_samples: int = 5000  # TFLite runs one history at a time, as on the device
    skipgram: bool = False  # initialise code embeddings from skip-gram vectors of co-occurring codes
    golden_pairs: int = 6
    sample: int | None = None  # train on about this many samples (whole patients, at random): a quick run
    logistic_jobs: int | None = None  # L1 folds fitted at a time (liblinear uses one core); None: 2 on large cohorts
    seed: int = 0
    run_id: str | None = None  # the MLflow run that records this training (model/tracking.py)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}")
        if self.index not in ("hf", "all", "auto"):
            raise ValueError("index must be hf, all or auto")
        if self.folds < 2:
            raise ValueError("cross-validation needs at least 2 folds")
        if self.logistic_jobs is not None and self.logistic_jobs < 1:
            raise ValueError("logistic_jobs must be at least 1")


@dataclass
class CompanionResult:
    task: str
    bundle_dir: Path
    manifest: Manifest
    cohort: Cohort
    labels: np.ndarray
    out_of_fold: dict[str, np.ndarray]
    metrics: dict[str, dict]
    imbalance: dict[str, dict[str, dict]]
    best: str
    confusion: dict
    importance: dict[str, list[dict]]
    attention: Attention | None  # the time-aware network's out-of-fold attention over visits
    explanations: Explanations  # SHAP of the L1 model and the exported network (refitted on the whole cohort)
    fairness: list[fairness.GroupFigures]  # the exported network's out-of-fold figures by group
    parity: dict
    notes: list[str]
    seconds: float
    encoded: EncodedHistories  # the cohort's encoded histories (parity inputs)
    keras_probabilities: np.ndarray  # the exported network's Keras outputs on them


@dataclass(frozen=True)
class Attention:
    """Out-of-fold attention of the time-aware network: each history's weights over its visits."""

    weights: np.ndarray  # (samples, max_visits), 0 on padded visits, each row summing to about 1
    visits: np.ndarray  # real visits per history
    gap_days: np.ndarray  # (samples, max_visits) days since the previous discharge (capped at 365)
    decay_per_year: list[float]  # each fold's learned drop in attention score per year before the index

    def by_position(self, min_visits: int = 2) -> list[dict]:
        """Mean weight of the index visit, the one before it, …, over histories with at least ``min_visits``."""
        rows = self.visits >= min_visits
        if not rows.any():
            return []
        deepest = int(self.visits[rows].max())
        out = []
        for back in range(deepest):
            having = rows & (self.visits > back)
            out.append(
                {
                    "visits_before_index": back,
                    "histories": int(having.sum()),
                    "mean_weight": float(self.weights[having, -1 - back].mean()),
                }
            )
        return out

    def example(self) -> int | None:
        """The history with the most visits (the first such), to show one patient's weights."""
        return int(np.argmax(self.visits)) if len(self.visits) and self.visits.max() > 1 else None

    def to_json(self) -> dict:
        return {"by_position": self.by_position(), "decay_per_year": self.decay_per_year}


@dataclass(frozen=True)
class Explanations:
    """SHAP of both explained models and the one patient the report shows."""

    logistic: explain.Explanation
    network: explain.Explanation
    patient_row: int  # row of ``network`` explained for one patient: the riskiest explained history
    patient_probability: float

    def to_json(self, top: int) -> dict:
        return {
            "logistic_l1": {"space": self.logistic.space, "top": self.logistic.global_ranking(top)},
            self.network.model: {"space": self.network.space, "top": self.network.global_ranking(top)},
            "patient": {"probability": self.patient_probability, "top": self.network.patient(self.patient_row, top)},
        }


@dataclass
class _Encoded:
    spec: VisitSpec
    x: EncodedHistories
    y: np.ndarray
    visit_labels: np.ndarray
    visit_weights: np.ndarray
    groups: np.ndarray  # subject id of each sample
    code_vectors: np.ndarray | None  # skip-gram initialisation of the code embedding, if asked for

    @property
    def summary(self):
        """The logistic regression's sparse summary features of every sample.

        Built anew on each use (about 2 s at full MIMIC-IV size) rather than kept: six folds'
        matrices would hold 0.7 GB through the whole study.
        """
        return summary_features(self.x, len(self.spec.vocabulary))


def _cohort(data: MimicData, config: CompanionTrainingConfig, notes: list[str]) -> Cohort:
    if config.task == "mortality":
        return mortality_cohort(data)
    if config.index != "auto":
        return readmission_cohort(data, config.index)
    hf = readmission_cohort(data, "hf")
    negatives = len(hf.samples) - hf.positives
    if min(hf.positives, negatives) >= config.folds:
        return hf
    notes.append(
        f"heart-failure cohort has {len(hf.samples)} samples and {hf.positives} positive(s), too few for "
        f"{config.folds}-fold cross-validation; trained the all-admissions variant instead"
    )
    return readmission_cohort(data, "all")


def sample_cohort(cohort: Cohort, size: int, seed: int) -> Cohort:
    """About ``size`` samples of whole patients, drawn at random (a patient's samples stay together)."""
    by_patient: dict[int, list] = {}
    for sample in cohort.samples:
        by_patient.setdefault(sample.subject_id, []).append(sample)
    order = np.random.default_rng(seed).permutation(sorted(by_patient))
    picked: list = []
    for subject in order:
        if len(picked) >= size:
            break
        picked.extend(by_patient[int(subject)])
    smaller = Cohort(cohort.name, picked, list(cohort.steps))
    smaller.step(f"random sample of whole patients (--sample {size})", len(picked))
    smaller.step("positives in the sample", smaller.positives)
    return smaller


def build_vocabulary(samples: list, config: CompanionTrainingConfig) -> Vocabulary:
    """Codes counted once per distinct admission of the given samples.

    Counting per sample would be a label leak: in the all-admissions variant an admission
    reappears in every later sample of its patient, so only a patient's last admission
    (label 0 by construction: nothing follows it) would have codes seen once — the
    out-of-vocabulary flag then predicts "not readmitted" (L1 weight −5.3 on the demo).
    """
    return Vocabulary.from_counts(code_counts(samples), config.min_code_count, config.max_vocabulary)


def code_counts(samples: list) -> Counter[str]:
    """Admissions holding each code, over the distinct admissions of ``samples`` (shards' counts add up)."""
    return count_codes(_admissions(samples))


def _admissions(samples: list) -> list[frozenset[str]]:
    """The code sets of the distinct admissions behind ``samples``."""
    return list({(s.subject_id, v.admit, v.discharge): v.codes for s in samples for v in s.visits}.values())


def coverage(samples: list, spec: VisitSpec) -> dict:
    """How much of the cohort's admissions the input keeps: codes outside the vocabulary, visits cut short."""
    admissions = _admissions(samples)
    known = set(spec.vocabulary.codes)
    total = sum(len(codes) for codes in admissions)
    unknown = sum(1 for codes in admissions for code in codes if code not in known)
    truncated = sum(1 for codes in admissions if len(spec.vocabulary.encode(codes)) > spec.max_codes)
    return {
        "admissions": len(admissions),
        "code_occurrences": total,
        "out_of_vocabulary_share": unknown / max(total, 1),
        "visits_over_max_codes_share": truncated / max(len(admissions), 1),
    }


def _encode(cohort: Cohort, vocabulary_from: list, config: CompanionTrainingConfig) -> _Encoded:
    """Every sample encoded with a vocabulary built from ``vocabulary_from`` only."""
    spec = VisitSpec(build_vocabulary(vocabulary_from, config), config.max_visits, config.max_codes)
    vectors = (
        skipgram.train_vectors(
            _admissions(vocabulary_from),
            spec.vocabulary,
            skipgram.SkipGramConfig(dim=config.network.embedding, seed=config.seed),
        )
        if config.skipgram
        else None
    )
    x = spec.encode_many([s.visits for s in cohort.samples])
    y = np.array([s.label for s in cohort.samples], dtype=int)
    visit_labels = np.zeros((len(y), config.max_visits), dtype=np.float32)
    visit_weights = np.zeros_like(visit_labels)
    for i, sample in enumerate(cohort.samples):
        labels = list(sample.visit_labels or (sample.label,))[-config.max_visits :]
        visit_labels[i, config.max_visits - len(labels) :] = labels
        real = min(len(sample.visits), config.max_visits)
        visit_weights[i, config.max_visits - real :] = config.network.aux_weight
        visit_weights[i, -1] = 1.0
    groups = np.array([s.subject_id for s in cohort.samples])
    return _Encoded(spec, x, y, visit_labels, visit_weights, groups, vectors)


@dataclass
class _Fold:
    train: np.ndarray
    test: np.ndarray
    enc: _Encoded  # vocabulary from the training patients only


def _folds(cohort: Cohort, enc: _Encoded, config: CompanionTrainingConfig) -> list[_Fold]:
    """Stratified by label, grouped by patient: a patient's samples never sit on both sides.

    (Ungrouped, the all-admissions sequence labeller learned a test sample's label from a
    later sample of the same patient, whose earlier visits carry it: AUROC 0.94 on the demo.)
    Each fold encodes with a vocabulary of its training patients, so a test patient's own
    codes — including those of admissions after the index — never shape the vocabulary.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(config.folds, shuffle=True, random_state=config.seed)
    return [
        _Fold(train, test, _encode(cohort, [cohort.samples[i] for i in train], config))
        for train, test in splitter.split(np.zeros(len(enc.y)), enc.y, enc.groups)
    ]


def summary_features(x: EncodedHistories, vocabulary_size: int):
    """Timeline summary for the logistic regression, sparse: the index visit's codes and timeline,
    the mean over earlier visits of both, and the count of earlier visits."""
    from scipy import sparse

    n, visits, _ = x.codes.shape
    width = vocabulary_size + x.timeline.shape[2]
    count = x.timeline[:, :-1, 0].sum(axis=1)
    share = 1.0 / np.maximum(count, 1.0)
    rows, cols, values = [], [], []
    index_rows, index_slots = np.nonzero(x.codes[:, -1, :])
    rows.append(index_rows)
    cols.append(x.codes[index_rows, -1, index_slots])
    values.append(np.ones(len(index_rows), dtype=np.float32))
    earlier_rows, earlier_visits, earlier_slots = np.nonzero(x.codes[:, :-1, :])
    rows.append(earlier_rows)
    cols.append(width + x.codes[earlier_rows, earlier_visits, earlier_slots])
    values.append(share[earlier_rows].astype(np.float32))
    columns = {  # the timeline columns, built sparse: a dense n × features matrix would not fit at full scale
        vocabulary_size: x.timeline[:, -1, :],
        width + vocabulary_size: x.timeline[:, :-1, :].sum(axis=1) * share[:, None],
        2 * width: (count / max(visits - 1, 1))[:, None],
    }
    for first, block in columns.items():
        block = block.astype(np.float32)
        block_rows, block_cols = np.nonzero(block)
        rows.append(block_rows)
        cols.append(first + block_cols)
        values.append(block[block_rows, block_cols])
    matrix = sparse.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n, 2 * width + 1)
    )
    matrix.sum_duplicates()  # canonical: sorted column indices, one entry each
    return matrix


def feature_names(spec: VisitSpec) -> list[str]:
    """A name per vocabulary index and timeline column."""
    return ["<padding>", "<unknown code>", *spec.vocabulary.codes, *TIMELINE_FEATURES]


def summary_feature_names(spec: VisitSpec) -> list[str]:
    names = feature_names(spec)
    return [f"index visit: {n}" for n in names] + [f"earlier visits: {n}" for n in names] + ["earlier visits (count)"]


def class_weights(y: np.ndarray) -> np.ndarray:
    """Balanced per-sample weights: each class carries half of the total weight."""
    counts = np.bincount(y, minlength=2).astype(float)
    per_class = len(y) / (2.0 * np.maximum(counts, 1.0))
    return per_class[y]


def _l1_logistic(config: CompanionTrainingConfig):
    """The LASSO baseline of the readmission paper: logistic regression with a pure L1 penalty.

    liblinear shuffles with a random state: a fixed one gives the same fit in any process.
    """
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(
        l1_ratio=1.0, solver="liblinear", C=config.logistic_c, max_iter=1000, random_state=config.seed
    )


SMOTE_ON_CODES = (
    "not applicable: SMOTE interpolates feature vectors, and an average of two codes is not a code "
    "(compared on the L1 model's summary features instead)"
)


def _resample(method: str, rows: np.ndarray, y: np.ndarray, features, seed: int):
    """Training rows after resampling: (features, y, weights, row index of each sample or -1 if synthetic).

    ``features`` are encoded histories (networks) or the sparse summary matrix (L1 model); SMOTE
    runs on the latter only.
    """
    if method == "class_weights":
        return _rows(features, rows), y[rows], class_weights(y[rows]), rows
    if method == "random_oversampling":
        from imblearn.over_sampling import RandomOverSampler  # type: ignore[import-untyped]

        sampler = RandomOverSampler(random_state=seed)
        picked, _ = sampler.fit_resample(rows.reshape(-1, 1), y[rows])
        picked = picked.reshape(-1)
        return _rows(features, picked), y[picked], np.ones(len(picked)), picked
    if method == "smote":
        from imblearn.over_sampling import SMOTE

        if isinstance(features, EncodedHistories):
            raise CompanionError(SMOTE_ON_CODES)
        minority = int(min(np.bincount(y[rows], minlength=2)))
        if minority < 2:
            raise CompanionError("SMOTE needs at least two minority samples in every training fold")
        sampler = SMOTE(k_neighbors=min(5, minority - 1), random_state=seed)
        new_x, new_y = sampler.fit_resample(features[rows], y[rows])
        origin = np.concatenate([rows, -np.ones(len(new_y) - len(rows), dtype=int)])
        return new_x, new_y, np.ones(len(new_y)), origin
    raise ValueError(f"unknown imbalance method {method!r}")


def _rows(features, rows: np.ndarray):
    return features.take(rows) if isinstance(features, EncodedHistories) else features[rows]


def _fit_network(
    kind: str, enc: _Encoded, train: np.ndarray, test: np.ndarray, method: str, config: CompanionTrainingConfig
) -> tuple[np.ndarray, Any]:
    """One network on one fold: its test-row probabilities and the model."""
    x, y, weights, origin = _resample(method, train, enc.y, enc.x, config.seed)
    labels = weights_seq = None
    if kind in companion_networks.SEQUENCE_OUTPUT:
        labels, weights_seq = enc.visit_labels[origin], enc.visit_weights[origin]
    model = companion_networks.fit(
        kind, x.inputs(), y, weights, len(enc.spec.vocabulary), config.network, labels, weights_seq, enc.code_vectors
    )
    return companion_networks.predict(model, kind, enc.x.take(test).inputs()), model


def _fit_logistic(summary, labels: np.ndarray, train: np.ndarray, test: np.ndarray, method: str, config):
    """The L1 model on one fold's summary features: its test-row probabilities, the model and the seconds."""
    started = time.monotonic()
    x, y, weights, _ = _resample(method, train, labels, summary, config.seed)
    model = _l1_logistic(config)
    model.fit(x, y, sample_weight=weights)
    return model.predict_proba(summary[test])[:, 1], model, time.monotonic() - started


@dataclass
class StudyClock:
    """Counts the network fits of the study and estimates the time left from the ones done."""

    planned: int
    done: int = 0
    seconds: float = 0.0
    BAR = 20

    def fitted(self, seconds: float) -> str:
        """Record one fit; a progress bar and the estimate, in words."""
        self.done += 1
        self.seconds += seconds
        share = min(self.done / max(self.planned, 1), 1.0)
        bar = "#" * round(share * self.BAR) + "." * (self.BAR - round(share * self.BAR))
        per_fit = self.seconds / self.done
        left = per_fit * max(self.planned - self.done, 0)
        return f"[{bar}] {self.done}/{self.planned} fits, about {_minutes(left)} left"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _cross_validate(
    kind: str,
    folds: list[_Fold],
    config: CompanionTrainingConfig,
    method: str,
    progress: Progress,
    clock: StudyClock,
    attention: list | None = None,
) -> tuple[np.ndarray, float, int]:
    """Out-of-fold probabilities, total training seconds and the parameter count.

    For an attention network, ``attention`` (if given) receives each fold's test rows, their
    attention weights and the fold's learned time decay.
    """
    if kind == LOGISTIC:
        return _cross_validate_logistic(folds, config, method, progress, clock)
    oof = np.zeros(len(folds[0].enc.y))
    seconds, params = 0.0, 0
    for fold, split in enumerate(folds, start=1):
        started = time.monotonic()
        oof[split.test], model = _fit_network(kind, split.enc, split.train, split.test, method, config)
        if attention is not None and kind in companion_networks.ATTENTION:
            weights = companion_networks.attention_weights(model, split.enc.x.take(split.test).inputs())
            attention.append((split.test, weights, companion_networks.time_decay(model)))
        took = time.monotonic() - started
        seconds += took
        params = companion_networks.parameters(model)
        status = clock.fitted(took)
        progress(f"  {MODEL_LABELS[kind]} [{method}] fold {fold}/{config.folds}: {took:.1f} s  {status}")
    return oof, seconds, params


PARALLEL_LOGISTIC_FROM = 10_000  # samples: below this, starting worker processes costs more than it saves


def logistic_jobs(config: CompanionTrainingConfig, samples: int) -> int:
    """How many L1 folds to fit at a time: liblinear runs on one core, so larger cohorts use two."""
    if config.logistic_jobs is not None:
        return config.logistic_jobs
    return 1 if samples < PARALLEL_LOGISTIC_FROM else min(2, os.cpu_count() or 1)


def _cross_validate_logistic(
    folds: list[_Fold], config: CompanionTrainingConfig, method: str, progress: Progress, clock: StudyClock
) -> tuple[np.ndarray, float, int]:
    """The L1 model's folds, several at a time in worker processes: the same fits as one by one."""
    from sklearn.utils.parallel import Parallel, delayed

    oof = np.zeros(len(folds[0].enc.y))
    seconds, params = 0.0, 0
    jobs = (
        delayed(_fit_logistic)(split.enc.summary, split.enc.y, split.train, split.test, method, config)
        for split in folds
    )
    last = time.monotonic()
    runs = Parallel(n_jobs=min(logistic_jobs(config, len(oof)), len(folds)), return_as="generator")(jobs)
    for fold, (split, (probabilities, model, took)) in enumerate(zip(folds, runs, strict=True), start=1):
        oof[split.test] = probabilities
        seconds += took
        params = int(np.count_nonzero(model.coef_)) + 1
        now = time.monotonic()
        status = clock.fitted(now - last)  # wall time between results: the estimate stays in wall time
        last = now
        progress(f"  {MODEL_LABELS[LOGISTIC]} [{method}] fold {fold}/{config.folds}: {took:.1f} s  {status}")
    return oof, seconds, params


def _attention(folds: list, x: EncodedHistories) -> Attention:
    """The folds' attention weights put back in sample order."""
    weights = np.zeros(x.timeline.shape[:2], dtype=np.float64)
    for rows, fold_weights, _ in folds:
        weights[rows] = fold_weights
    return Attention(
        weights,
        x.timeline[:, :, 0].sum(axis=1).astype(int),
        x.timeline[:, :, companion_networks.GAP_COLUMN] * 365.0,
        [decay for _, _, decay in folds],
    )


def _golden_histories(spec: VisitSpec, n: int, seed: int) -> list[list[Visit]]:
    """Synthetic histories for the bundle's self-test (no patient data in the bundle)."""
    rng = np.random.default_rng(seed)
    codes = list(spec.vocabulary.codes)
    start = datetime(2100, 1, 1)
    histories = []
    for i in range(n):
        visits, when = [], start
        for _ in range(1 + i % (spec.max_visits + 2)):
            picked = rng.choice(codes, size=min(len(codes), int(rng.integers(3, 40))), replace=False)
            chosen = set(picked.tolist()) | ({"dx9:unseen-code"} if i % 3 == 0 else set())
            stay = timedelta(days=float(rng.uniform(1, 20)))
            visits.append(Visit(when, when + stay, frozenset(chosen)))
            when = when + stay + timedelta(days=float(rng.uniform(5, 400)))
        histories.append(visits)
    return histories


def history_to_json(visits: list[Visit]) -> list[dict]:
    """A history as the device's ``patients`` payload expects it."""
    return [
        {"admit": v.admit.isoformat() + "Z", "discharge": v.discharge.isoformat() + "Z", "codes": sorted(v.codes)}
        for v in visits
    ]


def _fingerprint(data: MimicData, cohort: Cohort) -> str:
    digest = hashlib.sha256(f"{data.layout} {data.version}".encode())
    for s in cohort.samples:
        digest.update(f"{s.subject_id},{s.index_hadm},{s.label};".encode())
    return digest.hexdigest()


def _toggle_importance(model, kind: str, enc: _Encoded, config: CompanionTrainingConfig) -> list[dict]:
    """Mean change in probability when each frequent code of the index visit is switched on vs off.

    On a random subset of ``importance_samples`` histories, for the ``importance_features``
    codes most often in index visits: "on" adds the code to the index visit (in a free slot, or
    instead of its last code), "off" removes it.
    """
    names = feature_names(enc.spec)
    index_codes = enc.x.codes[:, -1, :]
    frequency = np.bincount(index_codes.reshape(-1), minlength=len(names))
    frequency[0] = 0
    columns = [int(c) for c in np.argsort(-frequency, kind="stable")[: config.importance_features] if frequency[c] > 0]
    rng = np.random.default_rng(config.seed)
    subset = np.sort(rng.choice(len(enc.y), size=min(config.importance_samples, len(enc.y)), replace=False))
    base = enc.x.take(subset)
    rows = []
    for column in columns:
        on, off = base.codes.copy(), base.codes.copy()
        last_on, last_off = on[:, -1, :], off[:, -1, :]
        last_off[last_off == column] = 0
        missing = ~(last_on == column).any(axis=1)
        free = np.argmax(last_on == 0, axis=1)
        slot = np.where(last_on[np.arange(len(subset)), free] == 0, free, last_on.shape[1] - 1)
        last_on[np.flatnonzero(missing), slot[missing]] = column
        p_on = companion_networks.predict(model, kind, {"codes": on, "timeline": base.timeline})
        p_off = companion_networks.predict(model, kind, {"codes": off, "timeline": base.timeline})
        rows.append(
            {
                "feature": names[column],
                "mean_change": float((p_on - p_off).mean()),
                "in_index_visits": int(frequency[column]),
            }
        )
    return sorted(rows, key=lambda r: -abs(r["mean_change"]))


def _whole_cohort_logistic(enc: _Encoded, config: CompanionTrainingConfig):
    """The L1 model fitted on the whole cohort (for its coefficients and SHAP; never exported)."""
    model = _l1_logistic(config)
    model.fit(enc.summary, enc.y, sample_weight=class_weights(enc.y))
    return model


def _logistic_importance(model, enc: _Encoded) -> list[dict]:
    names = summary_feature_names(enc.spec)
    coefs = model.coef_.reshape(-1)
    return [
        {"feature": names[i], "coefficient": float(coefs[i])}
        for i in np.argsort(-np.abs(coefs), kind="stable")
        if coefs[i] != 0
    ]


def _explanations(logistic, network, kind: str, enc: _Encoded, config: CompanionTrainingConfig) -> Explanations:
    """SHAP of the whole-cohort L1 model and of the refitted network; the riskiest explained history."""
    linear = explain.logistic_shap(logistic, enc.summary, summary_feature_names(enc.spec), config.shap)

    def predict(inputs: dict) -> np.ndarray:
        return companion_networks.predict(network, kind, inputs)

    deep = explain.network_shap(predict, kind, enc.x, feature_names(enc.spec), config.shap)
    probabilities = companion_networks.predict(network, kind, enc.x.take(deep.rows).inputs())
    riskiest = int(np.argmax(probabilities))
    return Explanations(linear, deep, riskiest, float(probabilities[riskiest]))


def _model_files(task: str) -> dict[str, str]:
    return {"int8": f"{task}_int8.tflite", "float": f"{task}_float.tflite"}


@dataclass
class _Exported:
    tflite: dict[str, bytes]
    manifest: dict
    keras: np.ndarray
    parity: dict
    extra: dict[str, np.ndarray]


def _export(
    model,
    kind: str,
    spec: VisitSpec,
    calibration: EncodedHistories,
    x: EncodedHistories,
    y: np.ndarray,
    config: CompanionTrainingConfig,
    device_predict: DevicePredict,
    extra: EncodedHistories | None = None,
) -> _Exported:
    """TFLite float and int8 of ``model``, and its device-path outputs on ``x`` compared with Keras.

    Beyond ``parity_samples`` histories, parity is measured on a random subset of that size.
    """
    if len(y) > config.parity_samples:
        picked = np.sort(np.random.default_rng(config.seed).choice(len(y), config.parity_samples, replace=False))
        x, y = x.take(picked), y[picked]
    graph = companion_networks.inference_graph(model, kind)
    keras_p = companion_networks.predict(model, kind, x.inputs())
    tflite = export.to_tflite(graph, calibration.inputs(), config.seed)
    files = _model_files(config.task)
    manifest = {
        "name": config.task,
        "version": "unreleased",
        "features": spec.to_json(),
        "models": {role: {"file": files[role], **export.tensor_quantization(tflite[role])} for role in files},
        "output": {"units": "probability", "meaning": OUTPUTS[config.task], "network": kind},
    }
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "bundle"
        bundle_writer.write_bundle(staged, manifest, {files[r]: tflite[r] for r in files})
        device_p = {role: device_predict(staged, role, x) for role in files}
        extra_p = {role: device_predict(staged, role, extra) for role in files} if extra is not None else {}
    parity = {"n": len(y), "positives": int(np.sum(y)), "keras_auroc": classification_metrics.auroc(y, keras_p)}
    for role in files:
        parity[f"{role}_auroc"] = classification_metrics.auroc(y, device_p[role])
        parity[f"{role}_vs_keras_max_abs"] = float(np.max(np.abs(device_p[role] - keras_p)))
        parity[f"{role}_vs_keras_auroc_diff"] = abs(parity[f"{role}_auroc"] - parity["keras_auroc"])
    return _Exported(tflite, manifest, keras_p, parity, extra_p)


PARITY_MAX_PROBABILITY = 0.02
PARITY_MAX_AUROC = 0.01


def _worst(parity: dict, role: str) -> tuple[float, float]:
    return (
        max(p[f"{role}_vs_keras_max_abs"] for p in parity.values()),
        max(float(np.nan_to_num(p[f"{role}_vs_keras_auroc_diff"])) for p in parity.values()),
    )


def device_role(parity: dict) -> dict:
    """Which model the device runs: int8 only if it matches Keras everywhere it was checked."""
    gaps = {role: _worst(parity, role) for role in ("int8", "float")}
    ok = {role: p <= PARITY_MAX_PROBABILITY and a <= PARITY_MAX_AUROC for role, (p, a) in gaps.items()}
    words = {
        role: f"{role} differs from Keras by up to {p:.4f} in probability and {a:.4f} in AUROC"
        for role, (p, a) in gaps.items()
    }
    limits = f"limits {PARITY_MAX_PROBABILITY} and {PARITY_MAX_AUROC}"
    if ok["int8"]:
        return {"device_role": "int8", "device_role_reason": f"{words['int8']}, within the {limits}"}
    if ok["float"]:
        return {"device_role": "float", "device_role_reason": f"{words['int8']}, beyond the {limits}; {words['float']}"}
    raise CompanionError(f"no TFLite model matches Keras: {words['int8']}; {words['float']} ({limits})")


def train_companion(
    mimic_dir: Path,
    out_dir: Path,
    config: CompanionTrainingConfig,
    device_predict: DevicePredict,
    progress: Progress = print,
) -> CompanionResult:
    """Cross-validate every candidate, compare imbalance handling, export the best network."""
    started = time.monotonic()
    data = read_mimic(Path(mimic_dir))
    notes = list(data.notes)
    progress(f"{data.layout}{' ' + data.version if data.version else ''}: {len(data.patients)} patients")
    cohort = _cohort(data, config, notes)
    if config.sample is not None and len(cohort.samples) > config.sample:
        cohort = sample_cohort(cohort, config.sample, config.seed)
        notes.append(f"trained on a random sample of {len(cohort.samples)} samples (--sample), not the whole cohort")
    patients = len(data.patients)
    groups = sample_groups(data, cohort.samples)
    source = {
        "source": data.layout,
        "version": data.version,
        "patients": patients,
        "fingerprint_sha256": _fingerprint(data, cohort),
    }
    del data  # every admission of the folder: only the cohort's histories are needed from here (GBs at full size)
    for note in notes:
        progress(f"note: {note}")
    negatives = len(cohort.samples) - cohort.positives
    if min(cohort.positives, negatives) < config.folds:
        raise CompanionError(
            f"{cohort.name} cohort has {cohort.positives} positive and {negatives} negative "
            f"samples; {config.folds}-fold cross-validation needs at least {config.folds} of each"
        )
    enc = _encode(cohort, cohort.samples, config)
    kept = coverage(cohort.samples, enc.spec)
    folds = _folds(cohort, enc, config)
    progress(
        f"cohort {cohort.name}: {len(enc.y)} samples, {int(enc.y.sum())} positive; "
        f"vocabulary {len(enc.spec.vocabulary)} codes; inputs {enc.spec.shapes}, {enc.x.nbytes / 2**20:.0f} MiB; "
        f"{kept['out_of_vocabulary_share']:.1%} of code occurrences outside the vocabulary, "
        f"{kept['visits_over_max_codes_share']:.1%} of visits over {config.max_codes} codes"
    )
    networks = (
        companion_networks.MORTALITY_NETWORKS if config.task == "mortality" else companion_networks.READMISSION_NETWORKS
    )
    out_of_fold, metrics = {}, {}
    imbalance_kinds = (config.imbalance_network[config.task], LOGISTIC)
    clock = StudyClock(config.folds * (len(networks) + 1 + len(imbalance_kinds) * (len(IMBALANCE_METHODS) - 1)))
    attention_folds: list = []
    for kind in (*networks, LOGISTIC):
        oof, seconds, params = _cross_validate(kind, folds, config, "class_weights", progress, clock, attention_folds)
        out_of_fold[kind] = oof
        metrics[kind] = {
            **classification_metrics.summary(enc.y, oof, config.bootstrap),
            "parameters": params,
            "train_seconds": seconds,
        }
    best = max(networks, key=lambda k: (np.nan_to_num(metrics[k]["auroc"], nan=-1.0), -metrics[k]["parameters"]))
    imbalance: dict[str, dict[str, dict]] = {}
    for kind in imbalance_kinds:
        imbalance[kind] = {"class_weights": {k: metrics[kind][k] for k in ("auroc", "auroc_ci95", "auprc")}}
        for method in IMBALANCE_METHODS[1:]:
            try:
                oof, _, _ = _cross_validate(kind, folds, config, method, progress, clock)
            except CompanionError as exc:
                imbalance[kind][method] = {"error": str(exc)}
                clock.planned -= config.folds
                continue
            summary = classification_metrics.summary(enc.y, oof, config.bootstrap)
            imbalance[kind][method] = {k: summary[k] for k in ("auroc", "auroc_ci95", "auprc")}
    attention = _attention(attention_folds, enc.x) if attention_folds else None
    threshold = classification_metrics.threshold_for_sensitivity(enc.y, out_of_fold[best], config.target_sensitivity)
    confusion = classification_metrics.confusion(enc.y, out_of_fold[best], threshold)
    by_group = fairness.fairness_table(
        enc.y, out_of_fold[best], threshold, groups, config.fairness_bootstrap, config.fairness_min_class
    )

    held_out = folds[0]
    progress(f"TFLite parity on held-out fold 1 ({len(held_out.test)} samples)")
    fold_model = companion_networks.fit(
        best,
        held_out.enc.x.take(held_out.train).inputs(),
        enc.y[held_out.train],
        class_weights(enc.y[held_out.train]),
        len(held_out.enc.spec.vocabulary),
        config.network,
        held_out.enc.visit_labels[held_out.train],
        held_out.enc.visit_weights[held_out.train],
        held_out.enc.code_vectors,
    )
    fold_export = _export(
        fold_model,
        best,
        held_out.enc.spec,
        held_out.enc.x.take(held_out.train),
        held_out.enc.x.take(held_out.test),
        enc.y[held_out.test],
        config,
        device_predict,
    )

    progress(f"refitting {MODEL_LABELS[best]} on all {len(enc.y)} samples and exporting to TFLite")
    final = companion_networks.fit(
        best,
        enc.x.inputs(),
        enc.y,
        class_weights(enc.y),
        len(enc.spec.vocabulary),
        config.network,
        enc.visit_labels,
        enc.visit_weights,
        enc.code_vectors,
    )
    golden_histories = _golden_histories(enc.spec, config.golden_pairs, config.seed)
    shipped = _export(
        final, best, enc.spec, enc.x, enc.x, enc.y, config, device_predict, enc.spec.encode_many(golden_histories)
    )
    manifest, tflite, files, keras_p = shipped.manifest, shipped.tflite, _model_files(config.task), shipped.keras
    golden_p = shipped.extra
    parity = {"held_out_fold": fold_export.parity, "whole_cohort": shipped.parity}
    manifest["output"].update(device_role(parity))
    progress(f"device runs the {manifest['output']['device_role']} model: {manifest['output']['device_role_reason']}")
    progress("feature importance (L1 coefficients; toggling features of the index visit)")
    logistic = _whole_cohort_logistic(enc, config)
    importance = {
        "logistic_l1": _logistic_importance(logistic, enc),
        best: _toggle_importance(final, best, enc, config),
    }
    progress(f"SHAP: L1 model (LinearExplainer), {MODEL_LABELS[best]} (KernelExplainer over code presence)")
    explanations = _explanations(logistic, final, best, enc, config)
    demo = patients < DEMO_PATIENT_LIMIT
    cohort_json = cohort.to_json()
    manifest.update(
        {
            "version": bundle_writer.new_version(),
            "created": bundle_writer.created_now(),
            "cohort": {
                "size": cohort_json["size"],
                "positives": cohort_json["positives"],
                "steps": cohort_json["steps"],
                "definition": cohort.name,
            },
            "golden": [
                {"history": history_to_json(h), "outputs": {r: float(golden_p[r][i]) for r in files}}
                for i, h in enumerate(golden_histories)
            ],
            "metrics": {
                "cross_validation": metrics,
                "folds": config.folds,
                "best": best,
                "imbalance": imbalance,
                "confusion_at_threshold": confusion,
                "fairness": [row.to_json() for row in by_group],
                **({"attention": attention.to_json()} if attention else {}),
                "shap": explanations.to_json(config.shap.top),
                "fairness_min_class": config.fairness_min_class,
                "parity": parity,
                "note": SMALL_DATA_NOTE if demo else "out-of-fold estimates",
            },
            "data": {
                **source,
                "notes": notes,
                "demo_trained": demo,
                "label": (
                    "demo-trained: MIMIC demo subset, for showing the pipeline only; not a validated risk model"
                    if demo
                    else "trained on the full data set named in 'source'"
                ),
            },
            "training": {
                "network": config.network.to_json(),
                "max_visits": config.max_visits,
                "max_codes": config.max_codes,
                "coverage": kept,
                "min_code_count": config.min_code_count,
                "max_vocabulary": config.max_vocabulary,
                "vocabulary_from": "distinct admissions of the cohort (per training fold in cross-validation)",
                "class_imbalance": "class weights",
                "code_embedding_init": "skip-gram vectors" if config.skipgram else "random",
                **({"mlflow_run_id": config.run_id} if config.run_id else {}),
            },
            "versions": bundle_writer.library_versions(),
        }
    )
    written = bundle_writer.write_bundle(Path(out_dir), manifest, {files[r]: tflite[r] for r in files})
    progress(f"bundle written to {out_dir}")
    return CompanionResult(
        config.task,
        Path(out_dir),
        written,
        cohort,
        enc.y,
        out_of_fold,
        metrics,
        imbalance,
        best,
        confusion,
        importance,
        attention,
        explanations,
        by_group,
        parity,
        notes,
        time.monotonic() - started,
        enc.x,
        keras_p,
    )
