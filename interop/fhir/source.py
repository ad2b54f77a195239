"""A FHIR file as a list of resources: a ``Bundle`` (JSON) or ndjson, one resource per line."""

from __future__ import annotations

import json
from pathlib import Path

MAX_BYTES = 512 * 1024 * 1024


class SourceError(Exception):
    """The file is not a Bundle or ndjson of resources; the message says where."""


def read_source(path: Path) -> list[dict]:
    """The resources of ``path``; a Bundle's entries in order, or ndjson's lines in order."""
    if path.stat().st_size > MAX_BYTES:
        raise SourceError(f"{path} is larger than {MAX_BYTES // (1024 * 1024)} MiB: split it")
    text = path.read_text(encoding="utf-8-sig")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        if whole.get("resourceType") != "Bundle":
            return [whole]
        entries = whole.get("entry", [])
        if not isinstance(entries, list):
            raise SourceError(f"{path}: Bundle.entry is not a list")
        return [e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    resources = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            resource = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{path}:{number}: not JSON ({exc.msg}); give a Bundle or ndjson") from None
        if not isinstance(resource, dict) or "resourceType" not in resource:
            raise SourceError(f"{path}:{number}: not a FHIR resource (no resourceType)")
        resources.append(resource)
    return resources
