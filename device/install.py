"""Installing a flashed bundle: checks, then an atomic write that survives a kill or power cut.

The installed bundle is one file, ``<state>/bundles/<name>.tar.gz``. A new one is written
beside it, flushed to disk, then renamed over it and the folder is synced: at every instant
the path holds either the old complete bundle or the new complete one.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from . import signing
from .bundle import BundleError, open_archive_bytes, version_key
from .inference import DoseModel

FAULT_ENV = "ADVISOR_FAULT_POINT"  # test hook: kill this process at a named install step


def installed_path(state_dir: Path, name: str = "dose") -> Path:
    return state_dir / "bundles" / f"{name}.tar.gz"


def _fault(point: str) -> None:
    """Let tests kill the process (SIGKILL, like a power cut) at one step of the install."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def check_archive(
    archive: bytes, keys: list[signing.PublicKey], current_version: str | None, allow_downgrade: bool, origin: str
) -> DoseModel:
    """Verify a received dose bundle end to end; returns the ready model or raises BundleError."""
    bundle = open_archive_bytes(archive, origin, keys)
    if bundle.name != "dose":
        raise BundleError(f"the bundle is a {bundle.name!r} model; this device runs 'dose'")
    if (
        current_version is not None
        and not allow_downgrade
        and version_key(bundle.version) < version_key(current_version)
    ):
        raise BundleError(
            f"version {bundle.version} is older than the running {current_version} "
            "(the device allows downgrades only with --allow-downgrade)"
        )
    model = DoseModel(bundle)
    model.self_test()
    return model


def install_archive(state_dir: Path, archive: bytes, name: str = "dose") -> Path:
    """Write the archive as the installed bundle, atomically and durably."""
    target = installed_path(state_dir, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming = target.with_name(f".{name}.incoming")
    _fault("before-write")
    with open(incoming, "wb") as handle:
        handle.write(archive[: len(archive) // 2])
        _fault("mid-write")
        handle.write(archive[len(archive) // 2 :])
        handle.flush()
        os.fsync(handle.fileno())
    _fault("before-rename")
    os.replace(incoming, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    _fault("after-rename")
    return target
