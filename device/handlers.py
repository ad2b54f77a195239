"""The handlers of the device's inbound topics: events and visit histories.

Each takes one MQTT message and its arrival time, sends its answers through ``send`` and
returns what becomes of the broker's copy (:class:`~device.dispatcher.Handled`). The bundle
transfers on ``model`` are handled by :class:`~device.ota_installer.OtaInstaller`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import paho.mqtt.client as mqtt

from .advisor import Advisor
from .dispatcher import Handled
from .messages import ErrorMessage, Message
from .risk import RiskAssessor
from .storage_recovery import StorageRecovery
from .store import Store, StoreError

log = logging.getLogger("advisor.device")
Send = Callable[[Message], object]


class EventHandler:
    """``events``: the advisor stores the event and answers; storage trouble holds it in memory."""

    def __init__(self, advisor: Advisor, send: Send, recovery: StorageRecovery) -> None:
        self.advisor = advisor
        self.send = send
        self.recovery = recovery

    def __call__(self, message: mqtt.MQTTMessage, received: float) -> Handled:
        try:
            outcome = self.advisor.handle(bytes(message.payload), received)
        except StoreError as exc:
            log.error("%s", exc)
            self.send(ErrorMessage(None, f"event not stored: {exc}"))
            return Handled.RETRY
        except Exception:  # a bug must not take the bedside device down
            log.exception("unexpected error while handling an event")
            self.send(ErrorMessage(None, "internal error while handling the event"))
            return Handled.DONE
        for answer in outcome.messages:
            self.send(answer)
        if outcome.unstored is not None:
            self.recovery.hold(outcome.unstored, outcome.event.id if outcome.event else None, message)
            return Handled.HELD
        return Handled.DONE


class VisitHistoryHandler:
    """``patients``: companion models → ``risk`` (never the dose), audited."""

    def __init__(self, risk: RiskAssessor, store: Store, send: Send, touch: Callable[[str], None]) -> None:
        self.risk = risk
        self.store = store
        self.send = send
        self.touch = touch

    def __call__(self, message: mqtt.MQTTMessage, received: float) -> Handled:
        try:
            answer = self.risk.assess(bytes(message.payload))
        except Exception:  # a bug must not take the bedside device down
            log.exception("unexpected error while assessing a visit history")
            self.send(ErrorMessage(None, "internal error while assessing the visit history"))
            return Handled.DONE
        self.send(answer)
        if isinstance(answer, ErrorMessage):
            return Handled.DONE
        try:
            self.store.note_patient(answer.patient)
            self.store.audit(
                "risk_assessed",
                {
                    "mortality_1y": answer.mortality_1y,
                    "readmission_30d": answer.readmission_30d,
                    "versions": {n: m.version for n, m in answer.models.items()},
                },
                patient=answer.patient,
            )
        except StoreError as exc:
            log.error("risk not audited: %s", exc)
        self.touch(answer.patient)
        return Handled.DONE
