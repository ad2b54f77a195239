"""Cohorts of the companion models as docs/evaluation.md ("Companion models on MIMIC") defines them.

Every builder returns the samples and the count after each step, for the report and the
bundle manifest (``cohort: {"size", "positives", "steps"}``).

* 1-year mortality: adults (≥ 18 at admission), first ICU stay per patient, alive at hospital
  discharge; label 1 when ``0 < dod − ICU outtime ≤ 365 days``. The sequence is the patient's
  admissions up to and including the index admission — never later ones (the source notebook
  included them, which leaks the outcome).
* 30-day readmission (heart-failure timeline labelling): an admission's label is 1 when the
  next admission starts within 30 days of its discharge; index events are heart-failure
  admissions (primary ICD-9 428.x or ICD-10 I50.x); the sample is the timeline up to the
  patient's last index event, whose label is the target. The all-admissions variant, for
  small data sets, makes every admission an index event and every one a sample (its
  timeline up to it) — with only the last, every label would be 0.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import timedelta

from domain.visits import Visit
from preprocessing.mimic import Admission, IcuStay, MimicData, MimicError

ADULT_YEARS = 18.0
MORTALITY_DAYS = 365.0
READMISSION_DAYS = 30.0


@dataclass(frozen=True, slots=True)
class Sample:
    subject_id: int
    index_hadm: int
    visits: tuple[Visit, ...]  # oldest first, the index admission last
    visit_labels: tuple[int, ...]  # readmission: each visit's own label; mortality: empty
    label: int


@dataclass
class Cohort:
    name: str
    samples: list[Sample]
    steps: list[dict] = field(default_factory=list)

    @property
    def positives(self) -> int:
        return sum(s.label for s in self.samples)

    def step(self, name: str, count: int) -> None:
        self.steps.append({"step": name, "count": count})

    def to_json(self) -> dict:
        return {"name": self.name, "size": len(self.samples), "positives": self.positives, "steps": self.steps}


def mortality_cohort(data: MimicData) -> Cohort:
    if not data.out_of_hospital_deaths:
        raise MimicError(
            f"{data.layout} {data.version} records no deaths after discharge: "
            "1-year mortality cannot be labelled (use MIMIC-IV v2.0 or later)"
        )
    cohort = Cohort("mortality_1y", [])
    cohort.step("patients", len(data.patients))
    first_stays: dict[int, tuple[IcuStay, Admission]] = {}
    for stay in sorted(data.icu_stays, key=lambda s: s.intime):
        admission = data.admission(stay.hadm_id)
        if admission is not None and stay.subject_id in data.patients:
            first_stays.setdefault(stay.subject_id, (stay, admission))
    cohort.step("patients with an ICU stay joined to its admission", len(first_stays))
    adults = {
        sid: (stay, admission)
        for sid, (stay, admission) in first_stays.items()
        if data.patients[sid].age_at(admission.admit) >= ADULT_YEARS
    }
    cohort.step("adults (>= 18 at admission), first ICU stay each", len(adults))
    alive = {sid: pair for sid, pair in adults.items() if not pair[1].died_in_hospital}
    cohort.step("alive at hospital discharge", len(alive))
    for sid, (stay, index) in sorted(alive.items()):
        dod = data.patients[sid].dod
        days = (dod - stay.outtime).total_seconds() / 86400.0 if dod else None
        label = int(days is not None and 0 < days <= MORTALITY_DAYS)
        history = [a for a in data.admissions[sid] if a.admit <= index.admit]
        cohort.samples.append(Sample(sid, index.hadm_id, tuple(_visit(a) for a in history), (), label))
    cohort.step("labelled", len(cohort.samples))
    cohort.step("positives (death within 365 days of ICU discharge)", cohort.positives)
    return cohort


def _visit(admission: Admission) -> Visit:
    return Visit(admission.admit, admission.discharge, admission.codes)


def is_heart_failure(admission: Admission) -> bool:
    code = admission.primary_dx or ""
    return code.startswith(("dx9:428", "dx10:I50"))


def readmission_labels(admissions: list[Admission]) -> list[int]:
    """Each admission's label: the next one starts within 30 days of its discharge."""
    window = timedelta(days=READMISSION_DAYS)
    return [int(nxt.admit - cur.discharge <= window) for cur, nxt in itertools.pairwise(admissions)] + [0]


def readmission_cohort(data: MimicData, index: str = "hf") -> Cohort:
    if index not in ("hf", "all"):
        raise ValueError("index must be 'hf' (heart-failure admissions) or 'all'")
    cohort = Cohort("readmission_30d" if index == "hf" else "readmission_30d_all_admissions", [])
    cohort.step("patients", len(data.patients))
    with_admissions = {sid: rows for sid, rows in data.admissions.items() if rows and sid in data.patients}
    cohort.step("patients with admissions", len(with_admissions))
    with_index = 0
    for sid, rows in sorted(with_admissions.items()):
        labels = readmission_labels(rows)
        indices = [i for i, a in enumerate(rows) if index == "all" or is_heart_failure(a)]
        with_index += bool(indices)
        for i in indices if index == "all" else indices[-1:]:
            cohort.samples.append(
                Sample(sid, rows[i].hadm_id, tuple(_visit(a) for a in rows[: i + 1]), tuple(labels[: i + 1]), labels[i])
            )
    cohort.step("patients with an index admission" + (" (heart failure)" if index == "hf" else ""), with_index)
    cohort.step("samples (index events)", len(cohort.samples))
    cohort.step("positives (next admission within 30 days)", cohort.positives)
    return cohort


def merge_counts(parts: list[dict]) -> dict:
    """One cohort's counts from its patient shards (``Cohort.to_json`` of each): every step adds up.

    Each step counts patients or the samples of patients, and a patient lives in one shard, so
    the sum over shards is the count of the whole data set.
    """
    if not parts:
        raise ValueError("no cohort parts to merge")
    first = parts[0]
    names = [s["step"] for s in first["steps"]]
    for part in parts[1:]:
        if part["name"] != first["name"] or [s["step"] for s in part["steps"]] != names:
            raise ValueError(f"cohort parts differ: {first['name']} and {part['name']} do not have the same steps")
    return {
        "name": first["name"],
        "size": sum(p["size"] for p in parts),
        "positives": sum(p["positives"] for p in parts),
        "steps": [{"step": name, "count": sum(p["steps"][i]["count"] for p in parts)} for i, name in enumerate(names)],
    }
