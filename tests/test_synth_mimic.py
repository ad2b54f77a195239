"""The synthetic MIMIC-IV generator and the streaming reader at a small scale (the CI scale test).

Full scale is a benchmark command (README, "Companion models at MIMIC-IV scale"), not a test.
"""

from __future__ import annotations

import gzip

import pytest
from click.testing import CliRunner

from preprocessing.cohorts import mortality_cohort, readmission_cohort
from preprocessing.mimic import read_mimic
from tools.cli.main import main
from tools.data.synth_mimic import COLUMNS, RELEASES, generate

SCALE = 0.003


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")  # the version comes from version.txt
    return out, generate(out, SCALE, "3.1", seed=7)


def test_every_table_has_the_real_columns_and_about_the_release_s_rows(synthetic):
    out, counts = synthetic
    for table, columns in COLUMNS.items():
        path = out / ("icu" if table == "icustays" else "hosp") / f"{table}.csv.gz"
        with gzip.open(path, "rt") as handle:
            assert handle.readline().strip().split(",") == list(columns)
        expected = RELEASES["3.1"][table] * SCALE
        assert 0.75 * expected <= counts.rows[table] <= 1.25 * expected, (table, counts.rows[table], expected)
    assert (out / "version.txt").read_text().strip() == "3.1"


def test_the_reader_sees_every_row_and_the_cohorts_have_both_outcomes(synthetic):
    out, counts = synthetic
    data = read_mimic(out)
    assert data.version == "3.1" and data.out_of_hospital_deaths and data.notes == []
    assert len(data.patients) == counts.rows["patients"]
    assert sum(len(rows) for rows in data.admissions.values()) == counts.rows["admissions"]
    assert len(data.icu_stays) == counts.rows["icustays"]
    codes = {code for rows in data.admissions.values() for a in rows for code in a.codes}
    assert {c.split(":")[0] for c in codes} == {"dx9", "dx10", "px9", "px10", "rx"}
    assert len(codes) > 5000  # a realistic vocabulary, not a handful of codes
    years = {a.admit.year for rows in data.admissions.values() for a in rows}
    assert min(years) >= 2110 and max(years) <= 2215  # MIMIC's shifted dates
    mortality, readmission = mortality_cohort(data), readmission_cohort(data)
    assert 0 < mortality.positives < len(mortality.samples)
    assert 0 < readmission.positives < len(readmission.samples)
    # every code string is held once, shared by the admissions that have it
    first = {}
    for rows in data.admissions.values():
        for admission in rows:
            for code in admission.codes:
                assert first.setdefault(code, code) is code


def test_the_same_seed_writes_the_same_folder(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, 0.0005, "2.2", seed=3)
    generate(b, 0.0005, "2.2", seed=3)
    for path in a.rglob("*.csv.gz"):
        assert gzip.decompress(path.read_bytes()) == gzip.decompress((b / path.relative_to(a)).read_bytes())


def test_the_command_refuses_a_folder_in_use_and_a_bad_scale(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep").write_text("")
    used = CliRunner().invoke(main, ["data", "synth-mimic", "--out", str(tmp_path / "x")])
    assert used.exit_code == 2 and "is not empty" in used.output
    zero = CliRunner().invoke(main, ["data", "synth-mimic", "--out", str(tmp_path / "y"), "--scale", "0"])
    assert zero.exit_code == 2 and "--scale" in zero.output
    made = CliRunner().invoke(main, ["data", "synth-mimic", "--out", str(tmp_path / "z"), "--scale", "0.0005"])
    assert made.exit_code == 0 and "prescriptions" in made.output
