"""Run ``advisor`` with a ``kill -9`` at one step of a bundle install: a power cut, for tests.

``python -m tests.faulty_device POINT device run …``. POINT is ``before-write``, ``mid-write``
(half the archive written), ``before-rename`` or ``after-rename`` (after the folder is synced).
The device's own code has no test hook: this launcher replaces, in ``device.models.install`` only, the
``open`` and ``os`` it writes through.
"""

from __future__ import annotations

import os
import signal
import sys
import types
from typing import Any

import device.models.install as install
from tools.cli.main import main

POINTS = ("before-write", "mid-write", "before-rename", "after-rename")


def _power_cut() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _HalfWritten:
    """A file that writes half of what it is given, syncs it, then loses power."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __enter__(self) -> _HalfWritten:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def write(self, data: bytes) -> int:
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        os.fsync(self._handle.fileno())
        _power_cut()
        return 0


def arm(point: str) -> None:
    """Make the next install in this process stop dead at ``point``."""
    if point not in POINTS:
        raise SystemExit(f"unknown fault point {point!r}; one of {', '.join(POINTS)}")

    def faulty_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        incoming = str(path).endswith(".incoming") and "w" in mode
        if incoming and point == "before-write":
            _power_cut()
        handle = open(path, mode, *args, **kwargs)  # noqa: SIM115 (handed to the caller)
        return _HalfWritten(handle) if incoming and point == "mid-write" else handle

    def faulty_replace(src: Any, dst: Any) -> None:
        if point == "before-rename":
            _power_cut()
        os.replace(src, dst)

    def faulty_close(fd: int) -> None:  # the folder's descriptor, closed after its sync
        os.close(fd)
        if point == "after-rename":
            _power_cut()

    proxy = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
    proxy.replace, proxy.close = faulty_replace, faulty_close
    install.os = proxy  # type: ignore[assignment]
    install.open = faulty_open  # type: ignore[attr-defined]


if __name__ == "__main__":
    arm(sys.argv[1])
    main(sys.argv[2:], prog_name="advisor")
