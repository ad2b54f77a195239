"""The bundle manifest: what training writes and the device, the C export and the tools read.

One typed schema for ``manifest.json`` (docs/contract.md, "Model bundle"): training validates
every manifest against it before writing (``model/bundle_writer.py``), and a device refuses a
bundle whose manifest does not fit it, naming the key. The parts only people read (the data's
provenance, the training settings, the metrics, the library versions, a companion's cohort) are
kept as tables; the parts a program acts on are typed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from device.contract import schema

FORMAT_VERSION = 1


class ManifestError(ValueError):
    """A manifest does not fit its schema; the message names the key."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file of the bundle, covered by the manifest's signature through its hash."""

    sha256: str
    bytes: int


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One input or output tensor of a ``.tflite`` model; ``scale`` 0 means not quantised."""

    dtype: str
    shape: list[int]
    scale: float
    zero_point: int


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A model role (``int8``, ``float``): its file and tensors (``inputs``: every input by name)."""

    file: str
    input: TensorInfo
    output: TensorInfo
    inputs: dict[str, TensorInfo] | None = None


@dataclass(frozen=True, slots=True)
class ModelOutput:
    """What the model's number means, and how the device turns it into one."""

    meaning: str
    units: str
    formula: str | None = None
    residual_of: str | None = None  # a dose model predicts the change from this feature
    device_role: Literal["int8", "float"] | None = None  # a companion's model the device runs
    device_role_reason: str | None = None
    network: str | None = None


@dataclass(frozen=True, slots=True)
class GoldenPair:
    """An input and the outputs training measured for it: the device's self-test."""

    outputs: dict[str, float]
    input: list[list[float]] | None = None  # a dose model's window
    history: list[dict[str, Any]] | None = None  # a companion model's visits
    patient: int | None = None
    ts: str | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """``manifest.json`` of a model bundle."""

    format: int
    name: str
    version: str
    files: dict[str, FileEntry]
    models: dict[str, ModelEntry]
    features: dict[str, Any]  # domain.features.FeatureSpec or domain.visits.VisitSpec reads it
    output: ModelOutput
    created: str = ""
    golden: list[GoldenPair] = field(default_factory=list)
    scaling: dict[str, Any] | None = None  # domain.scaling.Scaling reads it
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    cohort: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None  # domain.drift.Reference reads it (a dose model's)

    def __post_init__(self) -> None:
        if self.format != FORMAT_VERSION:
            raise ManifestError(f"manifest format {self.format!r} is not supported")
        for role, model in self.models.items():
            if model.file not in self.files:
                raise ManifestError(f"model {role!r} names a file the manifest does not list")

    @classmethod
    def from_mapping(cls, data: object) -> Manifest:
        """The manifest from parsed JSON; :class:`ManifestError` names the key that does not fit."""
        return schema.load(cls, data, what="key", error=ManifestError, root="manifest.json")


SCHEMAS = (Manifest, FileEntry, ModelEntry, TensorInfo, ModelOutput, GoldenPair)  # docs/contract.md
