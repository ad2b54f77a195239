"""The dose model's inputs against its training reference, as the device decides (docs/deployment.md, "Drift").

Every decision that runs the model passes its feature row here; a new model (a flash) starts a new
count. The reading goes into the device's ``status``, onto the page and into ``/metrics``.
"""

from __future__ import annotations

import threading

import numpy as np

from device.config import DriftConfig
from device.contract.messages import DriftStatus
from device.models.inference import DoseModel
from domain.drift import DriftMonitor, DriftReport


class DriftWatch:
    """One :class:`~domain.drift.DriftMonitor` for the dose model in use (thread-safe)."""

    def __init__(self, config: DriftConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._model: DoseModel | None = None
        self._monitor: DriftMonitor | None = None

    def _for(self, model: DoseModel) -> DriftMonitor | None:
        if model is not self._model:
            self._model = model
            self._monitor = None
            if self.config.enabled and model.reference is not None:
                c = self.config
                names = model.spec.names
                self._monitor = DriftMonitor(
                    model.reference, names, c.window, c.min_decisions, c.alert_psi, c.watch, c.min_patients
                )
        return self._monitor

    def observe(self, model: DoseModel, window: np.ndarray, patient: str) -> None:
        """Count the current step of one decision's window, of ``patient``."""
        with self._lock:
            monitor = self._for(model)
            if monitor is not None:
                monitor.observe(window[-1], patient)

    def status(self, model: DoseModel | None) -> DriftStatus | None:
        """The reading for ``model`` (None: no model, no reference in its bundle, or drift off)."""
        if model is None:
            return None
        with self._lock:
            monitor = self._for(model)
            if monitor is None:
                return None
            report = monitor.report()
            watch = list(monitor.watch)
            expected = {name: list(monitor.reference.features[name].shares) for name in watch}
        return DriftStatus(
            decisions=report.rows,
            patients=report.patients,
            window=self.config.window,
            alert_psi=self.config.alert_psi,
            watch=watch,
            psi=report.psi,
            drifted=report.drifted,
            note=note(report, self.config, watch),
            min_patients=self.config.min_patients,
            min_decisions=self.config.min_decisions,
            counts=report.counts,
            expected=expected,
        )


def note(report: DriftReport, config: DriftConfig, watch: list[str]) -> str:
    """The reading in one line a nurse reads."""
    if not watch:
        return f"drift not watched: none of drift.watch ({', '.join(config.watch)}) is a feature of this model"
    if report.psi is None:
        return f"measuring: {report.rows} of the first {config.min_decisions} decisions counted"
    if report.patients < config.min_patients:
        largest = max(watch, key=lambda name: report.psi[name] if report.psi else 0.0)
        return (
            f"decisions of {report.patients} patient(s): drift is judged on {config.min_patients} or more, as one "
            f"patient's own glucose differs from any population (largest watched PSI {report.psi[largest]:.2f})"
        )
    if report.drifted:
        worst = report.drifted[0]
        return (
            f"the model's inputs no longer look like its training data ({worst}: PSI {report.psi[worst]:.2f}, "
            f"alert at {config.alert_psi:g}); the safety rules still check every dose — tell the diabetes team "
            "so the model is reviewed"
        )
    largest = max(watch, key=lambda name: report.psi[name] if report.psi else 0.0)
    return (
        f"the model's inputs look like its training data (largest watched PSI {report.psi[largest]:.2f}, "
        f"alert at {config.alert_psi:g}; last {report.rows} decisions)"
    )
