"""Installing a flashed bundle: checks, then an atomic write that survives a kill or power cut.

The installed bundle is one file, ``<state>/bundles/<name>.tar.gz``. A new one is written
beside it, flushed to disk, then renamed over it and the folder is synced: at every instant
the path holds either the old complete bundle or the new complete one.
"""

from __future__ import annotations

import os
from pathlib import Path

from device.models import signing
from device.models.bundle import BundleError, open_archive_bytes, version_key
from device.models.inference import DoseModel


def installed_path(state_dir: Path, name: str = "dose") -> Path:
    return state_dir / "bundles" / f"{name}.tar.gz"


def previous_path(state_dir: Path, name: str = "dose") -> Path:
    """Where the manifest sha256 of the bundle that ran before the installed one is kept."""
    return state_dir / "bundles" / f"{name}.previous-sha256"


def previous_bundle(state_dir: Path, name: str = "dose") -> str | None:
    """The manifest sha256 of the bundle the device ran before its installed one (a rollback target)."""
    try:
        return previous_path(state_dir, name).read_text().strip() or None
    except OSError:
        return None


def check_archive(
    archive: bytes,
    keys: list[signing.PublicKey],
    current_version: str | None,
    allow_downgrade: bool,
    origin: str,
    rollback_to: str | None = None,
) -> DoseModel:
    """Verify a received dose bundle end to end; returns the ready model or raises BundleError.

    An older version is refused unless downgrades are allowed or it is ``rollback_to`` (the manifest
    sha256 of the bundle that ran before the current one): going back to it is a rollback.
    """
    bundle = open_archive_bytes(archive, origin, keys)
    if bundle.name != "dose":
        raise BundleError(f"the bundle is a {bundle.name!r} model; this device runs 'dose'")
    if (
        current_version is not None
        and not allow_downgrade
        and bundle.manifest_sha256 != rollback_to
        and version_key(bundle.version) < version_key(current_version)
    ):
        raise BundleError(
            f"version {bundle.version} is older than the running {current_version} "
            "(the device allows downgrades only with --allow-downgrade)"
        )
    model = DoseModel(bundle)
    model.self_test()
    return model


def install_archive(state_dir: Path, archive: bytes, name: str = "dose", replacing: str | None = None) -> Path:
    """Write the archive as the installed bundle, atomically and durably; ``replacing``: the manifest
    sha256 of the bundle running until now, kept as the rollback target."""
    target = installed_path(state_dir, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    if replacing is not None:
        _write_durably(previous_path(state_dir, name), replacing.encode())
    incoming = target.with_name(f".{name}.incoming")
    with open(incoming, "wb") as handle:
        handle.write(archive)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(incoming, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return target


def _write_durably(path: Path, data: bytes) -> None:
    incoming = path.with_name(path.name + ".incoming")
    with open(incoming, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(incoming, path)
