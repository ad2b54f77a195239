"""``advisor device run``: the MQTT service around the :class:`Advisor`, plus the bedside page.

Delivery guarantees:

* events arrive at QoS 1 on a persistent session under a stable client id, so what is
  published while the device is down waits at the broker;
* an event is acknowledged (PUBACK, manual) only after it is committed to SQLite and its
  suggestion, if any, is committed and handed to the connection — so after a ``kill -9`` the
  broker redelivers exactly the unfinished events and stored ones are recognised by id;
* a suggestion is committed as sent just before it is published, so it is never sent twice
  (paho resends it after a reconnect while the process lives);
* events are handled by one worker thread fed through a bounded queue, so the network
  thread keeps reading and writing (confirmations are never stuck behind a backlog) and a
  flood of events pushes back on the broker instead of growing memory.
* ``status`` is retained: ``online`` once subscribed and ready, ``offline`` as last will
  and on a clean stop (SIGTERM or SIGINT).
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import threading
import time
import uuid
from datetime import datetime, timezone

import paho.mqtt.client as mqtt

from .advisor import ERROR, SUGGESTION, Advisor, ModelSlot
from .bundle import BundleError
from .config import DeviceConfig
from .install import check_archive, install_archive
from .models import load_dose_model, trusted_keys
from .mqtt_client import Will, connect_async, disable_nagle, expiring, make_client
from .ota import Receiver, TransferError
from .risk import RiskAssessor, load_risk_models
from .store import Store, StoreError
from .topics import Topics
from .web import BedsideServer

log = logging.getLogger("advisor.device")
DATABASE_NAME = "advisor.sqlite3"
WORK_QUEUE_MAX = 64
STORE_RETRY_S = 2.0  # while SQLite refuses writes, try again this often


class DeviceService:
    """One running device: store, model, advisor, MQTT link and bedside page."""

    def __init__(self, config: DeviceConfig) -> None:
        self.config = config
        self.topics = Topics(config.device_id)
        self.started_at = datetime.now(timezone.utc)
        self.store = Store(config.state_dir / DATABASE_NAME, config.db_busy_timeout_s)
        self.model_slot, self.model_notes = load_dose_model(config)
        for note in self.model_notes:
            log.warning(note)
        self.advisor = Advisor(self.store, self.model_slot, config.safety, config.clock)
        risk_models, risk_notes = load_risk_models(config.risk_bundles, trusted_keys(config))
        self.model_notes.extend(risk_notes)
        for note in risk_notes:
            log.warning(note)
        self.risk = RiskAssessor(risk_models)
        self.storage_problem: str | None = None
        self._unacked: list[tuple[int, int]] = []  # (mid, qos) of events held in memory, acked once stored
        self.ota = Receiver()
        self._expiry = expiring(config.broker, config.suggestion_expiry_s)
        self._work: queue.Queue = queue.Queue(maxsize=WORK_QUEUE_MAX)
        self._worker_thread = threading.Thread(target=self._worker, name="advisor-worker", daemon=True)
        self.connected = threading.Event()
        self.ready = threading.Event()
        self._stopping = threading.Event()
        self.client = make_client(
            config.broker, config.client_id, persistent=True, manual_ack=True,
            will=Will(self.topics.status, json.dumps(self._status("offline")).encode()),
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.web = BedsideServer(config.http, self)

    # ------------------------------------------------------------------ status
    def _status(self, state: str) -> dict:
        return {
            "state": state,
            "device_id": self.config.device_id,
            "models": [self.model_slot.info],
            "risk_models": self.risk.describe(),
            "model_problem": self.model_slot.problem,
            "storage_problem": self.storage_problem,
            "held_in_memory": self.advisor.held_events,
            "notes": self.model_notes,
            "clock": self.config.clock,
            "started_at": self.started_at.isoformat(timespec="seconds"),
        }

    def status(self) -> dict:
        """What the bedside page shows about the device itself."""
        return {**self._status("online" if self.ready.is_set() else "starting"),
                "broker": self.config.broker.display_url,
                "broker_connected": self.connected.is_set(),
                "actions_need_pin": self.web.guard.required}

    def patients(self) -> list[str]:
        """Patients with events or a risk assessment, for the page's list."""
        known = self.advisor.patients()
        return known + [p for p in self.risk.patients() if p not in known]

    def patient_view(self, patient: str) -> dict:
        """The advisor's view of a patient plus the latest risk context."""
        return {**self.advisor.patient_view(patient), "risk": self.risk.latest(patient)}

    # ------------------------------------------------------------ MQTT events
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker %s refused the connection: %s", self.config.broker.display_url, reason_code)
            return
        disable_nagle(client)
        self.connected.set()
        log.info("connected to %s (session present: %s)", self.config.broker.display_url, flags.session_present)
        client.subscribe([(self.topics.events, 1), (self.topics.model, 1), (self.topics.patients, 1)])
        self.advisor.touch()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("the broker refused the subscription to %s", self.topics.events)
            return
        client.publish(self.topics.status, json.dumps(self._status("online")), qos=1, retain=True)
        self.ready.set()
        self.advisor.touch()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.ready.clear()
        if not self._stopping.is_set():
            log.warning("lost the broker (%s); reconnecting with backoff", reason_code)
        self.advisor.touch()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        """Hand the message to the worker; the network thread stays free to read and write.

        The queue is bounded: when the worker falls behind, this call blocks, paho stops
        reading, and TCP pushes back on the broker, which keeps the rest in the session.
        (Mosquitto 2.0.11 was measured to ignore the MQTT 5 receive maximum once
        acknowledgements start flowing: it pushed 9,500 of 10,000 events unacknowledged.)
        """
        self._work.put((time.perf_counter(), message))

    def _worker(self) -> None:
        while True:
            while self.storage_problem and self.advisor.held_events >= self.config.max_held_events:
                # memory holds as much as allowed: take nothing new; the broker keeps the rest
                if self._stopping.wait(STORE_RETRY_S):
                    return
                self._retry_storage()
            try:
                item = self._work.get(timeout=STORE_RETRY_S if self.storage_problem else None)
            except queue.Empty:
                self._retry_storage()
                continue
            if item is None:
                return
            if self.storage_problem:
                self._retry_storage()
            self._handle_message(self.client, *item)

    def _storage_failed(self, reason: str, event_id: str | None) -> None:
        """SQLite refused a write: say so once, keep suggesting from memory."""
        if self.storage_problem is None:
            log.error("state database unavailable: %s; suggesting from memory until it recovers", reason)
            self.storage_problem = reason
            self._publish_error({"event_id": event_id, "reason": f"{reason}; suggesting from memory, "
                                 "the event is kept at the broker and stored when the database recovers"})
            self.client.publish(self.topics.status, json.dumps(self._status("online")), qos=1, retain=True)
            self.advisor.touch()

    def _retry_storage(self) -> None:
        """Store what was held in memory; then acknowledge the events the broker kept for us."""
        problem = self.advisor.flush_held()
        if problem is not None:
            return
        for mid, qos in self._unacked:
            self.client.ack(mid, qos)
        log.warning("state database recovered: %d held event(s) stored", len(self._unacked))
        self._unacked = []
        self.storage_problem = None
        self.client.publish(self.topics.status, json.dumps(self._status("online")), qos=1, retain=True)
        self.advisor.touch()

    def _handle_message(self, client, received: float, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.topics.model:
            self._on_model_message(message.payload)
            client.ack(message.mid, message.qos)
            return
        if message.topic == self.topics.patients:
            self._on_visit_history(message.payload)
            client.ack(message.mid, message.qos)
            return
        if message.topic != self.topics.events:
            client.ack(message.mid, message.qos)
            return
        try:
            outcome = self.advisor.handle(message.payload, received)
        except StoreError as exc:
            log.error("%s", exc)
            self._publish_error({"event_id": None, "reason": f"event not stored: {exc}"})
            return  # not acknowledged: the broker delivers it again
        except Exception:  # a bug must not take the bedside device down
            log.exception("unexpected error while handling an event")
            self._publish_error({"event_id": None, "reason": "internal error while handling the event"})
            client.ack(message.mid, message.qos)
            return
        for outgoing in outcome.messages:
            if outgoing.kind == ERROR:
                self._publish_error(outgoing.payload)
            elif outgoing.kind == SUGGESTION:
                self.client.publish(self.topics.suggestions, json.dumps(outgoing.payload), qos=1, retain=False,
                                    properties=self._expiry)
        if outcome.unstored is not None:
            self._storage_failed(outcome.unstored, outcome.event.id if outcome.event else None)
            self._unacked.append((message.mid, message.qos))  # acknowledged once it is in SQLite
            return
        client.ack(message.mid, message.qos)

    def _on_visit_history(self, raw: bytes) -> None:
        """A patient's visit history: companion models → ``risk`` (never the dose)."""
        try:
            result = self.risk.assess(raw)
        except Exception:  # a bug must not take the bedside device down
            log.exception("unexpected error while assessing a visit history")
            self._publish_error({"event_id": None, "reason": "internal error while assessing the visit history"})
            return
        if result.error is not None:
            self._publish_error(result.error)
            return
        risk = result.risk
        self.client.publish(self.topics.risk, json.dumps(risk), qos=1, retain=False)
        try:
            self.store.audit("risk_assessed", {"mortality_1y": risk["mortality_1y"],
                                               "readmission_30d": risk["readmission_30d"],
                                               "versions": {n: m["version"] for n, m in risk["models"].items()}},
                             patient=risk["patient"])
        except StoreError as exc:
            log.error("risk not audited: %s", exc)
        self.advisor.touch(risk["patient"])

    def _on_model_message(self, raw: bytes) -> None:
        """One message of an over-the-air bundle transfer; a complete one is checked and installed."""
        try:
            transfer, archive = self.ota.feed(raw)
        except TransferError as exc:
            self._model_ack({"transfer": exc.transfer, "accepted": False, "reason": exc.reason})
            return
        if archive is None:
            return
        current = self.model_slot.model.bundle.version if self.model_slot.model else None
        try:
            model = check_archive(archive, trusted_keys(self.config), current, self.config.allow_downgrade,
                                  f"transfer {transfer}")
            install_archive(self.config.state_dir, archive)
        except (BundleError, OSError) as exc:
            log.warning("rejected bundle transfer %s: %s", transfer, exc)
            self._model_ack({"transfer": transfer, "accepted": False, "reason": str(exc)})
            return
        self.model_slot, self.model_notes = ModelSlot(model), []
        self.advisor.swap_model(self.model_slot)
        log.info("installed dose bundle %s from transfer %s", model.bundle.version, transfer)
        self._model_ack({"transfer": transfer, "accepted": True, "name": model.bundle.name,
                         "version": model.bundle.version})
        self.client.publish(self.topics.status, json.dumps(self._status("online")), qos=1, retain=True)
        self.store.audit("bundle_installed", {"version": model.bundle.version, "transfer": transfer,
                                              "sha256": model.bundle.manifest_sha256})

    def _model_ack(self, payload: dict) -> None:
        self.client.publish(self.topics.model_ack, json.dumps(payload), qos=1, retain=False)

    def _publish_error(self, payload: dict) -> None:
        self.client.publish(self.topics.errors, json.dumps(payload), qos=1, retain=False)

    # ------------------------------------------------------------ page actions
    def confirm_dose(self, patient: str, suggestion_id: str, units: float) -> dict:
        """A nurse gave a dose: audit it and publish it as an insulin event."""
        suggestion = self.store.suggestion(suggestion_id)
        if suggestion is None or suggestion["patient"] != patient:
            raise ValueError("unknown suggestion for this patient")
        if suggestion["status"] != "suggest":
            raise ValueError("this suggestion is not a dose; nothing to confirm")
        now = self.advisor.now().astimezone(datetime.fromisoformat(suggestion["ts"]).tzinfo)
        event = {"id": f"{self.config.device_id}-given-{uuid.uuid4().hex[:12]}", "patient": patient,
                 "ts": now.isoformat(timespec="seconds"), "kind": "insulin", "insulin": "regular",
                 "units": units}
        self.store.audit("dose_confirmed", {"units": units, "suggested_units": suggestion["units"],
                                            "differs_from_suggestion": units != suggestion["units"]},
                         patient=patient, event_id=event["id"], suggestion_id=suggestion_id)
        self.client.publish(self.topics.events, json.dumps(event), qos=1)
        return event

    def acknowledge(self, patient: str, suggestion_id: str) -> None:
        """A nurse saw a withhold or insufficient-data answer: audit it."""
        suggestion = self.store.suggestion(suggestion_id)
        if suggestion is None or suggestion["patient"] != patient:
            raise ValueError("unknown suggestion for this patient")
        self.store.audit("acknowledged", {"status": suggestion["status"], "reasons": suggestion["reasons"]},
                         patient=patient, suggestion_id=suggestion_id)
        self.advisor.touch(patient)

    # --------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Serve the page and start connecting; returns at once."""
        self.web.start()
        self._worker_thread.start()
        connect_async(self.client, self.config.broker, persistent=True)
        self.client.loop_start()
        log.info("device %s: bedside page at %s, model %s", self.config.device_id, self.web.url,
                 self.model_slot.info.get("version"))

    def stop(self) -> None:
        """Publish offline, disconnect, stop the page and close the database."""
        self._stopping.set()
        if self.connected.is_set():
            info = self.client.publish(self.topics.status, json.dumps(self._status("offline")), qos=1, retain=True)
            info.wait_for_publish(timeout=2.0)
        self.client.disconnect()
        self.client.loop_stop()
        if self._worker_thread.is_alive():
            try:
                self._work.put(None, timeout=1.0)
            except queue.Full:
                pass  # a worker waiting for the database sees the stop flag instead
            self._worker_thread.join(10)
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
