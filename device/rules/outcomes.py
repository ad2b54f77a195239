"""The ward's week as the device saw it: lows among the readings, how answers were followed, and how
far the doses given were from the model's numbers (pure; the service reads the store).

Lows are counted among the readings the device received (finger-sticks, or a CGM value every
5 minutes), so with finger-sticks they are a share of readings, not of time. The alert lines are
the international consensus targets for time in ranges (Battelino et al., Diabetes Care 2019):
under 4 % below 70 mg/dL and under 1 % below 54 mg/dL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from device.contract.messages import Response, WardOutcomes
from device.rules.daily_summary import DoseAnswer, adherence


def ward_outcomes(
    since: datetime,
    until: datetime,
    readings: Sequence[float],
    doses: Sequence[tuple[DoseAnswer, Response | None]],
    given_vs_model: Sequence[tuple[float, float]],
    below_70_alert: float,
    below_54_alert: float,
    min_readings: int,
) -> WardOutcomes:
    """The ward's outcomes over ``[since, until)``; an alert for a share of lows over its line (not on
    fewer than ``min_readings`` readings)."""
    n = len(readings)
    below_70 = sum(1 for g in readings if g < 70.0) / n if n else None
    below_54 = sum(1 for g in readings if g < 54.0) / n if n else None
    responses: Mapping[str, Response] = {s.id: r for s, r in doses if r is not None}
    replaced = {s.id: s.replaced for s, _ in doses if s.replaced is not None}
    followed = adherence([s for s, _ in doses], responses, replaced)
    differences = [given - model for model, given in given_vs_model]
    alerts = []
    if below_70 is not None and n >= min_readings and below_70 > below_70_alert:
        alerts.append(
            f"{below_70:.1%} of this week's readings were below 70 mg/dL (line {below_70_alert:.0%}): "
            "review the ward's doses and hypoglycaemia protocol"
        )
    if below_54 is not None and n >= min_readings and below_54 > below_54_alert:
        alerts.append(
            f"{below_54:.1%} of this week's readings were below 54 mg/dL (line {below_54_alert:.0%}): "
            "review the ward's doses and hypoglycaemia protocol"
        )
    return WardOutcomes(
        since=since.isoformat(timespec="seconds"),
        until=until.isoformat(timespec="seconds"),
        readings=n,
        below_70_share=None if below_70 is None else round(below_70, 4),
        below_54_share=None if below_54 is None else round(below_54, 4),
        suggested=followed.suggested,
        followed_share=followed.followed_share,
        given_with_model=len(differences),
        given_minus_model_mean_units=round(sum(differences) / len(differences), 3) if differences else None,
        given_minus_model_mae_units=(
            round(sum(abs(d) for d in differences) / len(differences), 3) if differences else None
        ),
        alerts=alerts,
    )
