"""CGM readings for the trial's CGM variant: simglucose's sensor noise, one stream per patient.

The noise is simglucose's own model (``CGMNoise``: a Johnson-distributed AR(1) process sampled
every 15 min and interpolated), driven with the parameters of one of its sensors and seeded by
(seed, patient), so every arm of a patient sees the same sensor errors (common random numbers).
A reading is the subcutaneous glucose plus that noise, held within the sensor's range.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SAMPLE_MIN = 5  # a reading every 5 minutes
PER_DAY = 1440 // SAMPLE_MIN


class CgmStreams:
    """The sensor noise of every patient, drawn one day at a time, in order."""

    def __init__(self, sensor: str, seed: int, patients: Sequence[int]) -> None:
        import pandas as pd
        from simglucose.sensor.cgm import SENSOR_PARA_FILE
        from simglucose.sensor.noise_gen import CGMNoise

        table = pd.read_csv(SENSOR_PARA_FILE)
        rows = table.loc[table.Name == sensor]
        if rows.empty:
            raise ValueError(f"unknown CGM sensor {sensor!r}; simglucose has {', '.join(table.Name)}")
        params = rows.iloc[0].copy()
        params["sample_time"] = float(SAMPLE_MIN)
        self.low, self.high = float(params["min"]), float(params["max"])
        self._noise = [CGMNoise(params, seed=seed * 1000 + p) for p in patients]

    def next_day(self) -> np.ndarray:
        """(patients, readings per day) noise in mg/dL for the next day."""
        return np.array([[next(noise) for _ in range(PER_DAY)] for noise in self._noise])

    def reading(self, true_glucose: float, noise: float) -> float:
        """A sensor reading: glucose plus noise within the sensor's range, whole mg/dL."""
        return float(round(min(self.high, max(self.low, true_glucose + noise))))
