"""Writing a transaction Bundle to a file one patient at a time, so memory holds one patient's record.

The file is written aside and renamed into place: a reader never sees half a Bundle.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from interop.fhir.resources import entry


def write_transaction(path: Path, batches: Iterable[list[dict]], exported_at: datetime | None = None) -> Counter[str]:
    """Write every batch of resources into one transaction Bundle at ``path``; the count by resource type."""
    stamp = (exported_at or datetime.now(UTC)).isoformat()
    counts: Counter[str] = Counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8") as out:
            out.write(json.dumps({"resourceType": "Bundle", "type": "transaction", "timestamp": stamp})[:-1])
            first = True
            for batch in batches:
                for resource in batch:
                    out.write((', "entry": [' if first else ",\n") + json.dumps(entry(resource)))
                    first = False
                    counts[resource["resourceType"]] += 1
            out.write("}\n" if first else "]}\n")  # FHIR JSON has no empty arrays: no entry at all
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return counts
