"""Choosing and loading the dose bundle at start: configured, installed, or the packaged default.

A configured bundle that fails verification or its self-test is not used; the device falls
back to the packaged default and says so, and with no usable bundle at all it still runs and
answers every decision with ``insufficient_data``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from device.config import DeviceConfig
from device.contract.messages import ModelInfo
from device.models import signing
from device.models.bundle import BundleError, default_bundle_path, open_bundle, trusted_keys
from device.models.inference import DoseModel
from device.models.install import installed_path


@dataclass(frozen=True, slots=True)
class ModelSlot:
    """The dose model in use, or why there is none."""

    model: DoseModel | None
    problem: str | None = None

    @property
    def info(self) -> ModelInfo:
        if self.model is None:
            return ModelInfo("dose", None, None)
        bundle = self.model.bundle
        return ModelInfo(bundle.name, bundle.version, bundle.manifest_sha256)


def _load(path: Path, keys: list[signing.PublicKey]) -> DoseModel:
    bundle = open_bundle(path, keys)
    if bundle.name != "dose":
        raise BundleError(f"bundle {path} is a {bundle.name!r} model, not a dose model")
    model = DoseModel(bundle)
    model.self_test()
    return model


def load_dose_model(config: DeviceConfig) -> tuple[ModelSlot, list[str]]:
    """The model slot to run with, and plain-words notes about what was chosen and why."""
    notes: list[str] = []
    keys = trusted_keys(config.trust)
    candidates: list[Path] = []
    if config.bundle is not None:
        candidates.append(config.bundle)
    elif installed_path(config.state_dir).exists():
        candidates.append(installed_path(config.state_dir))
    candidates.append(default_bundle_path("dose"))
    problem = "no bundle found"
    for path in candidates:
        try:
            model = _load(path, keys)
        except (BundleError, OSError) as exc:
            problem = str(exc)
            notes.append(f"bundle {path} was not used: {problem}")
            continue
        if notes:
            notes.append(f"running bundle {path} (version {model.bundle.version}) instead")
        return ModelSlot(model), notes
    return ModelSlot(None, problem), notes


def load_shadow_model(config: DeviceConfig) -> tuple[ModelSlot | None, list[str]]:
    """The candidate bundle of shadow mode (``shadow_bundle``), with a note; None when not configured
    or unusable (the note says why: the device runs on without it)."""
    if config.shadow_bundle is None:
        return None, []
    try:
        model = _load(config.shadow_bundle, trusted_keys(config.trust))
    except (BundleError, OSError) as exc:
        return None, [f"shadow bundle {config.shadow_bundle} was not used: {exc}"]
    return ModelSlot(model), [f"shadow mode: bundle {model.bundle.version} answers beside the live one, never shown"]
