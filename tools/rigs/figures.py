"""Small figures the measuring commands report: percentiles, process memory, the machine.

Standard library only: ``advisor bench`` also imports this inside the tflite-runtime 2.14
environment, which has no MQTT client.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of a non-empty list."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def process_memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of a running process from ``/proc``: ``VmRSS`` (now) or ``VmHWM`` (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def machine_description() -> str:
    return f"{os.uname().machine}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
