"""``advisor device run``: the running device, wired from parts that each do one job.

* :class:`~device.mqtt.communicator.Communicator` — the MQTT link (paho), subscriptions, publishing;
* :class:`~device.mqtt.dispatcher.Dispatcher` — topic → handler table on a worker thread;
* :mod:`device.mqtt.handlers` and :class:`~device.mqtt.ota_installer.OtaInstaller` — one handler per
  inbound topic;
* :class:`~device.state.storage_recovery.StorageRecovery` — what happens while SQLite refuses writes;
* :class:`~device.state.delivery.DeliveryTracker` — which suggestions the broker has acknowledged;
* :class:`~device.page.actions.PageActions`, :class:`~device.page.backend.PageBackend` and
  :class:`~device.page.server.BedsideServer` — the page: what a person records, what the page reads,
  the HTTP server.

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
from datetime import UTC, datetime, timedelta

from device.advisor import Advisor
from device.config import DeviceConfig
from device.contract.messages import Alert, DeviceState, DeviceStatus, WardOutcomes
from device.models.bundle import trusted_keys
from device.models.choice import ModelSlot, load_dose_model, load_shadow_model
from device.models.drift_watch import DriftWatch
from device.models.inference import DoseModel
from device.models.risk import RiskAssessor, load_risk_models
from device.mqtt.communicator import Communicator
from device.mqtt.dispatcher import Dispatcher
from device.mqtt.handlers import EventHandler, VisitHistoryHandler
from device.mqtt.ota_installer import OtaInstaller
from device.page.actions import PageActions
from device.page.backend import PageBackend
from device.page.server import BedsideServer
from device.rules.clock_watch import ClockWatch
from device.rules.outcomes import ward_outcomes
from device.rules.ward import check_overdue_alert
from device.state.delivery import DeliveryTracker
from device.state.storage_recovery import StorageRecovery
from device.state.store import DATABASE_NAME, Store, StoreError

OUTCOMES_EVERY_S = 300.0  # the ward's week changes slowly: read it from the store every 5 minutes
log = logging.getLogger("advisor.device")


class DeviceService:
    """One running device: store, models, advisor, MQTT link, handlers and bedside page."""

    def __init__(self, config: DeviceConfig) -> None:
        self.config = config
        self.started_at = datetime.now(UTC)
        self.store = Store(config.state_dir / DATABASE_NAME, config.db_busy_timeout_s)
        self.model_slot, self.model_notes = load_dose_model(config)
        shadow, shadow_notes = load_shadow_model(config)
        self.model_notes.extend(shadow_notes)
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
            drift=DriftWatch(config.drift),
            shadow=shadow,
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
            self.advisor.writes, config.max_held_events, self.link.ack, self.link.send, on_change=self.publish_status
        )
        topics = self.link.topics
        self.ota = OtaInstaller(
            config, self.store, self._running_version, self._use_model, self._running_sha, self.link.send
        )
        self.risk_desk = VisitHistoryHandler(
            self.risk, self.store, self.link.send, self.advisor.touch, self.advisor.screen_patient
        )
        self.dispatcher = Dispatcher(
            {
                topics.events: EventHandler(self.advisor, self.link.send, self.recovery),
                topics.patients: self.risk_desk,
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
        self._drifted: tuple[str, ...] = ()  # the watched features over the drift alert line
        self._next_outcomes = 0.0
        self._next_heartbeat = time.monotonic() + self.config.status_every_s
        self.outcomes: WardOutcomes | None = None  # the ward's week, read every OUTCOMES_EVERY_S
        self.clock_watch = ClockWatch()
        self.clock_problem: str | None = None
        self.page = PageBackend(
            config,
            self.store,
            self.advisor,
            self.actions,
            self.risk,
            self.recovery,
            self.link,
            self.device_status,
            self.risk_desk.assess,
        )
        self.web = BedsideServer(config.http, self.page)

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
            self._check_drift()
        if time.monotonic() >= self._next_heartbeat:
            self._next_heartbeat = time.monotonic() + self.config.status_every_s
            self.publish_status()
        if time.monotonic() >= self._next_outcomes:
            self._next_outcomes = time.monotonic() + OUTCOMES_EVERY_S
            self._read_outcomes()

    def _read_outcomes(self) -> None:
        """The ward's last ``outcomes.days`` from the store; the status is published when its alerts change."""
        c = self.config.outcomes
        until = self.advisor.now()
        since = until - timedelta(days=c.days)
        try:
            found = ward_outcomes(
                since,
                until,
                self.store.glucose_between(since, until),
                self.store.doses_between(since, until, self.config.suggestion_expiry_s),
                self.store.given_against_model(since, until),
                c.below_70_alert,
                c.below_54_alert,
                c.min_readings,
            )
        except StoreError as exc:
            log.warning("outcomes not read: %s", exc)
            return
        changed = self.outcomes is None or found.alerts != self.outcomes.alerts
        self.outcomes = found
        for alert in found.alerts if changed else []:
            log.warning("outcomes: %s", alert)
        if changed:
            self.publish_status()

    def _check_drift(self) -> None:
        """Log and publish the status when the drift alert starts or ends."""
        drift = self.advisor.drift.status(self.model_slot.model) if self.advisor.drift else None
        drifted = tuple(drift.drifted) if drift else ()
        if drifted != self._drifted:
            self._drifted = drifted
            if drift is not None and drifted:
                log.warning("drift: %s", drift.note)
            self.publish_status()

    def answer_basal_times(self) -> None:
        """Publish the basal answers whose time has come ([checks] basal_time; device/rules/basal_time.py)."""
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

    def _running_sha(self) -> str | None:
        return self.model_slot.model.bundle.manifest_sha256 if self.model_slot.model else None

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
            held_in_memory=self.advisor.writes.held_events,
            notes=list(self.model_notes),
            clock=self.config.clock,
            timezone=self.config.timezone,
            started_at=self.started_at.isoformat(timespec="seconds"),
            checks_overdue=self.checks_overdue(),
            clock_problem=self.clock_problem,
            drift=self.advisor.drift.status(self.model_slot.model) if self.advisor.drift else None,
            outcomes=self.outcomes,
            activity=self.link.metrics.activity() if state != "offline" else None,
            ward=self.config.ward,
            published_at=datetime.now(UTC).isoformat(timespec="seconds"),
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
