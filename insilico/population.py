"""A held-out virtual population: new patients drawn from the distribution of simglucose's 30.

The trial's rules were chosen on simglucose's 30 virtual patients, so they are confirmed on
patients nobody looked at while choosing them. How a patient is drawn (docs/insilico.md):

1. Per age group, the logarithms of the free parameters of the UVA/Padova model and of the
   patient's own therapy (carb ratio, correction factor, total daily insulin) of its 10 patients
   give a mean and a covariance; the covariance is shrunk by :data:`SHRINKAGE` toward its
   diagonal (10 patients cannot fix 35 correlations). A draw is a multivariate normal sample of
   those logarithms; parameters that are the same for all 30 stay fixed; age is drawn normal.
2. The parameters that simglucose derives at the basal steady state are derived the same way
   (:func:`steady_state`), so a drawn patient starts at rest like the 30 do.
3. A draw is rejected as physiologically implausible when a logarithm lies outside the group's
   range widened by :data:`WIDEN` of its span on each side, a derived quantity is not positive,
   the fasting glucose leaves the range of the 30, the age leaves the group's, or the patient's own
   therapy misfits its body: a weight-scaled 70 g lunch dosed by its carb ratio at steady state must
   keep glucose within :data:`MEAL_TEST` for 6 h (all 30 of simglucose's patients pass).

Draws come from one fixed generator per group (:data:`POPULATION_SEED`), in blocks, so
``child#h007`` is the same patient whichever other patients share a run. It is never used to
choose rules: the held-out run is reported, not tuned on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from insilico.patient import GROUPS, PARAMETERS, Cohort, PatientBatch, parameter_table

POPULATION_SEED = 20261203
HELD_OUT_PER_GROUP = 100
SHRINKAGE = 0.3  # weight of the diagonal in the drawn covariance
WIDEN = 0.25  # of a log-parameter's range in its group, on each side
MEAL_TEST = (54.0, 350.0)  # mg/dL: the lowest and highest glucose allowed within 6 h of the test lunch
BLOCK = 64  # candidates drawn and tested together
DERIVED = ("Gpb", "Gtb", "Vm0", "Ipb", "m2", "m4", "m30", "Ilb", "u2ss", "isc1ss", "isc2ss", "kp1")
THERAPY = ("CR", "CF", "TDI")
MARK = "#h"  # a held-out name: group#hNNN


@dataclass(frozen=True)
class VirtualPatient:
    """One drawn patient: the model's parameters, its therapy and age."""

    params: dict[str, float]
    initial: tuple[float, ...]  # the basal steady state
    carb_ratio: float
    correction_factor: float
    total_daily_insulin: float
    age: float


def is_held_out(name: str) -> bool:
    return MARK in name


def held_out_names(per_group: int = HELD_OUT_PER_GROUP, groups: tuple[str, ...] = ()) -> list[str]:
    """The held-out population's names: ``per_group`` patients of each group (default all three)."""
    return [f"{group}{MARK}{i:03d}" for group in groups or GROUPS for i in range(1, per_group + 1)]


def key_of(name: str) -> int:
    """A held-out patient's random-stream key, apart from the 30's (0–29)."""
    group, number = name.split(MARK)
    return 1000 * (1 + GROUPS.index(group)) + int(number)


def steady_state(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The quantities simglucose's table derives at the basal steady state, from the free parameters.

    Glucose: Gpb = Gb·Vg; the tissue mass from k1·Gp − k2·Gt = EGPb − Fsnc; Vm0 so that uptake
    balances it. Insulin: Ipb = Ib·Vi; the hepatic and peripheral clearances m2, m4 and m30 from CL
    and HEb; the liver's insulin Ilb; the basal infusion u2ss that holds plasma insulin at Ipb; the
    subcutaneous depots; kp1 so that EGP equals EGPb.
    """
    gpb = p["Gb"] * p["Vg"]
    gtb = (p["k1"] * gpb - p["EGPb"] + p["Fsnc"]) / p["k2"]
    vm0 = (p["EGPb"] - p["Fsnc"]) * (p["Km0"] + gtb) / gtb
    ipb = p["Ib"] * p["Vi"]
    m2 = 0.6 * p["CL"] / (p["HEb"] * p["Vi"] * p["BW"])
    m4 = 0.4 * p["CL"] / (p["Vi"] * p["BW"])
    m30 = p["HEb"] * p["m1"] / (1.0 - p["HEb"])
    ilb = m2 * ipb / (p["m1"] + m30)
    u2ss = (m2 + m4) * ipb - p["m1"] * ilb
    isc1ss = u2ss / (p["kd"] + p["ka1"])
    isc2ss = p["kd"] * isc1ss / p["ka2"]
    kp1 = p["EGPb"] + p["kp2"] * gpb + p["kp3"] * p["Ib"]
    values = (gpb, gtb, vm0, ipb, m2, m4, m30, ilb, u2ss, isc1ss, isc2ss, kp1)
    return dict(zip(DERIVED, values, strict=True))


def initial_state(p: dict[str, np.ndarray]) -> np.ndarray:
    """(n, 13) the model's state at the basal steady state, in simglucose's order."""
    zero = np.zeros_like(p["Gpb"])
    columns = (zero, zero, zero, p["Gpb"], p["Gtb"], p["Ipb"], zero, p["Ib"], p["Ib"], p["Ilb"])
    return np.stack([*columns, p["isc1ss"], p["isc2ss"], p["Gpb"]], axis=1)


@dataclass(frozen=True)
class _GroupLaw:
    """What a group's 10 patients say about the distribution of a patient of that group."""

    drawn: tuple[str, ...]  # log-normal: parameters and therapy that vary
    fixed: dict[str, float]  # the same for every patient of the group
    mean: np.ndarray
    covariance: np.ndarray
    low: np.ndarray  # log bounds, widened
    high: np.ndarray
    age: tuple[float, float, float, float]  # mean, sd, min, max
    fasting: tuple[float, float]  # the 30's fasting glucose range (Gb)


def _table() -> tuple[list[dict[str, str]], dict[str, dict[str, str]]]:
    return parameter_table("vpatient_params.csv"), {row["Name"]: row for row in parameter_table("Quest.csv")}


def _free_parameters() -> tuple[str, ...]:
    """The model's parameters that are not derived, and the basal values they are derived from."""
    return (*(p for p in PARAMETERS if p not in DERIVED), "Gb", "EGPb", "CL", "HEb")


@cache
def _law(group: str) -> _GroupLaw:
    rows, quest = _table()
    mine = [r for r in rows if r["Name"].startswith(group + "#")]
    names = (*_free_parameters(), *THERAPY)
    values = np.array(
        [[float(r[k]) if k in r and k not in THERAPY else float(quest[r["Name"]][k]) for k in names] for r in mine]
    )
    varies = values.std(axis=0) > 1e-12 * np.abs(values.mean(axis=0))
    drawn = tuple(n for n, v in zip(names, varies, strict=True) if v)
    fixed = {n: float(values[0, i]) for i, n in enumerate(names) if not varies[i]}
    logs = np.log(values[:, varies])
    covariance = np.cov(logs, rowvar=False)
    shrunk = (1.0 - SHRINKAGE) * covariance + SHRINKAGE * np.diag(np.diag(covariance))
    span = logs.max(axis=0) - logs.min(axis=0)
    ages = np.array([float(quest[r["Name"]]["Age"]) for r in mine])
    every_gb = [float(r["Gb"]) for r in rows]
    return _GroupLaw(
        drawn,
        fixed,
        logs.mean(axis=0),
        shrunk,
        logs.min(axis=0) - WIDEN * span,
        logs.max(axis=0) + WIDEN * span,
        (float(ages.mean()), float(ages.std(ddof=1)), float(ages.min()), float(ages.max())),
        (min(every_gb), max(every_gb)),
    )


def _candidates(group: str, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A block of draws (parameters with the derived ones, therapy, age) and which pass the static checks."""
    law = _law(group)
    logs = rng.multivariate_normal(law.mean, law.covariance, size=BLOCK, method="eigh")
    ages = np.round(rng.normal(law.age[0], law.age[1], size=BLOCK))
    p = {name: np.exp(logs[:, i]) for i, name in enumerate(law.drawn)}
    p |= {name: np.full(BLOCK, value) for name, value in law.fixed.items()}
    p |= steady_state(p)
    p["Age"] = ages
    ok = ((logs >= law.low) & (logs <= law.high)).all(axis=1)
    ok &= np.all([p[name] > 0 for name in DERIVED], axis=0)
    ok &= (p["kmin"] < p["kmax"]) & (p["b"] < 1.0) & (p["d"] < 1.0) & (p["Gpb"] < p["ke2"])
    ok &= (p["Gb"] >= law.fasting[0]) & (p["Gb"] <= law.fasting[1])
    ok &= (ages >= law.age[2]) & (ages <= law.age[3])
    return p, ok


def meal_test(
    params: dict[str, np.ndarray], initial: np.ndarray, carb_ratio: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest glucose within 6 h of a 70 g lunch (scaled by weight) dosed by the carb ratio."""
    n = len(carb_ratio)
    cohort = Cohort(
        tuple(f"test#{i}" for i in range(n)),
        params,
        initial,
        carb_ratio,
        carb_ratio,
        carb_ratio,
        carb_ratio,
        tuple(range(n)),
    )
    batch = PatientBatch(cohort)
    carbs = 70.0 * np.clip(params["BW"] / 70.0, 0.45, 1.25)
    low, high = batch.glucose.copy(), batch.glucose.copy()
    for minute in range(360):
        insulin = cohort.basal_rate + (carbs / carb_ratio if minute == 0 else 0.0)
        batch.step(carbs if minute == 0 else np.zeros(n), insulin)
        low, high = np.minimum(low, batch.glucose), np.maximum(high, batch.glucose)
    return low, high


@cache
def _drawn(group: str, count: int) -> tuple[VirtualPatient, ...]:
    """The group's first ``count`` accepted draws."""
    rng = np.random.default_rng([POPULATION_SEED, GROUPS.index(group)])
    accepted: list[VirtualPatient] = []
    while len(accepted) < count:
        p, ok = _candidates(group, rng)
        model = {name: p[name] for name in PARAMETERS}
        initial = initial_state(p)
        low, high = meal_test(model, initial, p["CR"])
        ok &= (low >= MEAL_TEST[0]) & (high <= MEAL_TEST[1])
        for i in np.flatnonzero(ok):
            accepted.append(
                VirtualPatient(
                    {name: float(p[name][i]) for name in PARAMETERS},
                    tuple(float(x) for x in initial[i]),
                    float(p["CR"][i]),
                    float(p["CF"][i]),
                    float(p["TDI"][i]),
                    float(p["Age"][i]),
                )
            )
    return tuple(accepted[:count])


def virtual_patient(name: str) -> VirtualPatient:
    """The held-out patient of this name (``child#h001`` …)."""
    group, _, number = name.partition(MARK)
    if group not in GROUPS or not number.isdigit() or int(number) < 1:
        raise ValueError(f"unknown virtual patient {name!r}; held-out patients are named like child#h001")
    count = -(-int(number) // BLOCK) * BLOCK  # whole blocks: the same draws whatever number is asked first
    return _drawn(group, count)[int(number) - 1]


def cohort_of(names: list[str]) -> Cohort:
    """simglucose's patients by name (``adult#001``) and held-out ones (``adult#h001``) as one cohort.

    Each patient's key is its place in simglucose's list of 30 (held-out ones: :func:`key_of`): its
    random streams depend on it, not on which other patients share the run, so a patient's trial is
    the same alone or in a cohort."""
    table = {row["Name"]: row for row in parameter_table("vpatient_params.csv")}
    quest = {row["Name"]: row for row in parameter_table("Quest.csv")}
    unknown = [n for n in names if n not in table and not is_held_out(n)]
    if unknown:
        raise ValueError(f"unknown virtual patient(s): {', '.join(unknown)}")
    drawn = {n: virtual_patient(n) for n in names if is_held_out(n)}
    rows = [{p: str(drawn[n].params[p]) for p in PARAMETERS} if n in drawn else table[n] for n in names]
    params = {p: np.array([float(r[p]) for r in rows]) for p in PARAMETERS}
    initial = np.array(
        [drawn[n].initial if n in drawn else [float(v) for v in list(table[n].values())[2:15]] for n in names]
    )

    def therapy(field: str, attribute: str) -> np.ndarray:
        return np.array([getattr(drawn[n], attribute) if n in drawn else float(quest[n][field]) for n in names])

    order = {name: i for i, name in enumerate(table)}
    return Cohort(
        tuple(names),
        params,
        initial,
        therapy("CR", "carb_ratio"),
        therapy("CF", "correction_factor"),
        therapy("TDI", "total_daily_insulin"),
        therapy("Age", "age"),
        tuple(key_of(n) if is_held_out(n) else order[n] for n in names),
    )
