"""Skip-gram code vectors (negative sampling) from codes that share a visit, in plain numpy.

Optional initialisation of the companion models' code embedding, as in the mortality
notebook: codes recorded in the same admission are each other's context. Label-free; in
cross-validation the vectors come from the training fold's admissions only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from domain.vocabulary import Vocabulary


@dataclass(frozen=True)
class SkipGramConfig:
    dim: int = 32
    epochs: int = 20
    negatives: int = 5
    learning_rate: float = 0.1
    pairs_per_visit: int = 400
    batch_size: int = 64
    seed: int = 0


def _pairs(visits: Iterable[Iterable[str]], vocabulary: Vocabulary, limit: int, rng: np.random.Generator) -> np.ndarray:
    """(centre, context) index pairs of known codes sharing a visit, at most ``limit`` per visit."""
    chunks = []
    for visit in visits:
        codes = np.array([i for i in vocabulary.encode(visit) if i >= 2], dtype=np.int64)
        if len(codes) < 2:
            continue
        centre, context = np.meshgrid(codes, codes, indexing="ij")
        keep = centre != context
        pairs = np.stack([centre[keep], context[keep]], axis=1)
        if len(pairs) > limit:
            pairs = pairs[rng.choice(len(pairs), limit, replace=False)]
        chunks.append(pairs)
    return np.concatenate(chunks) if chunks else np.zeros((0, 2), dtype=np.int64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def _apply(weights: np.ndarray, rows: np.ndarray, updates: np.ndarray) -> None:
    """Add each row's updates averaged over its occurrences in the batch (summing them diverges)."""
    total = np.zeros_like(weights)
    np.add.at(total, rows, updates)
    seen = np.bincount(rows, minlength=len(weights))
    weights += total / np.maximum(seen, 1)[:, None]


def train_vectors(
    visits: list[frozenset[str]], vocabulary: Vocabulary, config: SkipGramConfig = SkipGramConfig()
) -> np.ndarray:
    """A ``(len(vocabulary), dim)`` matrix; rows 0 (padding) and 1 (unknown) stay zero."""
    rng = np.random.default_rng(config.seed)
    size = len(vocabulary)
    centre_w = (rng.random((size, config.dim)) - 0.5) / config.dim
    context_w = np.zeros((size, config.dim))
    pairs = _pairs(visits, vocabulary, config.pairs_per_visit, rng)
    if len(pairs) == 0:
        centre_w[:2] = 0.0
        return centre_w.astype(np.float32)
    counts = np.bincount(pairs[:, 1], minlength=size).astype(float) ** 0.75
    noise = counts / counts.sum()
    for _ in range(config.epochs):
        order = rng.permutation(len(pairs))
        for start in range(0, len(order), config.batch_size):
            batch = pairs[order[start : start + config.batch_size]]
            c, o = batch[:, 0], batch[:, 1]
            negatives = rng.choice(size, (len(batch), config.negatives), p=noise)
            targets = np.concatenate([o[:, None], negatives], axis=1)  # first column positive
            labels = np.zeros(targets.shape)
            labels[:, 0] = 1.0
            v = centre_w[c]  # (b, d)
            u = context_w[targets]  # (b, k+1, d)
            g = (labels - _sigmoid(np.einsum("bd,bkd->bk", v, u))) * config.learning_rate
            _apply(centre_w, c, np.einsum("bk,bkd->bd", g, u))
            _apply(context_w, targets.reshape(-1), (g[..., None] * v[:, None, :]).reshape(-1, config.dim))
    centre_w[:2] = 0.0
    return centre_w.astype(np.float32)
