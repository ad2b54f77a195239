"""``advisor device run``: the running device, wired from parts that each do one job.

* :class:`~device.communicator.Communicator` — the MQTT link (paho), subscriptions, publishing;
* :class:`~device.dispatcher.Dispatcher` — topic → handler table on a worker thread;
* :mod:`device.handlers` and :class:`~device.ota_installer.OtaInstaller` — one handler per
  inbound topic;
* :class:`~device.storage_recovery.StorageRecovery` — what happens while SQLite refuses writes;
* :class:`~device.delivery.DeliveryTracker` — which suggestions the broker has acknowledged;
* :class:`~device.page_actions.PageActions` and :class:`~device.web.BedsideServer` — the page.

Delivery guarantees (docs/contract.md, docs/reliability.md):

* events arrive at QoS 1 on a persistent session under a stable client id, so what is
  published while the device is down waits at the broker;
* an event is acknowledged (PUBACK, manual) only after it is committed to SQLite and its
  suggestion, if any, is committed and handed to the connection — so after a ``kill -9`` the
  broker redelivers exactly the unfinished events and stored ones are recognised by id;
* suggestions are delivered at least once: one counts as delivered only when the broker has
  acknowledged it (PUBACK); after a restart the unacknowledged ones still within the expiry
  are published again under the same id, older ones are dropped, never shown late;
* ``status`` is retained: ``online`` once subscribed and ready, ``offline`` as last will
  and on a clean stop (SIGTERM or SIGINT). It is built and published in one place,
  :meth:`DeviceService.publish_status`.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
import time
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from preprocessing.events import Event

from .advisor import Advisor, ModelSlot
from .bundle import trusted_keys
from .check_schedule import is_overdue
from .clock_watch import ClockWatch
from .communicator import Communicator
from .config import DeviceConfig
from .daily_summary import day_bounds, summarise, ward_adherence
from .delivery import DeliveryTracker
from .dispatcher import Dispatcher
from .handlers import EventHandler, VisitHistoryHandler
from .inference import DoseModel
from .messages import (
    Alert,
    ConfirmDose,
    DaySummary,
    Decline,
    DeviceState,
    DeviceStatus,
    ErrorMessage,
    GlucoseNow,
    PageStatus,
    PatientList,
    PatientView,
    WardAdherence,
)
from .models import load_dose_model
from .ota_installer import OtaInstaller
from .page_actions import PageActions
from .risk import RiskAssessor, load_risk_models
from .storage_recovery import StorageRecovery
from .store import Store, StoreError
from .users import Identity, verify_pin
from .ward import check_overdue_alert, patient_row
from .web import BedsideServer

log = logging.getLogger("advisor.device")
DATABASE_NAME = "advisor.sqlite3"
LOW_MG_DL = 70.0  # lows counted on the ward overview


class DeviceService:
    """One running device: store, models, advisor, MQTT link, handlers and bedside page."""

    def __init__(self, config: DeviceConfig) -> None:
        self.config = config
        self.started_at = datetime.now(UTC)
        self.store = Store(config.state_dir / DATABASE_NAME, config.db_busy_timeout_s)
        self.model_slot, self.model_notes = load_dose_model(config)
        self.advisor = Advisor(
            self.store,
            self.model_slot,
            config.safety,
            config.clock,
            max_histories=config.max_patients_in_memory,
            zone=config.zone,
            earliest=config.earliest_event,
            checks=config.checks,
            expiry_s=config.suggestion_expiry_s,
            profiles=config.profiles,
        )
        risk_models, risk_notes = load_risk_models(config.risk_bundles, trusted_keys(config.trust))
        self.model_notes.extend(risk_notes)
        for note in self.model_notes:
            log.warning(note)
        self.risk = RiskAssessor(risk_models)
        self.delivery = DeliveryTracker(self.store)
        self._resent = threading.Event()  # undelivered suggestions of an earlier run were published again
        self.link = Communicator(
            config, self.delivery, self._on_message, on_ready=self._on_ready, on_change=self.advisor.touch
        )
        self.recovery = StorageRecovery(
            self.advisor, config.max_held_events, self.link.ack, self.link.send, on_change=self.publish_status
        )
        topics = self.link.topics
        self.ota = OtaInstaller(config, self.store, self._running_version, self._use_model, self.link.send)
        self.dispatcher = Dispatcher(
            {
                topics.events: EventHandler(self.advisor, self.link.send, self.recovery),
                topics.patients: VisitHistoryHandler(
                    self.risk, self.store, self.link.send, self.advisor.touch, self.advisor.screen_patient
                ),
                topics.model: self.ota,
            },
            self.link.ack,
            self.recovery,
            housekeeping=self._housekeeping,
            room=self.delivery.wait_for_room,
        )
        self.actions = PageActions(
            config.device_id, self.store, self.advisor, self.link.send, config.suggestion_expiry_s, self.broker_problem
        )
        self._next_alert_check = 0.0
        self.clock_watch = ClockWatch()
        self.clock_problem: str | None = None
        self.web = BedsideServer(config.http, self)

    @property
    def ready(self) -> threading.Event:
        """Set while the device is subscribed and answering."""
        return self.link.ready

    def _on_message(self, message) -> None:
        self.dispatcher.submit(message)

    def _housekeeping(self) -> None:
        """On the worker thread, twice a second: record the broker's acknowledgements, end quiet transfers,
        and every ``alert_check_s`` announce checks that fell overdue."""
        self.delivery.flush()
        self.ota.expire()
        problem = self.clock_watch.check(datetime.now(UTC)) if self.config.clock == "wall" else None
        if problem != self.clock_problem:
            self.clock_problem = problem
            if problem:
                log.error("clock: %s", problem)
            self.publish_status()
        if time.monotonic() >= self._next_alert_check:
            self._next_alert_check = time.monotonic() + self.config.alert_check_s
            self.raise_alerts()
            self.answer_basal_times()

    def answer_basal_times(self) -> None:
        """Publish the basal answers whose time has come ([checks] basal_time; device/basal_time.py)."""
        try:
            messages = self.advisor.answer_basal_times()
        except (StoreError, sqlite3.Error) as exc:
            log.warning("basal-time answers not made: %s", exc)
            return
        for message in messages:
            self.link.send(message)

    def raise_alerts(self) -> list[Alert]:
        """Announce each newly overdue check once on ``alerts`` (kept in SQLite, so once across restarts)."""
        now = self.advisor.now()
        raised = []
        try:
            for suggestion in self.store.latest_suggestions():
                alert = check_overdue_alert(suggestion, now)
                if alert is not None and self.store.record_alert(alert):
                    raised.append(alert)
        except StoreError as exc:
            log.warning("overdue checks not announced: %s", exc)
            return []
        for alert in raised:
            log.warning("alert: %s", alert.message)
            self.link.send(alert)
            self.advisor.touch(alert.patient)
        if raised:
            self.publish_status()
        return raised

    def broker_problem(self) -> str | None:
        """Why the device cannot publish now, or None while linked to its broker."""
        if self.link.connected.is_set():
            return None
        return self.link.problem or "the broker connection is down"

    def _on_ready(self) -> None:
        """Subscribed: say so, and the first time, publish again what an earlier run left undelivered."""
        self.publish_status()
        if not self._resent.is_set():
            self._resent.set()
            self.dispatcher.run_soon(self._resend_undelivered)

    def _resend_undelivered(self) -> None:
        """Suggestions recorded but never acknowledged by the broker (the process died): same id, again."""
        pending = self.delivery.to_resend(self.config.suggestion_expiry_s, datetime.now(UTC))
        for suggestion, seconds_left in pending:
            self.link.send(suggestion, expires_in_s=seconds_left)
        if pending:
            log.warning("published %d suggestion(s) again that the broker had not acknowledged", len(pending))

    # ---------------------------------------------------------------- models
    def _running_version(self) -> str | None:
        return self.model_slot.model.bundle.version if self.model_slot.model else None

    def _use_model(self, model: DoseModel) -> None:
        """Switch to a newly installed dose model and say so."""
        self.model_slot, self.model_notes = ModelSlot(model), []
        self.advisor.swap_model(self.model_slot)
        self.publish_status()

    # ---------------------------------------------------------------- status
    def device_status(self, state: DeviceState) -> DeviceStatus:
        """The device's state as the retained ``status`` message says it."""
        return DeviceStatus(
            state=state,
            device_id=self.config.device_id,
            models=[self.model_slot.info],
            risk_models=self.risk.describe(),
            model_problem=self.model_slot.problem,
            storage_problem=self.recovery.problem,
            held_in_memory=self.advisor.held_events,
            notes=list(self.model_notes),
            clock=self.config.clock,
            timezone=self.config.timezone,
            started_at=self.started_at.isoformat(timespec="seconds"),
            checks_overdue=self.checks_overdue(),
            clock_problem=self.clock_problem,
        )

    def checks_overdue(self) -> list[str]:
        """Patients whose glucose check is past due."""
        now = self.advisor.now()
        try:
            latest = self.store.latest_suggestions()
        except StoreError:
            return []
        return sorted(s.patient for s in latest if check_overdue_alert(s, now) is not None)

    def publish_status(self) -> None:
        """Publish the current state on ``status`` (retained) when connected, and nudge the page."""
        if self.link.ready.is_set():
            self.link.send(self.device_status("online"))
        self.advisor.touch()

    # ------------------------------------------------------- the page's backend
    def status(self) -> PageStatus:
        """What the bedside page shows about the device itself."""
        current = self.device_status("online" if self.link.ready.is_set() else "starting")
        return PageStatus.of(
            current,
            broker=self.config.broker.display_url,
            broker_connected=self.link.connected.is_set(),
            broker_problem=self.link.problem,
            actions_need_pin=self.web.guard.required,
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
        return patient in self.advisor.held_patients() or self.store.has_patient(patient)

    def storage_refused(self, reason: str) -> None:
        """A page action or sign-in was refused because the database refuses writes."""
        self.recovery.refused(reason)

    def patient_view(self, patient: str, who: Identity | None = None) -> PatientView:
        """The advisor's view of a patient: the answer, whether it can still be acted on, the next check;
        the companion risk only for a user allowed to see it."""
        risk = self.risk.latest(patient) if who is not None and who.may("see_risk") else None
        view = self.advisor.patient_view(patient, risk)
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
        from .summary_pdf import summary_pdf  # fpdf2 and Pillow load only when a PDF is asked for

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

    def subscribe(self, listener) -> None:
        """Call ``listener(patient)`` whenever what the page shows may have changed."""
        self.advisor.subscribe(listener)

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Serve the page and start connecting; returns at once."""
        self.web.start()
        self.dispatcher.start()
        self.link.start(will=self.device_status("offline"))
        log.info(
            "device %s: bedside page at %s, model %s", self.config.device_id, self.web.url, self.model_slot.info.version
        )

    def stop(self) -> None:
        """Publish offline, disconnect, stop the worker and the page, close the database."""
        self.link.stop(self.device_status("offline"))
        self.dispatcher.stop()
        self.web.stop()
        self.store.close()

    def run_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then stop cleanly."""
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        self.start()
        done.wait()
        log.info("stopping")
        self.stop()
