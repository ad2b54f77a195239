"""Code vocabulary for visit sequences: frequent codes get an index, rare and unseen ones share OOV.

Index 0 is padding and 1 is out-of-vocabulary; the mapping is stored in the bundle so the
device encodes visits exactly as training did.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

PAD, OOV = 0, 1


def count_codes(visits: Iterable[Iterable[str]]) -> Counter[str]:
    """How many visits hold each code."""
    return Counter(code for visit in visits for code in visit)


@dataclass(frozen=True)
class Vocabulary:
    codes: tuple[str, ...]  # index 2 onwards
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    @classmethod
    def build(cls, visits: Iterable[Iterable[str]], min_count: int = 2, max_size: int | None = None) -> Vocabulary:
        """From training visits; codes seen in fewer than ``min_count`` visits map to OOV.

        With ``max_size`` only the most frequent codes are kept (ties broken by name).
        """
        return cls.from_counts(count_codes(visits), min_count, max_size)

    @classmethod
    def from_counts(cls, counts: Counter[str], min_count: int = 2, max_size: int | None = None) -> Vocabulary:
        """From visits counted per code: the counts of patient shards add up to those of the whole."""
        kept = sorted((code for code, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
        return cls(tuple(sorted(kept[:max_size] if max_size is not None else kept)))

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {code: i + 2 for i, code in enumerate(self.codes)})

    def __len__(self) -> int:
        return len(self.codes) + 2

    def encode(self, visit: Iterable[str]) -> list[int]:
        """Sorted distinct indices of a visit's codes (OOV once if any code is unknown)."""
        return sorted({self._index.get(code, OOV) for code in visit})

    def to_json(self) -> dict:
        return {"pad": PAD, "oov": OOV, "codes": list(self.codes)}

    @classmethod
    def from_json(cls, data: dict) -> Vocabulary:
        if data.get("pad") != PAD or data.get("oov") != OOV or not isinstance(data.get("codes"), list):
            raise ValueError("vocabulary must hold pad 0, oov 1 and a list of codes")
        return cls(tuple(str(c) for c in data["codes"]))
