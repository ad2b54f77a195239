"""MIMIC readers and cohorts on the real MIMIC-III demo, and on a MIMIC-IV-shaped copy of it.

The MIMIC-IV fixture is built here from the demo tables (lower-case ``hosp/`` and ``icu/``
``.csv.gz`` files, ``anchor_age``/``anchor_year`` instead of ``dob``, ``icd_code`` with
``icd_version``); both layouts must give the same cohorts.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.vocabulary import OOV, Vocabulary
from preprocessing.cohorts import is_heart_failure, mortality_cohort, readmission_cohort, readmission_labels
from preprocessing.mimic import MimicError, read_mimic

from .mimic_iv_fixture import build_mimic_iv


@pytest.fixture(scope="module")
def demo(mimic_dir):
    return read_mimic(mimic_dir)


@pytest.fixture(scope="module")
def mimic_iv(mimic_dir, tmp_path_factory):
    return build_mimic_iv(mimic_dir, tmp_path_factory.mktemp("mimic-iv") / "mimic-iv-2.2")


def test_demo_tables_and_the_missing_admission(demo):
    assert demo.layout == "MIMIC-III" and len(demo.patients) == 100
    assert sum(len(rows) for rows in demo.admissions.values()) == 128  # 129 official rows, one missing here
    assert len(demo.icu_stays) == 136
    assert demo.notes == ["1 ICU stay(s) without an admission row, left out: subject 10043 hadm 168674"]
    visit = demo.admissions[10006][0]
    assert visit.primary_dx == "dx9:99591" and any(c.startswith("rx:") for c in visit.codes)
    assert any(c.startswith("px9:") for rows in demo.admissions.values() for a in rows for c in a.codes)


def test_mortality_cohort_counts_and_labels(demo):
    cohort = mortality_cohort(demo)
    counts = [s["count"] for s in cohort.steps]
    assert counts == sorted(counts[:-1], reverse=True) + [counts[-1]]  # every step narrows
    assert cohort.steps[0] == {"step": "patients", "count": 100}
    assert cohort.to_json()["size"] == len(cohort.samples) == cohort.steps[-2]["count"]
    for sample in cohort.samples:
        stays = sorted(
            (s for s in demo.icu_stays if s.subject_id == sample.subject_id and demo.admission(s.hadm_id)),
            key=lambda s: s.intime,
        )
        index = demo.admission(stays[0].hadm_id)
        assert sample.index_hadm == index.hadm_id and not index.died_in_hospital
        assert demo.patients[sample.subject_id].age_at(index.admit) >= 18
        dod = demo.patients[sample.subject_id].dod
        expected = int(dod is not None and timedelta(0) < dod - stays[0].outtime <= timedelta(days=365))
        assert sample.label == expected
        # the leak fix: the input stops at the index admission
        assert sample.visits[-1].codes == index.codes and sample.visits[-1].admit == index.admit
        assert len(sample.visits) == sum(1 for a in demo.admissions[sample.subject_id] if a.admit <= index.admit)


def test_readmission_cohorts(demo):
    hf = readmission_cohort(demo, "hf")
    for sample in hf.samples:
        rows = demo.admissions[sample.subject_id]
        last_hf = max(i for i, a in enumerate(rows) if is_heart_failure(a))
        assert rows[last_hf].hadm_id == sample.index_hadm and len(sample.visits) == last_hf + 1
        assert sample.label == readmission_labels(rows)[last_hf]
    assert 0 < len(hf.samples) < 20  # few heart-failure stays in the demo
    every = readmission_cohort(demo, "all")
    assert len(every.samples) == 128 and 0 < every.positives < 128
    with pytest.raises(ValueError):
        readmission_cohort(demo, "some")


def test_readmission_label_rule(demo):
    rows = next(r for r in demo.admissions.values() if len(r) >= 3)
    labels = readmission_labels(rows)
    assert labels[-1] == 0 and len(labels) == len(rows)
    for cur, nxt, label in zip(rows, rows[1:], labels, strict=False):
        assert label == int(nxt.admit - cur.discharge <= timedelta(days=30))


def test_mimic_iv_layout_gives_the_same_cohorts(demo, mimic_iv):
    iv = read_mimic(mimic_iv)
    assert iv.layout == "MIMIC-IV" and iv.version == "2.2" and iv.out_of_hospital_deaths
    assert iv.notes == demo.notes
    for build in (mortality_cohort, readmission_cohort, lambda d: readmission_cohort(d, "all")):
        a, b = build(demo).to_json(), build(iv).to_json()
        assert a == b


def test_mimic_iv_v1_refuses_mortality(mimic_iv, tmp_path):
    v1 = tmp_path / "mimic-iv-1.0"
    v1.symlink_to(mimic_iv, target_is_directory=True)
    data = read_mimic(v1)
    assert data.version == "1.0" and not data.out_of_hospital_deaths
    with pytest.raises(MimicError, match="no deaths after discharge"):
        mortality_cohort(data)
    assert readmission_cohort(data).samples  # readmission needs no death dates


def test_a_version_file_outranks_the_folder_name(mimic_dir, tmp_path):
    """A folder named v31-1.0 (a copy at scale 1.0) was read as MIMIC-IV 1.0, which refuses mortality."""
    folder = build_mimic_iv(mimic_dir, tmp_path / "v31-1.0")
    assert read_mimic(folder).version == "1.0"  # the name alone still names a release
    (folder / "version.txt").write_text("3.1\n")
    data = read_mimic(folder)
    assert data.version == "3.1" and data.out_of_hospital_deaths


def test_not_a_mimic_folder(tmp_path):
    with pytest.raises(MimicError, match="neither MIMIC-III"):
        read_mimic(tmp_path)


def test_vocabulary_maps_rare_and_unseen_codes_to_oov(demo):
    cohort = mortality_cohort(demo)
    vocab = Vocabulary.build((v.codes for s in cohort.samples for v in s.visits), min_count=2)
    assert len(vocab) > 2
    visit = next(iter(cohort.samples)).visits[-1].codes
    encoded = vocab.encode(visit | {"dx9:never-seen"})
    assert OOV in encoded and all(0 < i < len(vocab) for i in encoded)
    assert Vocabulary.from_json(vocab.to_json()) == vocab
    with pytest.raises(ValueError):
        Vocabulary.from_json({"codes": "x"})


def test_data_cohorts_command(mimic_dir, tmp_path):
    import json

    from click.testing import CliRunner

    from tools.cli.main import main

    result = CliRunner().invoke(main, ["data", "cohorts", "--mimic", str(mimic_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    names = [c["name"] for c in report["cohorts"]]
    assert names == ["mortality_1y", "readmission_30d", "readmission_30d_all_admissions"]
    assert "subject 10043" in report["notes"][0]
    bad = CliRunner().invoke(main, ["data", "cohorts", "--mimic", str(tmp_path)])
    assert bad.exit_code == 1 and "neither MIMIC-III" in bad.output
