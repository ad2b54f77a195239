"""Write an (unsigned) model bundle directory: model files and a manifest with their hashes.

The format is read and verified by ``device.models.bundle``; signing is a separate step
(``advisor bundle sign``, or ``--key`` on ``advisor train``). A test opens what this writes
with the device's reader, so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from datetime import UTC, datetime
from pathlib import Path

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


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


def write_bundle(out_dir: Path, manifest: dict, files: dict[str, bytes]) -> dict:
    """Write files and manifest (with sha256 of each) into a fresh directory; return the manifest.

    The directory is built beside the target and renamed into place, so a reader never sees
    a half-written bundle.
    """
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    listed = {}
    for name, data in files.items():
        (staging / name).write_bytes(data)
        listed[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest = dict(manifest)
    manifest["format"] = FORMAT_VERSION
    manifest["files"] = listed
    raw = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (staging / MANIFEST).write_bytes(raw)
    for item in staging.iterdir():
        with open(item, "rb") as handle:
            os.fsync(handle.fileno())
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return manifest


def created_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
