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
import threading
from datetime import UTC, datetime

from preprocessing.events import Event

from .advisor import Advisor, ModelSlot
from .bundle import trusted_keys
from .communicator import Communicator
from .config import DeviceConfig
from .delivery import DeliveryTracker
from .dispatcher import Dispatcher
from .handlers import EventHandler, VisitHistoryHandler
from .inference import DoseModel
from .messages import DeviceState, DeviceStatus, PageStatus, PatientList, PatientView
from .models import load_dose_model
from .ota_installer import OtaInstaller
from .page_actions import PageActions
from .risk import RiskAssessor, load_risk_models
from .storage_recovery import StorageRecovery
from .store import Store
from .web import BedsideServer

log = logging.getLogger("advisor.device")
DATABASE_NAME = "advisor.sqlite3"


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
                topics.patients: VisitHistoryHandler(self.risk, self.store, self.link.send, self.advisor.touch),
                topics.model: self.ota,
            },
            self.link.ack,
            self.recovery,
            housekeeping=self._housekeeping,
            room=self.delivery.wait_for_room,
        )
        self.actions = PageActions(config.device_id, self.store, self.advisor, self.link.send)
        self.web = BedsideServer(config.http, self)

    @property
    def ready(self) -> threading.Event:
        """Set while the device is subscribed and answering."""
        return self.link.ready

    def _on_message(self, message) -> None:
        self.dispatcher.submit(message)

    def _housekeeping(self) -> None:
        """On the worker thread, twice a second: record the broker's acknowledgements, end quiet transfers."""
        self.delivery.flush()
        self.ota.expire()

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
        )

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
        """One page of the known patients (with events or a risk assessment), in id order."""
        return PatientList(self.store.patients(offset, limit, starting), self.store.count_patients())

    def has_patient(self, patient: str) -> bool:
        return self.store.has_patient(patient)

    def patient_view(self, patient: str) -> PatientView:
        """The advisor's view of a patient plus the latest risk context."""
        return self.advisor.patient_view(patient, self.risk.latest(patient))

    def confirm_dose(self, patient: str, suggestion_id: str, units: float) -> Event:
        return self.actions.confirm_dose(patient, suggestion_id, units)

    def acknowledge(self, patient: str, suggestion_id: str) -> None:
        self.actions.acknowledge(patient, suggestion_id)

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
