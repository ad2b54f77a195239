"""The bedside page's backend: what the page reads and records, from the store, the advisor and the
page actions (:class:`device.page.server.BedsideBackend`). No sockets: the HTTP server calls it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime, timedelta, tzinfo

from device.advisor import Advisor
from device.config import DeviceConfig
from device.contract.messages import (
    ConfirmDose,
    DaySummary,
    Decline,
    DeviceState,
    DeviceStatus,
    DosePoint,
    ErrorMessage,
    GlucoseNow,
    GlucosePoint,
    Health,
    PageStatus,
    PatientList,
    PatientView,
    PlanStep,
    PlanSummary,
    Risk,
    Series,
    WardAdherence,
)
from device.models.risk import RiskAssessor
from device.mqtt.communicator import Communicator
from device.page.actions import PageActions
from device.page.users import Identity, verify_pin
from device.rules.check_schedule import is_overdue
from device.rules.daily_summary import day_bounds, summarise, ward_adherence
from device.rules.plan import PlanTracker
from device.rules.ward import patient_row
from device.state.storage_recovery import StorageRecovery
from device.state.store import Store
from domain.events import Event, Kind
from domain.features import MINUTES_PER_DAY, context_at, feature

LOW_MG_DL = 70.0  # lows counted on the ward overview
PLAN_CHANGES_SHOWN = 10


def patient_view(advisor: Advisor, store: Store, patient: str, risk: Risk | None = None) -> PatientView:
    """What the bedside page shows for one patient, as of the device's now: the current glucose, the
    last 24 hours, the usual dose at this time of day, the live answer, the plan and the notices."""
    with advisor.reading(patient) as (history, tracker, now):
        since = now - timedelta(minutes=MINUTES_PER_DAY)
        glucose: list[GlucosePoint] = []
        doses: list[DosePoint] = []
        last_glucose: Event | None = None
        for e in history.events:
            if e.ts > now:
                break
            if e.kind is Kind.GLUCOSE:
                last_glucose = e
            if e.ts < since:
                continue
            if e.kind is Kind.GLUCOSE and e.mg_dl is not None:
                glucose.append(GlucosePoint(e.ts.isoformat(), e.mg_dl))
            elif e.kind is Kind.INSULIN and e.insulin is not None and e.units is not None:
                doses.append(DosePoint(e.ts.isoformat(), e.insulin.value, e.units))
        usual = None
        if history.events:
            context = context_at(history, now.astimezone(history.events[-1].ts.tzinfo))
            if context[feature("reg_same_slot_count")] > 0:
                usual = float(context[feature("reg_same_slot_median5")])
        plan = plan_summary(tracker, advisor.zone)
    current = None
    if last_glucose is not None and last_glucose.mg_dl is not None:
        age_min = round((now - last_glucose.ts).total_seconds() / 60.0, 1)
        current = GlucoseNow(last_glucose.mg_dl, last_glucose.ts.isoformat(), age_min)
    return PatientView(
        patient=patient,
        now=now.isoformat(),
        glucose=current,
        usual_units=usual,
        suggestion=advisor.latest_suggestion(patient),
        series=Series(glucose, doses),
        risk=risk,
        notices=store.notices(patient),
        plan=plan,
    )


def plan_summary(tracker: PlanTracker, zone: tzinfo) -> PlanSummary | None:
    """The patient's plan for the page: one line, the eating state and the latest changes, newest first."""
    plan = tracker.plan
    if plan is None:
        return None
    steps = [
        PlanStep(c.at.astimezone(zone).isoformat(), c.part, round(c.before, 2), round(c.after, 2), c.why)
        for c in reversed(plan.changes[-PLAN_CHANGES_SHOWN:])
    ]
    meals = [round(u, 2) for u in plan.meals]
    return PlanSummary(plan.describe(), round(plan.basal_units, 2), meals, tracker.nutrition, steps)


class PageBackend:
    """The page's view of one running device; ``device_status`` builds the device's own status."""

    def __init__(
        self,
        config: DeviceConfig,
        store: Store,
        advisor: Advisor,
        actions: PageActions,
        risk: RiskAssessor,
        recovery: StorageRecovery,
        link: Communicator,
        device_status: Callable[[DeviceState], DeviceStatus],
        assess_risk: Callable[[bytes, str | None], list[ErrorMessage | Risk]],
    ) -> None:
        self.config = config
        self.store = store
        self.advisor = advisor
        self.actions = actions
        self.risk = risk
        self.recovery = recovery
        self.link = link
        self.device_status = device_status
        self._assess_risk = assess_risk

    def assess_risk(self, raw: bytes, who: Identity) -> list[ErrorMessage | Risk]:
        """``POST /api/risk``: a visit history answered as on the ``patients`` topic, and published
        there too (``risk`` or ``errors``), so every reader of the device sees the same record."""
        answers = self._assess_risk(raw, who.user)
        for answer in answers:
            self.link.send(answer)
        return answers

    def health(self) -> Health:
        """Whether the device can answer now, and each reason it cannot (``GET /health``)."""
        status = self.status()
        problems = [
            problem
            for problem in (
                None if status.state == "online" else f"the device is {status.state}: not subscribed to its broker",
                None if status.broker_connected else (status.broker_problem or "the broker connection is down"),
                status.model_problem,
                status.storage_problem,
                status.clock_problem,
            )
            if problem
        ]
        return Health(not problems, status.state, status.device_id, list(dict.fromkeys(problems)))

    def metrics(self) -> str:
        """Every figure of the device in Prometheus text format (``GET /metrics``)."""
        return self.link.metrics.exposition(self.status())

    def status(self) -> PageStatus:
        """What the bedside page shows about the device itself."""
        current = self.device_status("online" if self.link.ready.is_set() else "starting")
        return PageStatus.of(
            current,
            broker=self.config.broker.display_url,
            broker_connected=self.link.connected.is_set(),
            broker_problem=self.link.problem,
            actions_need_pin=self.config.http.action_token is not None,
        )

    def patients(self, offset: int = 0, limit: int = 200, starting: str = "") -> PatientList:
        """One page of the known patients (with events or a risk assessment), in id order, at a glance."""
        ids = self.store.patients(offset, limit, starting)
        now = self.advisor.now()
        rows = []
        for patient in ids:
            suggestion = self.advisor.latest_suggestion(patient)
            response = None if suggestion is None else self.store.response_for(suggestion.id)
            state = None if suggestion is None else self.actions.state(suggestion, response)
            last = self.store.last_glucose(patient)
            glucose = None
            if last is not None and last.mg_dl is not None:
                glucose = GlucoseNow(last.mg_dl, last.ts.isoformat(), round((now - last.ts).total_seconds() / 60, 1))
            lows = self.store.count_lows(patient, now - timedelta(hours=24), LOW_MG_DL)
            retired = suggestion is not None and self.advisor.retired(suggestion.id) is not None
            rows.append(patient_row(patient, now, glucose, suggestion, response, state, lows, retired))
        return PatientList(ids, self.store.count_patients(), rows, now.isoformat())

    def has_patient(self, patient: str) -> bool:
        """Known to the device: stored, or first seen while the database refused writes (held in memory)."""
        return patient in self.advisor.writes.held_patients() or self.store.has_patient(patient)

    def storage_refused(self, reason: str) -> None:
        """A page action or sign-in was refused because the database refuses writes."""
        self.recovery.refused(reason)

    def patient_view(self, patient: str, who: Identity | None = None) -> PatientView:
        """The advisor's view of a patient: the answer, whether it can still be acted on, the next check;
        the companion risk only for a user allowed to see it."""
        risk = self.risk.latest(patient) if who is not None and who.may("see_risk") else None
        view = patient_view(self.advisor, self.store, patient, risk)
        profile = self.config.safety.for_patient(patient)
        extra: dict = {"pen_step_units": profile.pen_step_units, "max_single_units": profile.max_single_units}
        suggestion = view.suggestion
        if suggestion is not None:
            response = self.store.response_for(suggestion.id)
            state = self.actions.state(suggestion, response)
            check = suggestion.next_check_at
            if state.actionable:  # one "usual" on the screen: the one the live answer was made with
                extra["usual_units"] = suggestion.usual_units
            extra |= {
                "response": response,
                "retired": self.advisor.retired(suggestion.id),
                "actionable": state.actionable,
                "not_actionable": state.why_not,
                "expires_at": None if state.expires_at is None else state.expires_at.isoformat(),
                "next_check_at": check,
                "check_overdue": check is not None and is_overdue(datetime.fromisoformat(check), self.advisor.now()),
            }
        return replace(view, **extra)

    def day_summary(self, patient: str, day: date | None = None) -> DaySummary:
        """The clinician's day for ``patient`` (default: today in ward time)."""
        zone = self.config.zone
        day = day or self.advisor.now().astimezone(zone).date()
        start, end = day_bounds(day, zone)
        events = self.store.events_between(patient, start, end)
        answers = self.store.suggestions_between(patient, start, end)
        ids = [a.id for a in answers]
        responses, retired = self.store.responses_to(ids), self.store.retirements_for(ids)
        return summarise(patient, day, zone, events, answers, responses, retired, self.config.suggestion_expiry_s)

    def adherence(self, day: date | None = None) -> WardAdherence:
        """How the ward's suggested doses were followed that day (default today), by patient and reason."""
        zone = self.config.zone
        day = day or self.advisor.now().astimezone(zone).date()
        doses = self.store.doses_between(*day_bounds(day, zone), self.config.suggestion_expiry_s)
        return ward_adherence(day, zone, doses)

    def day_summary_pdf(self, patient: str, day: date | None = None) -> bytes:
        from device.page.summary_pdf import summary_pdf  # fpdf2 and Pillow load only when a PDF is asked for

        return summary_pdf(self.day_summary(patient, day), self.config.device_id)

    def confirm_dose(self, patient: str, request: ConfirmDose, who: Identity) -> tuple[Event, list[ErrorMessage]]:
        return self.actions.confirm_dose(patient, request, who)

    def decline(self, patient: str, request: Decline, who: Identity) -> None:
        self.actions.decline(patient, request, who)

    def acknowledge(self, patient: str, suggestion_id: str, who: Identity) -> None:
        self.actions.acknowledge(patient, suggestion_id, who)

    def enter(self, event: Event, who: Identity, reason: str | None = None) -> list[ErrorMessage]:
        return self.actions.enter(event, who, reason)

    def users_configured(self) -> bool:
        return self.store.count_users() > 0

    def sign_in(self, user: str, pin: str) -> Identity | None:
        """The user's identity when ``pin`` is theirs, else None (audited either way)."""
        found = self.store.user(user)
        if found is None or not verify_pin(pin, found.pin_hash):
            self.store.audit("sign_in_refused", {"user": user[:64]})
            return None
        self.store.audit("signed_in", {"user": user, "role": found.role})
        return Identity(user, found.role, found.patient)  # type: ignore[arg-type]  # the store holds checked roles

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(patient)`` whenever what the page shows may have changed."""
        self.advisor.subscribe(listener)
