"""Visit histories → the input tensors of the companion models (numpy only).

One implementation for training and the device. A history is a list of :class:`Visit`
(admission time, discharge time, a set of codes), oldest first, the visit being scored last.
It becomes two arrays, left-padded so the newest visit is always the last row; older visits
beyond ``max_visits`` are dropped:

* ``codes`` — ``(max_visits, max_codes)`` int32: each visit's distinct vocabulary indices,
  padded with 0 (the vocabulary's padding index); a code outside the vocabulary is the
  out-of-vocabulary index 1, once. The network looks each index up in a learned embedding
  and sums a visit's vectors — the sparse form of a multi-hot row times a weight matrix, at
  a cost that grows with the codes a visit has, not with the vocabulary. A visit with more
  than ``max_codes`` known codes keeps the first ones in vocabulary order: diagnoses, then
  procedures, then prescriptions (the vocabulary is sorted by code, and ``dx`` < ``px`` < ``rx``).
* ``timeline`` — ``(max_visits, 5)`` float32 in [0, 1]: "a visit is here" (so padding rows
  are exactly zero and the models mask them), length of stay (fraction of 30 days, capped),
  days since the previous discharge (fraction of 365, capped; 0 for the first visit),
  whether the visit began within 30 days of the previous discharge, and whether it is the
  first visit seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from domain.vocabulary import Vocabulary

KIND = "visit_codes"
DENSE_KIND = "visit_sequence"  # the multi-hot input of bundles before issue 16
TIMELINE_FEATURES = ("present", "stay_days_of_30", "gap_days_of_365", "within_30d_of_previous", "first_visit")
DEFAULT_MAX_VISITS = 10
DEFAULT_MAX_CODES = 64
INPUT_NAMES = ("codes", "timeline")


@dataclass(frozen=True, slots=True)
class Visit:
    """One admission: when it began and ended and its codes (``dx9:4280``, ``rx:heparin``…)."""

    admit: datetime
    discharge: datetime
    codes: frozenset[str]


@dataclass(frozen=True, slots=True)
class EncodedHistories:
    """Encoded histories: ``codes`` ``(n, max_visits, max_codes)`` int32, ``timeline`` ``(n, max_visits, 5)``."""

    codes: np.ndarray
    timeline: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)

    def take(self, rows: np.ndarray) -> EncodedHistories:
        return EncodedHistories(self.codes[rows], self.timeline[rows])

    def inputs(self) -> dict[str, np.ndarray]:
        """The model's inputs by name."""
        return {"codes": self.codes, "timeline": self.timeline}

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.timeline.nbytes)


def _days(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() / 86400.0


@dataclass(frozen=True)
class VisitSpec:
    """How histories are encoded: the code vocabulary, how many visits and codes per visit are kept."""

    vocabulary: Vocabulary
    max_visits: int = DEFAULT_MAX_VISITS
    max_codes: int = DEFAULT_MAX_CODES

    @property
    def shapes(self) -> dict[str, tuple[int, int]]:
        """Each input's shape for one history."""
        return {"codes": (self.max_visits, self.max_codes), "timeline": (self.max_visits, len(TIMELINE_FEATURES))}

    def visit_codes(self, visit: Visit) -> list[int]:
        """A visit's vocabulary indices as kept in the input (at most ``max_codes``)."""
        return self.vocabulary.encode(visit.codes)[: self.max_codes]

    def encode(self, visits: Sequence[Visit]) -> EncodedHistories:
        """One history as a batch of one."""
        return self.encode_many([visits])

    def encode_many(self, histories: Sequence[Sequence[Visit]]) -> EncodedHistories:
        """Every history; a visit shared by several histories is encoded once."""
        codes = np.zeros((len(histories), self.max_visits, self.max_codes), dtype=np.int32)
        timeline = np.zeros((len(histories), self.max_visits, len(TIMELINE_FEATURES)), dtype=np.float32)
        cache: dict[int, list[int]] = {}
        for n, visits in enumerate(histories):
            kept = list(visits)[-self.max_visits :]
            offset = len(visits) - len(kept)
            first_row = self.max_visits - len(kept)
            for row, visit in enumerate(kept, start=first_row):
                indices = cache.get(id(visit))
                if indices is None:
                    indices = cache[id(visit)] = self.visit_codes(visit)
                codes[n, row, : len(indices)] = indices
                position = offset + row - first_row
                gap = None if position == 0 else max(0.0, _days(visit.admit, visits[position - 1].discharge))
                timeline[n, row] = (
                    1.0,
                    min(max(0.0, _days(visit.discharge, visit.admit)) / 30.0, 1.0),
                    0.0 if gap is None else min(gap / 365.0, 1.0),
                    0.0 if gap is None else float(gap <= 30.0),
                    float(gap is None),
                )
        return EncodedHistories(codes, timeline)

    def to_json(self) -> dict:
        return {
            "kind": KIND,
            "max_visits": self.max_visits,
            "max_codes": self.max_codes,
            "inputs": list(INPUT_NAMES),
            "timeline": list(TIMELINE_FEATURES),
            "vocabulary": self.vocabulary.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict) -> VisitSpec:
        if isinstance(data, dict) and data.get("kind") == DENSE_KIND:
            raise ValueError("an older companion bundle with a dense (multi-hot) visit input: retrain it")
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise ValueError(f"feature spec is not a {KIND}")
        if list(data.get("timeline", [])) != list(TIMELINE_FEATURES):
            raise ValueError("timeline features in the manifest do not match this software's")
        sizes = {}
        for key, limit in (("max_visits", 256), ("max_codes", 4096)):
            value = data.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
                raise ValueError(f"{key} must be an integer from 1 to {limit}")
            sizes[key] = value
        return cls(Vocabulary.from_json(data.get("vocabulary", {})), sizes["max_visits"], sizes["max_codes"])
