"""Patient shards of a MIMIC read add up to the whole: the step past one machine.

Each shard is read through the same SQL with one more condition (its patients' rows), as a
worker of a distributed run would; the cohorts of all shards must equal the cohorts of the
whole folder, count for count and sample for sample, on the real demo, on the MIMIC-IV
fixture and on hostile tables.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from preprocessing.cohorts import merge_counts, mortality_cohort, readmission_cohort
from preprocessing.mimic import MimicError, Shard, read_mimic
from tools.cli.main import main
from tools.data.cohort_report import cohort_report, merge_reports

from .mimic_iv_fixture import build_mimic_iv
from .test_hostile_files import mimic_folder, write_tables

BUILDERS = {
    "mortality": mortality_cohort,
    "readmission": readmission_cohort,
    "readmission_all": lambda d: readmission_cohort(d, "all"),
}


def _samples(cohort) -> list[tuple]:
    return sorted(
        (s.subject_id, s.index_hadm, s.label, s.visit_labels, tuple((v.admit, v.discharge, v.codes) for v in s.visits))
        for s in cohort.samples
    )


def _assert_shards_add_up(folder: Path, count: int) -> None:
    whole = read_mimic(folder)
    parts = [read_mimic(folder, Shard(k, count)) for k in range(1, count + 1)]
    patients = [set(p.patients) for p in parts]
    assert sum(len(p) for p in patients) == len(whole.patients) and set().union(*patients) == set(whole.patients)
    for build in BUILDERS.values():
        cohort, pieces = build(whole), [build(p) for p in parts]
        assert merge_counts([p.to_json() for p in pieces]) == cohort.to_json()
        assert sorted(s for p in pieces for s in _samples(p)) == _samples(cohort)


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_demo_shards_give_the_whole_cohorts(mimic_dir, count):
    _assert_shards_add_up(mimic_dir, count)


def test_mimic_iv_shards_give_the_whole_cohorts(mimic_dir, tmp_path):
    _assert_shards_add_up(build_mimic_iv(mimic_dir, tmp_path / "mimic-iv-2.2"), 4)


def test_a_shard_holds_its_patients_only(mimic_dir):
    part = read_mimic(mimic_dir, Shard(2, 3))
    assert part.patients and all(sid % 3 == 1 for sid in part.patients)
    assert all(a.subject_id % 3 == 1 for rows in part.admissions.values() for a in rows)
    assert all(s.subject_id % 3 == 1 for s in part.icu_stays)
    assert all(a.codes for rows in part.admissions.values() for a in rows)  # codes joined by admission


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mimic_folder())
def test_hostile_tables_shards_add_up_to_the_whole(tables):
    """Unreadable and negative ids, rows without an admission: every row lands in one shard only."""
    with tempfile.TemporaryDirectory() as tmp:
        write_tables(Path(tmp), tables)
        try:
            whole = cohort_report(Path(tmp))
        except MimicError:
            with pytest.raises(MimicError):
                read_mimic(Path(tmp), Shard(1, 3))
            return
        merged = merge_reports([cohort_report(Path(tmp), Shard(k, 3)) for k in (1, 2, 3)])
        assert merged["cohorts"] == whole["cohorts"]
        expected, got = _skipped(whole["notes"]), _skipped(merged["notes"])
        if not _one_patient_per_admission(tables["ADMISSIONS.csv"][1]):
            # an admission id under two patients sits in both shards, and so do its code rows
            expected, got = ({t: n for t, n in c.items() if t in SMALL_TABLES} for c in (expected, got))
        assert got == expected


SMALL_TABLES = ("patients", "admissions", "icustays")


def _one_patient_per_admission(rows: list[dict]) -> bool:
    """No admission id (as SQL reads it) appears twice."""
    import duckdb

    ids = [duckdb.execute("SELECT TRY_CAST(? AS BIGINT)", [r["hadm_id"]]).fetchone()[0] for r in rows]
    readable = [i for i in ids if i is not None]
    return len(set(readable)) == len(readable)


def _skipped(notes: list[str]) -> dict[str, int]:
    """Rows left out per table, from the reader's notes (a shard's notes carry a 'shard K/N: ' prefix)."""
    counts: dict[str, int] = {}
    for note in notes:
        text = note.split(": ", 1)[1] if note.startswith("shard ") else note
        if "row(s) of" in text:
            n, _, rest = text.partition(" row(s) of ")
            table = rest.split(" left out")[0]
            counts[table] = counts.get(table, 0) + int(n)
    return counts


@pytest.mark.parametrize(
    "text, message",
    [("0/2", "from 1 to 2"), ("3/2", "from 1 to 2"), ("2", "expected K/N"), ("a/b", "expected K/N"), ("1/0", "1 to 0")],
)
def test_bad_shard_names_are_refused(text, message):
    with pytest.raises(MimicError, match=message):
        Shard.parse(text)


@pytest.mark.e2e
def test_cohorts_command_reads_every_shard_in_a_process_of_its_own(mimic_dir):
    runner = CliRunner()
    whole = json.loads(runner.invoke(main, ["data", "cohorts", "--mimic", str(mimic_dir), "--json"]).output)
    local = runner.invoke(
        main, ["data", "cohorts", "--mimic", str(mimic_dir), "--shards", "3", "--workers", "2", "--json"]
    )
    assert local.exit_code == 0, local.output
    merged = json.loads(local.output)
    assert merged["cohorts"] == whole["cohorts"]
    assert [s["shard"] for s in merged["shards"]] == ["1/3", "2/3", "3/3"]
    assert all(s["peak_rss_mb"] > 0 and s["seconds"] >= 0 for s in merged["shards"])
    text = runner.invoke(main, ["data", "cohorts", "--mimic", str(mimic_dir), "--shards", "2"])
    assert text.exit_code == 0 and "shard 2/2: " in text.output and "65 samples, 40 positive" in text.output


def test_cohorts_command_adds_up_parts_from_other_machines(mimic_dir, tmp_path):
    runner = CliRunner()
    whole = json.loads(runner.invoke(main, ["data", "cohorts", "--mimic", str(mimic_dir), "--json"]).output)
    files = []
    for k in (1, 2):  # as two machines would: one part each, then the parts added up
        result = runner.invoke(main, ["data", "cohorts", "--mimic", str(mimic_dir), "--shard", f"{k}/2", "--json"])
        assert result.exit_code == 0, result.output
        files.append(tmp_path / f"part-{k}.json")
        files[-1].write_text(result.output)
    added = runner.invoke(main, ["data", "merge-cohorts", *map(str, files), "--json"])
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["cohorts"] == whole["cohorts"]

    missing = runner.invoke(main, ["data", "merge-cohorts", str(files[0])])
    assert missing.exit_code == 1 and "must be shards 1/2 to 2/2, each once; got 1/2" in missing.output
    (tmp_path / "bad.json").write_text("{")
    bad = runner.invoke(main, ["data", "merge-cohorts", str(tmp_path / "bad.json")])
    assert bad.exit_code == 1 and "not a JSON cohort part" in bad.output
    both = runner.invoke(main, ["data", "cohorts", "--mimic", str(mimic_dir), "--shard", "1/2", "--shards", "2"])
    assert both.exit_code == 2 and "not both" in both.output
    wrong = runner.invoke(main, ["data", "cohorts", "--mimic", str(mimic_dir), "--shard", "5/2"])
    assert wrong.exit_code == 1 and "shard 5/2: the part must be from 1 to 2" in wrong.output
