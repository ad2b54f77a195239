"""Visit histories → the fixed input tensor of the companion models (numpy only).

One implementation for training and the device. A history is a list of :class:`Visit`
(admission time, discharge time, a set of codes), oldest first, the visit being scored last.
It becomes a ``(max_visits, n_features)`` float32 array, left-padded with zero rows so the
newest visit is always the last row; older visits beyond ``max_visits`` are dropped.

Each row of a real visit holds, every value in [0, 1]:

* column 0 (the vocabulary's padding index) = 1: "a visit is here", so a visit whose codes
  are all unknown is still distinct from padding, and padded rows are exactly all-zero (the
  models mask them);
* column 1 (out-of-vocabulary) = 1 when any code is unknown, columns 2… one per known code
  (multi-hot; a dense layer over them is a learned code embedding pooled by sum);
* four timeline columns: length of stay (fraction of 30 days, capped), days since the
  previous discharge (fraction of 365, capped; 0 for the first visit), whether the visit
  began within 30 days of the previous discharge, whether it is the first visit seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from .vocabulary import PAD, Vocabulary

KIND = "visit_sequence"
TIMELINE_FEATURES = ("stay_days_of_30", "gap_days_of_365", "within_30d_of_previous", "first_visit")
DEFAULT_MAX_VISITS = 10


@dataclass(frozen=True, slots=True)
class Visit:
    """One admission: when it began and ended and its codes (``dx9:4280``, ``rx:heparin``…)."""

    admit: datetime
    discharge: datetime
    codes: frozenset[str]


def _days(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() / 86400.0


@dataclass(frozen=True)
class VisitSpec:
    """How histories are encoded: the code vocabulary and how many visits are kept."""

    vocabulary: Vocabulary
    max_visits: int = DEFAULT_MAX_VISITS

    @property
    def n_features(self) -> int:
        return len(self.vocabulary) + len(TIMELINE_FEATURES)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.max_visits, self.n_features)

    def feature_names(self) -> list[str]:
        """A readable name for every column (for feature-importance tables)."""
        return ["<visit>", "<unknown code>", *self.vocabulary.codes, *TIMELINE_FEATURES]

    def encode(self, visits: Sequence[Visit]) -> np.ndarray:
        """The ``(max_visits, n_features)`` input of one history (oldest first, scored visit last)."""
        out = np.zeros(self.shape, dtype=np.float32)
        kept = list(visits)[-self.max_visits :]
        offset = len(visits) - len(kept)
        timeline = len(self.vocabulary)
        for row, visit in enumerate(kept, start=self.max_visits - len(kept)):
            out[row, PAD] = 1.0
            out[row, self.vocabulary.encode(visit.codes)] = 1.0
            stay = max(0.0, _days(visit.discharge, visit.admit))
            out[row, timeline] = min(stay / 30.0, 1.0)
            position = offset + row - (self.max_visits - len(kept))
            if position == 0:
                out[row, timeline + 3] = 1.0
                continue
            gap = max(0.0, _days(visit.admit, visits[position - 1].discharge))
            out[row, timeline + 1] = min(gap / 365.0, 1.0)
            out[row, timeline + 2] = float(gap <= 30.0)
        return out

    def encode_many(self, histories: Sequence[Sequence[Visit]]) -> np.ndarray:
        return np.stack([self.encode(h) for h in histories]) if histories else np.zeros((0, *self.shape), np.float32)

    def to_json(self) -> dict:
        return {
            "kind": KIND,
            "max_visits": self.max_visits,
            "timeline": list(TIMELINE_FEATURES),
            "vocabulary": self.vocabulary.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict) -> VisitSpec:
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise ValueError(f"feature spec is not a {KIND}")
        if list(data.get("timeline", [])) != list(TIMELINE_FEATURES):
            raise ValueError("timeline features in the manifest do not match this software's")
        max_visits = data.get("max_visits")
        if not isinstance(max_visits, int) or isinstance(max_visits, bool) or not 1 <= max_visits <= 256:
            raise ValueError("max_visits must be an integer from 1 to 256")
        return cls(Vocabulary.from_json(data.get("vocabulary", {})), max_visits)
