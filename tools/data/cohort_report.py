"""``advisor data cohorts``: the companion cohorts' counts, of a whole MIMIC folder or of patient shards.

A shard (``--shard K/N``) is what one worker of a distributed run reads: its patients' rows
only, through the same SQL. ``--shards N`` runs every part here, each in a fresh process (its
memory is returned when it ends), and adds the parts up; parts written on other machines are
added up by :func:`merge_reports` (``advisor data merge-cohorts``). The sum equals the whole
folder's counts because every cohort step counts patients or their samples.
"""

from __future__ import annotations

import resource
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from preprocessing.cohorts import merge_counts, mortality_cohort, readmission_cohort
from preprocessing.mimic import MimicError, Shard, read_mimic


def cohort_report(folder: Path, shard: Shard | None = None) -> dict:
    """Layout, version, reader notes and the three cohorts' counts (or why one cannot be built)."""
    data = read_mimic(folder, shard)
    cohorts = []
    for build in (mortality_cohort, readmission_cohort, lambda d: readmission_cohort(d, "all")):
        try:
            cohorts.append(build(data).to_json())
        except MimicError as exc:
            cohorts.append({"error": str(exc)})
    report = {"layout": data.layout, "version": data.version, "notes": data.notes, "cohorts": cohorts}
    if shard is not None:
        report["shard"] = str(shard)
    return report


def _one_part(folder: str, shard: str) -> dict:
    """One shard in a worker process: its report, wall seconds and the process's peak memory."""
    started = time.monotonic()
    report = cohort_report(Path(folder), Shard.parse(shard))
    report["seconds"] = round(time.monotonic() - started, 1)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux
    return report


def run_shards(folder: Path, count: int, workers: int = 1) -> dict:
    """Every part of ``count`` read in its own fresh process, ``workers`` at a time, then added up."""
    if count < 1 or workers < 1:
        raise MimicError("--shards and --workers must be at least 1")
    context = get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, count), mp_context=context, max_tasks_per_child=1) as pool:
        parts = list(pool.map(_one_part, [str(folder)] * count, [f"{k}/{count}" for k in range(1, count + 1)]))
    return merge_reports(parts)


def merge_reports(parts: list[dict]) -> dict:
    """The whole folder's report from the reports of its shards: each part once, counts added up."""
    if not parts:
        raise MimicError("no cohort parts to merge")
    try:
        shards = [Shard.parse(str(p["shard"])) for p in parts]
        count = shards[0].count
        if sorted(s.number for s in shards) != list(range(1, count + 1)) or any(s.count != count for s in shards):
            named = ", ".join(str(s) for s in shards)
            raise MimicError(f"the parts must be shards 1/{count} to {count}/{count}, each once; got {named}")
        first = parts[0]
        for part in parts[1:]:
            if (part["layout"], part["version"]) != (first["layout"], first["version"]):
                raise MimicError(
                    f"parts of different data sets: {first['layout']} {first['version']} "
                    f"and {part['layout']} {part['version']}"
                )
        cohorts = []
        for i in range(len(first["cohorts"])):
            pieces = [p["cohorts"][i] for p in parts]
            errors = [c for c in pieces if "error" in c]
            cohorts.append(errors[0] if errors else merge_counts(pieces))
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise MimicError(f"not a cohort part written by 'advisor data cohorts --shard K/N --json' ({exc})") from None
    ordered = [part for _, part in sorted(zip((s.number for s in shards), parts, strict=True), key=lambda t: t[0])]
    return {
        "layout": first["layout"],
        "version": first["version"],
        "notes": [note for part in ordered for note in part["notes"]],
        "cohorts": cohorts,
        "shards": [{k: part[k] for k in ("shard", "seconds", "peak_rss_mb") if k in part} for part in ordered],
    }
