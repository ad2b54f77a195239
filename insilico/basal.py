"""Basal insulin as each arm gives it (pure logic, numpy only).

The rule arms keep simglucose's steady-state infusion, the exact need (``oracle``'s premise).
An advisor arm gives what the device advises: a once-daily long-acting dose, absorbed from a
subcutaneous depot as an idealised glargine profile — rising over :data:`RAMP_MIN` minutes to a
flat rate, flat to 24 h, falling over :data:`RAMP_MIN` minutes — whose total is the dose. Doses on
consecutive days overlap for those two hours, as glargine's do. A dose the device withholds (a
low at basal time) is asked for again at the next reading.
"""

from __future__ import annotations

import numpy as np

RAMP_MIN = 120
SPAN_MIN = 1440


def long_acting_profile() -> np.ndarray:
    """Share of a long-acting dose absorbed in each minute after it is given (sums to 1)."""
    ramp = np.arange(1, RAMP_MIN + 1) / RAMP_MIN
    shape = np.concatenate([ramp, np.ones(SPAN_MIN - RAMP_MIN), ramp[::-1]])
    return shape / shape.sum()


PROFILE = long_acting_profile()


class BasalSupply:
    """Each row's basal insulin minute by minute: its infusion, or the depots of the doses it was given.

    ``advised[row]``: the row takes its basal from long-acting doses (:meth:`give`), else from
    ``rate[row]`` (U/min). Minutes are absolute (since the start of the run).
    """

    def __init__(self, rate: np.ndarray, advised: np.ndarray) -> None:
        self.rate = np.asarray(rate, dtype=float)
        self.advised = np.asarray(advised, dtype=bool)
        self._depot = np.zeros((len(self.rate), len(PROFILE)))
        self.pending = np.zeros(len(self.rate), dtype=bool)  # basal asked for and not given yet
        self.given = np.zeros(len(self.rate))  # units of long-acting insulin given, per row

    def give(self, row: int, units: float, start: int, now: int) -> None:
        """A long-acting dose of ``units`` absorbed from minute ``start`` on (the part before ``now`` is past)."""
        k = np.arange(max(0, now - start), len(PROFILE))
        np.add.at(self._depot[row], (start + k) % len(PROFILE), units * PROFILE[k])

    def at(self, minute: int) -> np.ndarray:
        """The basal insulin of every row in this minute, U/min (each minute read once, in order)."""
        column = minute % len(PROFILE)
        out = np.where(self.advised, self._depot[:, column], self.rate)
        self._depot[:, column] = 0.0
        return out
