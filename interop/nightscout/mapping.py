"""Nightscout entries and treatments as events, and the device's record as Nightscout JSON (pure).

In: ``entries`` of type ``sgv`` (CGM) and ``mbg`` (meter) are glucose readings in mg/dL (how
Nightscout stores them); ``treatments`` give insulin (``insulin`` units: Meal, Correction,
Snack Bolus, Bolus), meals (``carbs`` grams) and meter checks (``BG Check`` with ``glucose`` in
the treatment's ``units``, mg/dl or mmol; none is refused). Nightscout does not record which
insulin a bolus was: the preparation is the one the person configures (``bolus_insulin``).
Other treatments (temporary basal rates, targets, notes, site changes) are counted and skipped.

Out: readings as ``mbg`` entries; meal and correction insulin as ``Meal Bolus`` (with the
meal's carbs when one was recorded in the 30 minutes around it) or ``Correction Bolus``; meals
without a dose as ``Carb Correction``; basal injections (NPH, long-acting) as a ``Note``
carrying no ``insulin`` field, so Nightscout's insulin on board does not count them as boluses.
Each item carries the device's event id as ``identifier`` (a Meal Bolus also its meal's as
``mealIdentifier``), which the pull reads back, so a record exported and pulled again is one
dose, not two.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo

from domain.events import MG_DL_PER_MMOL_L, Event, Insulin, Kind
from domain.validation import ValidationError, event_from_mapping, is_identifier

BOLUS_TYPES = ("Meal Bolus", "Correction Bolus", "Snack Bolus", "Bolus", "Combo Bolus")
MEAL_TYPES = ("Meal Bolus", "Snack Bolus", "Carb Correction")
ENTERED_BY = "insulin-advisor"
MEAL_WINDOW = timedelta(minutes=30)


class NightscoutRefusal(ValueError):
    """Why one entry or treatment is not used (the others still are)."""


@dataclass
class Pulled:
    """Events read from Nightscout, what was refused and why, what was skipped by type."""

    events: list[Event] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, what: str) -> None:
        self.skipped[what] = self.skipped.get(what, 0) + 1


def _when(item: dict, zone: tzinfo | None) -> datetime:
    """An entry's ``date`` (ms since the epoch), or a treatment's ``created_at``, shown in its
    ``utcOffset`` (minutes); without one, in ``zone``; with neither, refused: the wall-clock time
    is what the time-of-day features read, and it is not guessed."""
    if isinstance(item.get("date"), int | float):
        try:
            ts = datetime.fromtimestamp(item["date"] / 1000.0, UTC)
        except (ValueError, OverflowError, OSError):
            raise NightscoutRefusal(f"date {item['date']!r} is not a time") from None
    elif isinstance(item.get("created_at"), str):
        try:
            ts = datetime.fromisoformat(item["created_at"].replace("Z", "+00:00"))
        except ValueError:
            raise NightscoutRefusal(f"created_at {item['created_at'][:40]!r} is not an ISO 8601 time") from None
        if ts.tzinfo is None:
            raise NightscoutRefusal(f"created_at {item['created_at'][:40]!r} has no UTC offset")
    else:
        raise NightscoutRefusal("no time: neither 'date' nor 'created_at'")
    offset = item.get("utcOffset")
    if isinstance(offset, int | float) and not isinstance(offset, bool) and -14 * 60 <= offset <= 14 * 60:
        return ts.astimezone(timezone(timedelta(minutes=offset)))
    if zone is not None:
        return ts.astimezone(zone)
    raise NightscoutRefusal("no utcOffset, so its local time is unknown: pull with --timezone")


def _id(item: dict, suffix: str = "") -> str:
    """The device event id: the ``identifier`` it was exported with (the dose's; ``mealIdentifier``
    the meal's of a Meal Bolus), else ``ns-<_id>[-suffix]``."""
    exported = item.get("mealIdentifier" if suffix == "meal" else "identifier")
    if isinstance(exported, str) and is_identifier(exported) and suffix in ("", "meal", "insulin"):
        return exported
    own = item.get("_id")
    if not isinstance(own, str) or not is_identifier(f"ns-{own}"):
        raise NightscoutRefusal("no usable _id")
    return f"ns-{own}" + (f"-{suffix}" if suffix else "")


def _validated(payload: dict, now: datetime) -> Event:
    try:
        return event_from_mapping(payload, now)
    except ValidationError as exc:
        raise NightscoutRefusal(exc.reason) from None


def entry_event(entry: dict, patient: str, now: datetime, zone: tzinfo | None = None) -> Event:
    """One ``sgv`` or ``mbg`` entry as a glucose event."""
    kind = entry.get("type")
    value = entry.get(kind) if kind in ("sgv", "mbg") else None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise NightscoutRefusal(f"entry of type {kind!r} has no {kind} value in mg/dL")
    ts = _when(entry, zone)
    payload = {"id": _id(entry), "patient": patient, "ts": ts.isoformat(), "kind": "glucose", "mg_dl": value}
    return _validated(payload, now)


def treatment_events(
    treatment: dict, patient: str, bolus_insulin: Insulin, now: datetime, zone: tzinfo | None = None
) -> list[Event]:
    """The events of one treatment: a meter check, a meal, a bolus, or none (raises when unusable)."""
    kind = str(treatment.get("eventType", ""))
    found: list[tuple[str, dict]] = []
    glucose = treatment.get("glucose")
    if glucose not in (None, "") and kind == "BG Check":
        units = str(treatment.get("units", "")).lower()
        if units not in ("mg/dl", "mmol"):
            raise NightscoutRefusal("a BG Check without units (mg/dl or mmol) is not used")
        try:
            value = float(glucose)
        except (TypeError, ValueError):
            raise NightscoutRefusal(f"glucose {str(glucose)[:20]!r} is not a number") from None
        found.append(("glucose", {"kind": "glucose", "mg_dl": value * MG_DL_PER_MMOL_L if units == "mmol" else value}))
    carbs = treatment.get("carbs")
    if isinstance(carbs, int | float) and carbs > 0 and kind in MEAL_TYPES:
        found.append(("meal", {"kind": "meal", "size": "typical", "carbs_g": carbs}))
    insulin = treatment.get("insulin")
    if isinstance(insulin, int | float) and insulin > 0 and kind in BOLUS_TYPES:
        found.append(("insulin", {"kind": "insulin", "insulin": bolus_insulin.value, "units": insulin}))
    if not found:
        return []
    ts = _when(treatment, zone).isoformat()
    single = len(found) == 1
    return [
        _validated({"id": _id(treatment, "" if single else part), "patient": patient, "ts": ts, **fields}, now)
        for part, fields in found
    ]


def read_pulled(
    entries: Iterable[dict],
    treatments: Iterable[dict],
    patient: str,
    bolus_insulin: Insulin,
    now: datetime | None = None,
    zone: tzinfo | None = None,
) -> Pulled:
    """Every usable entry and treatment as events (in time order), the rest refused or skipped;
    ``zone``: the site's time zone, for items sent without ``utcOffset``."""
    now = now or datetime.now(UTC)
    out = Pulled()
    for entry in entries:
        if not isinstance(entry, dict):
            out.refused.append("an entry that is not a JSON object")
        elif entry.get("type") not in ("sgv", "mbg"):
            out.skip(f"entry {entry.get('type')}")
        else:
            try:
                out.events.append(entry_event(entry, patient, now, zone))
            except NightscoutRefusal as exc:
                out.refused.append(f"entry {entry.get('_id', '?')}: {exc}")
    for treatment in treatments:
        if not isinstance(treatment, dict):
            out.refused.append("a treatment that is not a JSON object")
            continue
        try:
            events = treatment_events(treatment, patient, bolus_insulin, now, zone)
        except NightscoutRefusal as exc:
            out.refused.append(f"treatment {treatment.get('_id', '?')} ({treatment.get('eventType')}): {exc}")
            continue
        if not events:
            out.skip(f"treatment {treatment.get('eventType')}")
        out.events.extend(events)
    out.events.sort(key=lambda e: e.ts)
    return out


# ------------------------------------------------------------------------------------ out
def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _offset(ts: datetime) -> int:
    offset = ts.utcoffset()
    return int(offset.total_seconds() // 60) if offset is not None else 0


def record_to_nightscout(events: Iterable[Event], device_id: str) -> dict[str, list[dict]]:
    """One patient's events as ``{"entries": […], "treatments": […]}`` for Nightscout's API v1."""
    ordered = sorted(events, key=lambda e: e.ts)
    meals = [e for e in ordered if e.kind is Kind.MEAL]
    bolused: set[str] = set()
    entries, treatments = [], []
    for event in ordered:
        base = {"identifier": event.id, "enteredBy": ENTERED_BY, "utcOffset": _offset(event.ts)}
        created = event.ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
        if event.kind is Kind.GLUCOSE:
            entries.append(
                {
                    "type": "mbg",
                    "mbg": round(event.reading),
                    "date": _ms(event.ts),
                    "dateString": created,
                    "device": f"{ENTERED_BY} {device_id}",
                    "identifier": event.id,
                    "utcOffset": base["utcOffset"],
                }
            )
        elif event.kind is Kind.INSULIN and event.insulin is not None and event.insulin.for_meals:
            meal = next((m for m in meals if abs(m.ts - event.ts) <= MEAL_WINDOW and m.id not in bolused), None)
            item = {**base, "created_at": created, "insulin": event.dose, "notes": f"{event.insulin.label} insulin"}
            if meal is not None and meal.carbs_g:
                bolused.add(meal.id)
                item.update(eventType="Meal Bolus", carbs=meal.carbs_g, mealIdentifier=meal.id)
            else:
                item["eventType"] = "Correction Bolus"
            treatments.append(item)
        elif event.kind is Kind.INSULIN and event.insulin is not None:
            note = f"{event.dose:g} U {event.insulin.label} insulin (basal injection, not a bolus)"
            treatments.append({**base, "created_at": created, "eventType": "Note", "notes": note})
        elif event.kind is Kind.MEAL and event.carbs_g:
            treatments.append({**base, "created_at": created, "eventType": "Carb Correction", "carbs": event.carbs_g})
    treatments = [t for t in treatments if not (t["eventType"] == "Carb Correction" and t["identifier"] in bolused)]
    return {"entries": entries, "treatments": treatments}
