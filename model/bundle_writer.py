"""Write an (unsigned) model bundle directory: model files and a manifest with their hashes.

The manifest is checked against the schema the device reads (``device.contract.manifest``)
before anything is written, so training and the device cannot drift apart; signing is a
separate step (``advisor bundle sign``, or ``--key`` on ``advisor train``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from datetime import UTC, datetime
from pathlib import Path

from device.contract.manifest import FORMAT_VERSION, Manifest

MANIFEST = "manifest.json"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that made the bundle."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("insulin-advisor", "tensorflow-cpu", "tensorflow", "keras", "numpy", "scikit-learn", "ai-edge-litert"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def new_version(now: datetime | None = None) -> str:
    """A sortable version string: ``YYYY.MM.DD.HHMMSS``."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y.%m.%d.%H%M%S")


def write_bundle(out_dir: Path, manifest: dict, files: dict[str, bytes]) -> Manifest:
    """Write files and manifest (with sha256 of each) into a fresh directory; return the manifest.

    A manifest that does not fit the device's schema raises ``ManifestError`` before anything is
    written. The directory is built beside the target and renamed into place, so a reader never sees
    a half-written bundle.
    """
    listed = {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} for name, data in files.items()}
    manifest = {**manifest, "format": FORMAT_VERSION, "files": listed}
    checked = Manifest.from_mapping(manifest)
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name, data in files.items():
        (staging / name).write_bytes(data)
    raw = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (staging / MANIFEST).write_bytes(raw)
    for item in staging.iterdir():
        with open(item, "rb") as handle:
            os.fsync(handle.fileno())
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return checked


def created_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
