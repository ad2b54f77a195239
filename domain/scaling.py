"""Input scaling shared by training and the device: standardise per feature, then clip.

Clipping keeps rare flags and heavy tails from stretching the single int8 input scale of the
quantised model; training sees exactly the clipped values the device feeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_CLIP = 4.0


@dataclass(frozen=True)
class Scaling:
    """Per-feature mean and std plus a symmetric clip, as recorded in the bundle manifest."""

    mean: np.ndarray
    std: np.ndarray
    clip: float = DEFAULT_CLIP

    @classmethod
    def fit(cls, windows: np.ndarray, present_index: int, clip: float = DEFAULT_CLIP) -> Scaling:
        """Fit on the present (non-padding) steps of training windows."""
        rows = windows[windows[..., present_index] > 0]
        mean = rows.mean(axis=0)
        std = rows.std(axis=0)
        std[std < 1e-6] = 1.0
        return cls(mean.astype(np.float32), std.astype(np.float32), float(clip))

    @classmethod
    def from_json(cls, data: dict, n_features: int) -> Scaling:
        mean = np.asarray(data.get("mean", []), dtype=np.float32)
        std = np.asarray(data.get("std", []), dtype=np.float32)
        clip = float(data.get("clip", DEFAULT_CLIP))
        if mean.shape != (n_features,) or std.shape != (n_features,):
            raise ValueError("scaling does not match the number of features")
        if not (np.all(np.isfinite(mean)) and np.all(std > 0) and clip > 0):
            raise ValueError("scaling parameters are not finite and positive")
        return cls(mean, std, clip)

    def to_json(self) -> dict:
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "clip": self.clip,
            "method": "standardise then clip",
        }

    def apply(self, windows: np.ndarray) -> np.ndarray:
        scaled = (np.asarray(windows, dtype=np.float32) - self.mean) / self.std
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)
