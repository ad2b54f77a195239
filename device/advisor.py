"""The device's core: event in → stored, history updated → supervised suggestion out.

No sockets here: :meth:`Advisor.handle` takes a payload and returns the messages to publish,
so the whole decision path is testable without a broker. The MQTT service calls it from its
network thread; the bedside page reads :meth:`Advisor.patient_view`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo

import numpy as np

from device.config import ChecksConfig, SafetyConfig
from device.contract.messages import ErrorMessage, Response, Retired, ShadowAnswer, Suggestion
from device.models.choice import ModelSlot
from device.models.drift_watch import DriftWatch
from device.rules.basal_time import basal_answer_due, basal_request_id
from device.rules.check_schedule import next_check
from device.rules.decision import decide_at
from device.rules.dose_responses import expires_at
from device.rules.patient_ids import case_twin, lookalike
from device.rules.plan import PlanTracker
from device.rules.retirement import RETIRING_KINDS, answers, retirement
from device.rules.safety import measure_now
from device.state.store import Added, Store, StoreError
from device.state.write_behind import WriteBehind
from domain.events import Event, Insulin, Kind, PatientProfile
from domain.features import FeatureSpec, OutOfOrderError, PatientHistory
from domain.validation import ValidationError, decode_event

DEFAULT_MAX_HISTORIES = 500
DEFAULT_EXPIRY_S = 900.0
MAX_TIMED_ANSWERS = 10_000  # answers whose age is kept on the monotonic clock (the newest)
SECOND_DOSE_MIN = 30.0  # two doses of one insulin this close are flagged for a person to check

log = logging.getLogger("advisor.device")


@dataclass(slots=True)
class Outcome:
    """What handling one payload produced: the answers to publish, and what became of the event."""

    messages: list[Suggestion | ErrorMessage | ShadowAnswer] = field(default_factory=list)
    event: Event | None = None
    added: Added | None = None
    unstored: str | None = None  # why the event or its suggestion is held in memory, not yet in SQLite

    @property
    def suggestion(self) -> Suggestion | None:
        return next((m for m in self.messages if isinstance(m, Suggestion)), None)

    @property
    def errors(self) -> list[ErrorMessage]:
        return [m for m in self.messages if isinstance(m, ErrorMessage)]


def suggestion_id(event_id: str) -> str:
    """One suggestion per triggering event, so its id follows from the event's."""
    return f"s-{event_id}"


class Advisor:
    """Per-patient histories, the model and the safety supervisor behind one lock."""

    def __init__(
        self,
        store: Store,
        model: ModelSlot,
        safety: SafetyConfig,
        clock: str = "wall",
        wall_clock: Callable[[], datetime] | None = None,
        max_histories: int = DEFAULT_MAX_HISTORIES,
        zone: tzinfo = UTC,
        earliest: datetime | None = None,
        checks: ChecksConfig | None = None,
        expiry_s: float = DEFAULT_EXPIRY_S,
        monotonic: Callable[[], float] = time.monotonic,
        profiles: dict[str, PatientProfile] | None = None,
        drift: DriftWatch | None = None,
        shadow: ModelSlot | None = None,
    ) -> None:
        """``max_histories`` bounds the patients kept in memory (the least recently used are rebuilt
        from SQLite); ``zone`` is the ward's time zone, in which time of day is read; events before
        ``earliest`` are refused; ``checks``: when glucose checks are due; ``expiry_s``: how long an
        answer may be acted on; ``monotonic``: the clock no wall-clock step moves, for answers' ages;
        ``profiles``: patients' profiles from the config, each starting a dosing plan until a
        ``profile`` event updates it; ``drift``: counts the model's inputs against its training data.
        """
        self.profiles = profiles or {}
        self.drift = drift
        self.shadow = shadow  # a candidate bundle answering beside the live one, never shown
        self.expiry_s = expiry_s
        self._monotonic = monotonic
        self.store = store
        self.checks = checks or ChecksConfig()
        self.max_histories = max_histories
        self.zone = zone
        self.earliest = earliest
        self.model = model
        self.safety = safety
        self.clock = clock
        self._wall = wall_clock or (lambda: datetime.now(UTC))
        self.spec: FeatureSpec = model.model.spec if model.model else FeatureSpec()
        self._histories: OrderedDict[str, PatientHistory] = OrderedDict()
        self._plans: dict[str, PlanTracker] = {}  # the dosing plan of each patient in _histories
        self._latest_ts: datetime | None = None
        self._latest_wall: datetime | None = None  # the wall time the newest event arrived (event clock)
        self._lock = threading.RLock()
        self._listeners: list[Callable[[str], None]] = []
        self.writes = WriteBehind(store)  # what SQLite refuses waits in memory, read back as if stored
        self._made: OrderedDict[str, float] = OrderedDict()  # suggestion id → time.monotonic() when made

    # ---------------------------------------------------------------- listeners
    def subscribe(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(patient)`` whenever a patient's view may have changed."""
        self._listeners.append(listener)

    def touch(self, patient: str = "") -> None:
        """Tell listeners that ``patient`` (or, with ``""``, the device state) changed."""
        for listener in list(self._listeners):
            listener(patient)

    def swap_model(self, model: ModelSlot) -> None:
        """Use a new model from the next decision on; histories are rebuilt for its feature spec."""
        with self._lock:
            self.model = model
            self.spec = model.model.spec if model.model else FeatureSpec()
            self._histories.clear()
        self.touch()

    # ------------------------------------------------------------------- clock
    def now(self) -> datetime:
        """The device's "now": wall time; in event-clock mode the newest event's time, running on with
        the wall clock from its arrival (a replay that ends does not stop the ward's clock)."""
        if self.clock == "event" and self._latest_ts is not None and self._latest_wall is not None:
            return self._latest_ts + max(timedelta(0), self._wall() - self._latest_wall)
        return self._wall()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the advisor's lock: no event is handled meanwhile (a page action checks and records at once)."""
        with self._lock:
            yield

    def _decision_time(self, event: Event) -> datetime:
        if self.clock == "event":
            return event.ts
        wall = self._wall().astimezone(self.zone)
        return max(wall, event.ts)

    # ----------------------------------------------------------------- history
    def history(self, patient: str) -> PatientHistory:
        """The patient's in-memory history, loaded from the store on first use."""
        history = self._histories.get(patient)
        if history is None:
            return self._rebuild(patient)
        self._histories.move_to_end(patient)
        return history

    def _rebuild(self, patient: str) -> PatientHistory:
        history = PatientHistory(self.spec)
        events = [
            e if e.ts.tzinfo == self.zone else replace(e, ts=e.ts.astimezone(self.zone))
            for e in self.writes.events_for(patient)
        ]
        history.extend(events)
        tracker = PlanTracker.starting(self.profiles.get(patient))
        for event in events:
            tracker.add(event)
        if history.events:
            history.prune(history.events[-1].ts)
        self._histories[patient] = history
        self._plans[patient] = tracker
        self._histories.move_to_end(patient)
        while len(self._histories) > self.max_histories:
            evicted, _ = self._histories.popitem(last=False)  # the least recently used; SQLite has it all
            self._plans.pop(evicted, None)
        return history

    def plan(self, patient: str) -> PlanTracker:
        """The patient's dosing plan and eating state, as of their newest event."""
        with self._lock:
            self.history(patient)
            return self._plans[patient]

    def _remember(self, event: Event) -> None:
        if event.kind is Kind.REQUEST:
            return
        history = self._histories.get(event.patient)
        if history is None:
            history = self._rebuild(event.patient)  # the store already holds this event
        else:
            self._histories.move_to_end(event.patient)
            try:
                history.append(event)
                self._plans[event.patient].add(event)
            except OutOfOrderError:
                history = self._rebuild(event.patient)  # a late event: replay the stored log in order
        history.prune(history.events[-1].ts)
        if self._latest_ts is None or event.ts > self._latest_ts:
            self._latest_ts = event.ts
            self._latest_wall = self._wall()

    # ---------------------------------------------------------------- handling
    def handle(self, raw: bytes, received: float | None = None, durable: bool = False) -> Outcome:
        """Validate, persist and decide on one event payload; never raises for bad input.

        ``received`` is the ``time.perf_counter()`` of arrival, for the suggestion's latency.
        ``durable``: the caller answers a person only once the event is stored (a page entry), so a
        database that refuses writes raises :class:`StoreError` instead of holding it in memory.
        """
        received = time.perf_counter() if received is None else received
        outcome = Outcome()
        try:
            event = decode_event(raw, self._wall())
        except ValidationError as exc:
            outcome.messages.append(ErrorMessage(exc.event_id, exc.reason))
            return outcome
        with self._lock:
            event, refusal, warnings = self._screen(event)
            outcome.messages.extend(warnings)
            if refusal is not None:
                outcome.messages.append(refusal)
                return outcome
            outcome.event = event
            newest = self._newest_reading(event.patient) if event.kind is Kind.GLUCOSE else None
            changes = self._profile_changes(event)  # before the store holds it
            outcome.added, outcome.unstored = self.writes.add_event(event, durable)
            if outcome.added is Added.CONFLICT:
                outcome.messages.append(
                    ErrorMessage(
                        event.id,
                        "an event with this id was already accepted with different content; the first one is kept",
                    )
                )
                return outcome
            retired = None
            if outcome.added is Added.NEW:
                self._remember(event)
                if event.is_insulin:
                    outcome.messages.extend(self._likely_duplicate_dose(event))
                retired = self._retire_live_answer(event, outcome, changes)
            if newest is not None and event.ts < newest:  # a late reading is history, not a decision point
                if outcome.added is Added.NEW:
                    outcome.messages.append(self._late_reading(event, newest))
            elif answers(event, retired):
                suggestion = self._suggestion_for(event, received, outcome, retired)
                if suggestion is not None:
                    outcome.messages.append(suggestion)
            if self.writes.is_held(event.id):
                outcome.unstored = outcome.unstored or "the event is held in memory until the database recovers"
        self.touch(event.patient)
        return outcome

    def _screen(self, event: Event) -> tuple[Event, ErrorMessage | None, list[ErrorMessage]]:
        """Checks a valid event must still pass here: (the event in ward time, a refusal, warnings)."""
        warnings: list[ErrorMessage] = []
        if self.earliest is not None and event.ts < self.earliest:
            return (
                event,
                ErrorMessage(
                    event.id,
                    f"'ts' {event.ts.isoformat()} is before {self.earliest.date().isoformat()}, the earliest date "
                    "this device accepts (earliest_event_date): a clock that was never set?",
                ),
                warnings,
            )
        local = event.ts.astimezone(self.zone)
        if local.utcoffset() != event.ts.utcoffset():
            warnings.append(
                ErrorMessage(
                    event.id,
                    f"the offset of 'ts' ({_offset(event.ts)}) is not the ward's ({_offset(local)}, "
                    f"{self.zone}) at that moment; taken as {local.strftime('%Y-%m-%d %H:%M')} ward time: check the "
                    "sender's time zone",
                    level="warning",
                )
            )
            event = replace(event, ts=local)
        refusal, lookalike_warning = self.screen_patient(event.patient, event.id)
        if lookalike_warning is not None:
            warnings.append(lookalike_warning)
        return event, refusal, warnings

    def _newest_reading(self, patient: str) -> datetime | None:
        """The time of the patient's newest glucose reading known so far."""
        history = self._histories.get(patient)
        if history is not None:
            newest = history.newest_reading()
            return None if newest is None else newest.ts
        try:
            last = self.store.last_glucose(patient)
        except sqlite3.Error:
            return None
        return None if last is None else last.ts

    def _late_reading(self, event: Event, newest: datetime) -> ErrorMessage:
        """A reading older than one known (a meter synced late): kept, not answered; the current answer stands."""
        at, latest = (ts.astimezone(self.zone).strftime("%H:%M") for ts in (event.ts, newest))
        return ErrorMessage(
            event.id,
            f"a reading from {at} arrived after a newer one ({latest}): kept in the history, not answered; the "
            "current answer stands",
            level="warning",
        )

    def _likely_duplicate_dose(self, event: Event) -> list[ErrorMessage]:
        """Another dose of the same insulin within :data:`SECOND_DOSE_MIN` minutes under another id: say so.

        Both are counted as given; the notice (kept in the audit, shown on the page) asks a person
        to check whether it was given twice.
        """
        try:
            near = [
                e
                for e in self.store.doses_near(event.patient, event.ts, SECOND_DOSE_MIN)
                if e.id != event.id and e.insulin is event.insulin
            ]
        except sqlite3.Error:
            return []
        if not near:
            return []
        other = min(near, key=lambda e: abs((e.ts - event.ts).total_seconds()))
        insulin = event.insulin.label if event.insulin else ""
        apart = abs((other.ts - event.ts).total_seconds()) / 60.0
        at = event.ts.astimezone(self.zone).strftime("%H:%M")
        if other.units == event.units and apart < 1.0:
            notice = (
                f"likely duplicate dose: {event.dose:g} U {insulin} at {at} was also recorded as event "
                f"'{other.id}'; both are counted as given: check whether it was given once"
            )
        else:
            notice = (
                f"second {insulin} dose: {event.dose:g} U at {at} and {other.dose:g} U at "
                f"{other.ts.astimezone(self.zone).strftime('%H:%M')} (event '{other.id}'), {apart:.0f} min apart; both "
                "are counted as given: check whether both were given"
            )
        with contextlib.suppress(StoreError):
            self.store.audit(
                "duplicate_dose_warning",
                {"notice": notice, "other": other.id},
                patient=event.patient,
                event_id=event.id,
            )
        return [ErrorMessage(event.id, notice, level="warning")]

    def screen_patient(self, patient: str, message_id: str | None) -> tuple[ErrorMessage | None, ErrorMessage | None]:
        """A patient id not known yet that could be mistaken for a known one: (a refusal, a warning).

        Every way an id enters the device (an event, a visit history) passes here. Case-only
        differences are refused; look-alike ids are accepted with a warning, which the audit
        keeps so the page shows it (device/rules/patient_ids.py).
        """
        try:
            if self.store.has_patient(patient) or patient in self.writes.held_patients():
                return None, None
            similar = self.store.patients_like(patient)
        except sqlite3.Error:
            return None, None  # the database cannot tell; the event is judged on its own
        twin = case_twin(patient, similar)
        if twin is not None:
            return ErrorMessage(
                message_id,
                f"patient '{patient}' differs from the known patient '{twin}' only in letter case; "
                f"not accepted: send '{twin}' if that is the patient (ids are compared exactly)",
            ), None
        twin = lookalike(patient, similar)
        if twin is None:
            return None, None
        notice = (
            f"new patient id '{patient}' looks like the known patient '{twin}'; "
            "accepted as a different patient: check which one is meant before acting"
        )
        with contextlib.suppress(StoreError):
            self.store.audit(
                "patient_id_warning", {"notice": notice, "like": twin}, patient=patient, event_id=message_id
            )
        return None, ErrorMessage(message_id, notice, level="warning")

    def latest_suggestion(self, patient: str) -> Suggestion | None:
        """The patient's latest answer: one held in memory (the database refused it) before the stored ones."""
        return self.writes.latest_suggestion(patient)

    def record_given(
        self, suggestion: Suggestion, response: Response, event: Event, meal: Event | None = None
    ) -> tuple[Response | None, list[ErrorMessage]]:
        """A dose given for ``suggestion``: the response, its insulin event and the ``meal`` it is for (a
        pre-meal dose) in one commit, then in the history (they retire nothing: they answer the
        suggestion). Returns (the response recorded before, if another was quicker; the warnings about
        the dose). A database that refuses raises StoreError.
        """
        with self._lock:
            earlier = self.store.record_response(suggestion, response, event, meal)
            if earlier is not None:
                return earlier, []
            if meal is not None:
                self._remember(meal)
            self._remember(event)
            warnings = self._likely_duplicate_dose(event)
        self.touch(event.patient)
        return None, warnings

    # ------------------------------------------------------------- basal time
    def answer_basal_times(self) -> list[Suggestion | ErrorMessage | ShadowAnswer]:
        """Answer the long-acting dose of each patient whose basal time has come (device/rules/basal_time.py)."""
        messages: list[Suggestion | ErrorMessage | ShadowAnswer] = []
        if self.checks.default.basal_time is None and not any(s.basal_time for s in self.checks.patients.values()):
            return messages
        now = self.now()
        for patient in sorted(set(self.profiles) | set(self.store.patients_with_profile())):
            raw = self._basal_request(patient, now)
            if raw is not None:
                messages += self.handle(raw).messages
        return messages

    def _basal_request(self, patient: str, now: datetime) -> bytes | None:
        """The day's basal request of ``patient`` when it is due now and not made yet, as an event payload."""
        schedule = self.checks.for_patient(patient)
        if schedule.basal_time is None:
            return None

        def screen_busy() -> bool:
            live = self.live_answer(patient)
            return live is not None and (live.is_dose or bool(live.carbs_g))

        due = basal_answer_due(
            schedule.basal_time,
            now,
            self.zone,
            self._newest_reading(patient),
            self.safety.for_patient(patient).stale_glucose_min,
            schedule.counts_within_min,
            screen_busy,
        )
        if due is None:
            return None
        event_id = basal_request_id(patient, due)
        if self.writes.has_event(event_id) or self.plan(patient).plan is None:
            return None
        payload = {"id": event_id, "patient": patient, "ts": now.isoformat(), "kind": "request", "insulin": "long"}
        return json.dumps(payload).encode()

    # ------------------------------------------------------------ live answers
    def live_answer(self, patient: str) -> Suggestion | None:
        """The patient's answer that may still be acted on: the latest, not answered, not retired, not expired."""
        try:
            latest = self.latest_suggestion(patient)
            if latest is None or self.store.response_for(latest.id) is not None:
                return None
            if self.retired(latest.id) is not None:
                return None
        except sqlite3.Error:
            return None  # the database cannot tell; the page cannot record against it either
        profile = self.safety.for_patient(patient)
        end = expires_at(latest, self.expiry_s, profile)
        age = self.age_s(latest.id)
        lived = age is not None and age >= (end - datetime.fromisoformat(latest.ts)).total_seconds()
        return latest if self.now() < end and not lived else None

    def age_s(self, suggestion_id: str) -> float | None:
        """How long ago this device made the answer, on the monotonic clock (wall-clock mode, this run only)."""
        made = self._made.get(suggestion_id)
        return None if made is None or self.clock != "wall" else self._monotonic() - made

    def retired(self, suggestion_id: str) -> Retired | None:
        """Why a suggestion was retired by a later event, or None."""
        return self.writes.retirement_for(suggestion_id)

    def _profile_changes(self, event: Event) -> list[str] | None:
        """For a ``profile`` event, what it changes in the patient's profile (None: not a profile, or
        the patient's first)."""
        if event.kind is not Kind.PROFILE:
            return None
        self.history(event.patient)
        tracker = self._plans[event.patient]
        after = tracker.profile_after(event)
        if tracker.profile is None or after is None:
            return None
        return after.changes_from(tracker.profile)

    def _retire_live_answer(self, event: Event, outcome: Outcome, profile_changes: list[str] | None) -> Retired | None:
        """An event that bears on the patient's live answer retires it (device/rules/retirement.py)."""
        if event.kind not in RETIRING_KINDS:
            return None
        live = self.live_answer(event.patient)
        retired = None if live is None else retirement(live, event, self.zone, profile_changes)
        if retired is None:
            return None
        outcome.unstored = self.writes.record_retirement(event.patient, retired) or outcome.unstored
        return retired

    def _suggestion_for(
        self, event: Event, received: float, outcome: Outcome, replaces: Retired | None = None
    ) -> Suggestion | None:
        if self.writes.has_suggestion_for(event.id):
            return None  # sent before (the event is a redelivery): never send it twice
        request = event.kind is Kind.REQUEST
        decided = self.decide(
            event.patient, self._decision_time(event), event.id, request, replaces, event.insulin if request else None
        )
        suggestion = decided.with_latency(round((time.perf_counter() - received) * 1000.0, 3))
        self._made[suggestion.id] = self._monotonic()
        while len(self._made) > MAX_TIMED_ANSWERS:
            self._made.popitem(last=False)
        outcome.unstored = self.writes.record_sent(suggestion) or outcome.unstored
        if self.shadow is not None and self.shadow.model is not None:
            outcome.messages.append(self._shadow_answer(suggestion, event, request, replaces))
        return suggestion

    def _shadow_answer(self, live: Suggestion, event: Event, request: bool, replaces: Retired | None) -> ShadowAnswer:
        """The candidate bundle's answer to the same event, kept beside the live one (never shown)."""
        assert self.shadow is not None
        candidate = self.decide(
            event.patient,
            self._decision_time(event),
            event.id,
            request,
            replaces,
            event.insulin if request else None,
            slot=self.shadow,
        )
        answer = ShadowAnswer(
            live_id=live.id,
            patient=live.patient,
            event_id=live.event_id,
            ts=live.ts,
            status=candidate.status,
            units=candidate.units,
            model_units=candidate.model_units,
            rules=candidate.rules,
            model=candidate.model,
            live_status=live.status,
            live_units=live.units,
        )
        try:
            self.store.record_shadow(answer)
        except StoreError as exc:  # a candidate's answer is never worth holding a live one up
            log.warning("shadow answer not stored: %s", exc)
        return answer

    def decide(
        self,
        patient: str,
        at: datetime,
        event_id: str,
        request: bool = False,
        replaces: Retired | None = None,
        asked: Insulin | None = None,
        slot: ModelSlot | None = None,
    ) -> Suggestion:
        """The supervised suggestion for ``patient`` at ``at`` (docs/contract.md, "Suggestion").

        ``request``: a person asked for a dose (a ``request`` event), which makes one due;
        ``replaces``: the live answer that the triggering event retired; ``asked``: the insulin a
        request named (a basal preparation asks for the basal dose); ``slot``: another bundle than the
        live one (shadow mode).
        """
        slot = slot or self.model
        model, history = slot.model, self.history(patient)
        predict = None
        if model is not None:
            drift = self.drift if slot is self.model else None

            def predict(window: np.ndarray) -> float:
                if drift is not None:
                    drift.observe(model, window, patient)
                return model.predict(window)

        decision = decide_at(
            history,
            at,
            predict,
            self.safety.for_patient(patient),
            request,
            self._plans.get(patient),
            basal=asked is not None and not asked.for_meals,
            model_problem=None if model is not None else slot.problem or "no bundle",
        )
        model_units, inputs, verdict = decision.model_units, decision.inputs, decision.verdict
        recheck = None if verdict.recheck_min is None else at + timedelta(minutes=verdict.recheck_min)
        if measure_now(verdict, inputs):
            check = at  # no reading to count: the next check is now
        else:
            reading = at if inputs.glucose_age_min is None else at - timedelta(minutes=inputs.glucose_age_min)
            check = max(at, next_check(reading, recheck, self.checks.for_patient(patient), self.zone))
        return Suggestion(
            id=suggestion_id(event_id),
            patient=patient,
            event_id=event_id,
            ts=at.isoformat(),
            status=verdict.status,
            units=verdict.units,
            model_units=_finite_or_none(model_units),
            usual_units=inputs.usual_units,
            reasons=verdict.reasons,
            rules=verdict.rules,
            glucose_mg_dl=inputs.glucose_mg_dl,
            glucose_age_min=None if inputs.glucose_age_min is None else round(inputs.glucose_age_min, 1),
            iob_units=round(inputs.iob_units, 2),
            model=slot.info,
            due=inputs.due,
            recheck_at=None if recheck is None else recheck.isoformat(),
            carbs_g=verdict.carbs_g,
            next_check_at=check.isoformat(),
            replaces=replaces,
            insulin=(asked or _meal_insulin(history)).value,
            meal_first=verdict.meal_first,
        )

    # ------------------------------------------------------------------- views
    @contextlib.contextmanager
    def reading(self, patient: str) -> Iterator[tuple[PatientHistory, PlanTracker, datetime]]:
        """The patient's history and plan and the device's now, held still while the caller reads them
        (the worker thread adds events under the same lock)."""
        with self._lock:
            history = self.history(patient)
            yield history, self._plans[patient], self.now()


def _offset(ts: datetime) -> str:
    """A timestamp's UTC offset as ``+HH:MM``."""
    text = ts.strftime("%z")
    return f"{text[:3]}:{text[3:5]}"


def _meal_insulin(history: PatientHistory) -> Insulin:
    """The preparation of the patient's newest meal dose; regular when none is recorded."""
    newest = history.newest_meal_dose()
    return newest.insulin if newest is not None and newest.insulin is not None else Insulin.REGULAR


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, 3)
