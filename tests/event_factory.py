"""Event payloads for device tests: a patient's recent routine and single readings."""

from __future__ import annotations

from datetime import datetime, timedelta


def history(patient: str, now: datetime, days: int = 5, units: float = 7.0) -> list[dict]:
    """One glucose reading and one regular dose a day for ``days`` days before ``now``."""
    out = []
    for d in range(days, 0, -1):
        ts = (now - timedelta(days=d)).isoformat()
        out.append({"id": f"{patient}-g{d}", "patient": patient, "ts": ts, "kind": "glucose", "mg_dl": 150})
        out.append({"id": f"{patient}-i{d}", "patient": patient, "ts": ts, "kind": "insulin",
                    "insulin": "regular", "units": units})
    return out


def glucose(event_id: str, patient: str, ts: datetime, mg_dl: float) -> dict:
    return {"id": event_id, "patient": patient, "ts": ts.isoformat(), "kind": "glucose", "mg_dl": mg_dl}
