"""The UVA/Padova 2008 patient model of simglucose, integrated fast for many patients at once.

simglucose (the ``sim`` extra) supplies the 30 virtual patients' parameters and, in
``T1DPatient.model``, the equations. Its own stepping keeps the parameters in a pandas Series
and integrates one patient at a time with scipy's DOPRI5 and a Python callback: about 5–10 s
per simulated day. This module integrates the same equations with plain float arrays, one
row per simulated patient, by the classical Runge–Kutta method on fixed half-minute
substeps (the inputs change only at whole minutes), and keeps simglucose's per-minute meal
logic (eating at 5 g/min, the gastric-emptying reference of the current meal).
``tests/test_insilico.py`` proves the trajectories equal those of ``T1DPatient``.

Units as in simglucose: glucose mg/dL, carbohydrate g (eaten at up to ``EAT_RATE`` g/min),
insulin U/min (a bolus of B units is B U/min for one minute).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib.resources import files

import numpy as np

EAT_RATE = 5.0  # g/min, as simglucose's T1DPatient
SUBSTEPS = 2  # Runge–Kutta substeps per minute
STATE_SIZE = 13
GROUPS = ("adolescent", "adult", "child")
PARAMETERS = (
    "BW", "kabs", "kmax", "kmin", "b", "d", "Vg", "Vi", "Vmx", "Km0", "k2", "k1", "p2u", "m1", "m2", "m4", "m30",
    "ki", "kp2", "kp3", "f", "ke1", "ke2", "Fsnc", "Vm0", "kd", "ksc", "ka1", "ka2", "u2ss", "kp1", "Ib",
)  # fmt: skip


def parameter_table(name: str) -> list[dict[str, str]]:
    """A parameter table shipped with simglucose."""
    text = files("simglucose").joinpath(f"params/{name}").read_text()
    return list(csv.DictReader(text.splitlines()))


def patient_names() -> list[str]:
    """The 30 virtual patients, in simglucose's order (adolescents, adults, children)."""
    return [row["Name"] for row in parameter_table("vpatient_params.csv")]


@dataclass(frozen=True)
class Cohort:
    """Parameters of a set of virtual patients, one array entry per simulated patient."""

    names: tuple[str, ...]
    params: dict[str, np.ndarray]
    initial: np.ndarray  # (n, 13) the steady state simglucose starts from
    carb_ratio: np.ndarray  # g per U (simglucose's Quest.csv)
    correction_factor: np.ndarray  # mg/dL per U
    total_daily_insulin: np.ndarray  # U
    age: np.ndarray  # years (Quest.csv)
    keys: tuple[int, ...]  # each patient's random-stream key (population.cohort_of)

    @property
    def basal_rate(self) -> np.ndarray:
        """The steady-state insulin infusion, U/min (simglucose: u2ss · BW / 6000)."""
        return self.params["u2ss"] * self.params["BW"] / 6000.0

    def repeat(self, times: int) -> Cohort:
        """``times`` copies of every patient, copy-major."""
        return Cohort(
            self.names * times,
            {name: np.tile(value, times) for name, value in self.params.items()},
            np.tile(self.initial, (times, 1)),
            np.tile(self.carb_ratio, times),
            np.tile(self.correction_factor, times),
            np.tile(self.total_daily_insulin, times),
            np.tile(self.age, times),
            self.keys * times,
        )

    @property
    def groups(self) -> list[str]:
        return [n.split("#")[0] for n in self.names]


@dataclass(frozen=True)
class _Rates:
    """The parameters the equations use, as (n,) arrays, with the products they need precomputed."""

    kmax: np.ndarray
    kmin: np.ndarray
    half_span: np.ndarray  # (kmax - kmin) / 2
    b: np.ndarray
    d: np.ndarray
    kabs: np.ndarray
    rate_of_appearance: np.ndarray  # f · kabs / BW
    kp1: np.ndarray
    kp2: np.ndarray
    kp3: np.ndarray
    fsnc: np.ndarray
    ke1: np.ndarray
    ke2: np.ndarray
    k1: np.ndarray
    k2: np.ndarray
    vm0: np.ndarray
    vmx: np.ndarray
    km0: np.ndarray
    m1: np.ndarray
    m2: np.ndarray
    m2_m4: np.ndarray
    m1_m30: np.ndarray
    ka1: np.ndarray
    ka2: np.ndarray
    ka1_kd: np.ndarray
    kd: np.ndarray
    vi: np.ndarray
    p2u: np.ndarray
    ib: np.ndarray
    ki: np.ndarray
    ksc: np.ndarray
    insulin_scale: np.ndarray  # 6000 / BW: U/min -> pmol/kg/min

    @classmethod
    def of(cls, p: dict[str, np.ndarray]) -> _Rates:
        return cls(
            kmax=p["kmax"],
            kmin=p["kmin"],
            half_span=(p["kmax"] - p["kmin"]) / 2.0,
            b=p["b"],
            d=p["d"],
            kabs=p["kabs"],
            rate_of_appearance=p["f"] * p["kabs"] / p["BW"],
            kp1=p["kp1"],
            kp2=p["kp2"],
            kp3=p["kp3"],
            fsnc=p["Fsnc"],
            ke1=p["ke1"],
            ke2=p["ke2"],
            k1=p["k1"],
            k2=p["k2"],
            vm0=p["Vm0"],
            vmx=p["Vmx"],
            km0=p["Km0"],
            m1=p["m1"],
            m2=p["m2"],
            m2_m4=p["m2"] + p["m4"],
            m1_m30=p["m1"] + p["m30"],
            ka1=p["ka1"],
            ka2=p["ka2"],
            ka1_kd=p["ka1"] + p["kd"],
            kd=p["kd"],
            vi=p["Vi"],
            p2u=p["p2u"],
            ib=p["Ib"],
            ki=p["ki"],
            ksc=p["ksc"],
            insulin_scale=6000.0 / p["BW"],
        )


CLAMPED = np.array([i in (3, 4, 5, 9, 10, 11, 12) for i in range(STATE_SIZE)])[:, None]


def _derivative(
    x: np.ndarray,
    cho_mg: np.ndarray,
    insulin: np.ndarray,
    dbar: np.ndarray,
    gut: tuple[np.ndarray, np.ndarray, np.ndarray],
    r: _Rates,
    uptake: np.ndarray,
    sensitivity: np.ndarray,
) -> np.ndarray:
    """dx/dt of the UVA/Padova 2008 model for every column of ``x`` (13, n): simglucose's equations.

    ``gut`` holds what depends only on the current meal: (has a meal, 5 / (2 Dbar (1 − b)),
    5 / (2 Dbar d)). ``uptake`` multiplies the tissues' glucose utilisation (1: at rest; above 1
    during and after exercise, docs/insilico.md); ``sensitivity`` the action of insulin on it and on
    the liver's glucose production (1: the patient's own; below 1 on steroids).
    """
    has_meal, aa, cc = gut
    dx = np.empty_like(x)
    x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12 = x
    qsto = x0 + x1
    kgut = np.where(
        has_meal,
        r.kmin + r.half_span * (np.tanh(aa * (qsto - r.b * dbar)) - np.tanh(cc * (qsto - r.d * dbar)) + 2.0),
        r.kmax,
    )
    dx[0] = cho_mg - r.kmax * x0
    dx[1] = r.kmax * x0 - kgut * x1
    dx[2] = kgut * x1 - r.kabs * x2
    egp = r.kp1 - r.kp2 * x3 - sensitivity * r.kp3 * x8
    renal = np.where(x3 > r.ke2, r.ke1 * (x3 - r.ke2), 0.0)
    dx[3] = np.maximum(egp, 0.0) + r.rate_of_appearance * x2 - r.fsnc - renal - r.k1 * x3 + r.k2 * x4
    dx[4] = r.k1 * x3 - r.k2 * x4 - uptake * (r.vm0 + sensitivity * r.vmx * x6) * x4 / (r.km0 + x4)
    dx[5] = r.m1 * x9 + r.ka1 * x10 + r.ka2 * x11 - r.m2_m4 * x5
    plasma_insulin = x5 / r.vi
    dx[6] = r.p2u * (plasma_insulin - r.ib - x6)
    dx[7] = r.ki * (plasma_insulin - x7)
    dx[8] = r.ki * (x7 - x8)
    dx[9] = r.m2 * x5 - r.m1_m30 * x9
    dx[10] = insulin * r.insulin_scale - r.ka1_kd * x10
    dx[11] = r.kd * x10 - r.ka2 * x11
    dx[12] = r.ksc * (x3 - x12)
    return np.where(CLAMPED & (x < 0), 0.0, dx)  # simglucose holds these at zero once they reach it


class PatientBatch:
    """Many virtual patients stepped together, one minute at a time."""

    def __init__(self, cohort: Cohort) -> None:
        self.cohort = cohort
        self._rates = _Rates.of(cohort.params)
        self.state = cohort.initial.copy()
        n = len(cohort.names)
        self.minute = 0
        self._planned = np.zeros(n)  # announced carbohydrate not eaten yet, g
        self._eating = np.zeros(n, dtype=bool)
        self._last_cho = np.zeros(n)
        self._last_qsto = self.state[:, 0] + self.state[:, 1]
        self._last_taken = np.zeros(n)
        self.uptake = np.ones(n)  # glucose utilisation multiplier: exercise raises it
        self.sensitivity = np.ones(n)  # insulin sensitivity multiplier: steroids lower it

    def repeat(self, times: int) -> PatientBatch:
        """``times`` copies of every patient in its current state, copy-major (copy 0's patients first)."""
        copy = PatientBatch(self.cohort.repeat(times))
        copy.minute = self.minute
        for name in ("state", "_planned", "_eating", "_last_cho", "_last_qsto", "_last_taken", "uptake", "sensitivity"):
            value = getattr(self, name)
            setattr(copy, name, np.concatenate([value] * times, axis=0))
        return copy

    @property
    def glucose(self) -> np.ndarray:
        """Subcutaneous glucose, mg/dL: what simglucose reports as the patient's blood glucose."""
        return self.state[:, 12] / self.cohort.params["Vg"]

    @property
    def collapsed(self) -> np.ndarray:
        """Patients whose plasma glucose mass went below zero: simglucose freezes it there for good.

        Physically a fatal low; in the simulator a state no carbohydrate can lift again.
        """
        return self.state[:, 3] < 0

    def step(self, carbs: np.ndarray, insulin: np.ndarray) -> None:
        """One minute: ``carbs`` g announced now (eaten at up to 5 g/min), ``insulin`` U/min."""
        self._planned += carbs
        cho = np.minimum(EAT_RATE, self._planned)
        cho = np.where(self._planned > 0, cho, 0.0)
        self._planned = np.maximum(0.0, self._planned - cho)
        starts = (cho > 0) & (self._last_cho <= 0)
        self._last_qsto = np.where(starts, self.state[:, 0] + self.state[:, 1], self._last_qsto)
        self._last_taken = np.where(starts, 0.0, self._last_taken)
        self._eating |= starts
        self._last_taken = np.where(self._eating, self._last_taken + cho, self._last_taken)
        self._eating &= ~((cho <= 0) & (self._last_cho > 0))
        self._last_cho = cho
        dbar = self._last_qsto + self._last_taken * 1000.0
        has_meal = dbar > 0
        safe = np.where(has_meal, dbar, 1.0)
        r = self._rates
        gut = (has_meal, 5.0 / (2.0 * safe * (1.0 - r.b)), 5.0 / (2.0 * safe * r.d))
        cho_mg = cho * 1000.0
        x, h = self.state.T.copy(), 1.0 / SUBSTEPS
        for _ in range(SUBSTEPS):
            k1 = _derivative(x, cho_mg, insulin, safe, gut, r, self.uptake, self.sensitivity)
            k2 = _derivative(x + 0.5 * h * k1, cho_mg, insulin, safe, gut, r, self.uptake, self.sensitivity)
            k3 = _derivative(x + 0.5 * h * k2, cho_mg, insulin, safe, gut, r, self.uptake, self.sensitivity)
            k4 = _derivative(x + h * k3, cho_mg, insulin, safe, gut, r, self.uptake, self.sensitivity)
            x = x + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        self.state = x.T.copy()
        self.minute += 1
