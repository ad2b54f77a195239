"""The handlers of the device's inbound topics: events and visit histories.

Each takes one MQTT message and its arrival time, sends its answers through ``send`` and
returns what becomes of the broker's copy (:class:`~device.mqtt.dispatcher.Handled`). The bundle
transfers on ``model`` are handled by :class:`~device.mqtt.ota_installer.OtaInstaller`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import paho.mqtt.client as mqtt

from device.advisor import Advisor
from device.contract.messages import ErrorMessage, Message, Risk
from device.models.risk import RiskAssessor
from device.mqtt.dispatcher import Handled
from device.state.storage_recovery import StorageRecovery
from device.state.store import Store, StoreError
from domain.validation import ValidationError, decode_visit_history_bytes

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


Screen = Callable[[str, str | None], tuple[ErrorMessage | None, ErrorMessage | None]]


class VisitHistoryHandler:
    """``patients``: companion models → ``risk`` (never the dose), audited.

    The patient id passes the same guard as an event's (``screen``: a case twin of a known
    patient is refused, a look-alike accepted with a warning), so no id enters the device unchecked.
    """

    def __init__(
        self, risk: RiskAssessor, store: Store, send: Send, touch: Callable[[str], None], screen: Screen
    ) -> None:
        self.risk = risk
        self.store = store
        self.send = send
        self.touch = touch
        self.screen = screen

    def __call__(self, message: mqtt.MQTTMessage, received: float) -> Handled:
        for answer in self.assess(bytes(message.payload)):
            self.send(answer)
        return Handled.DONE

    def assess(self, raw: bytes, by: str | None = None) -> list[ErrorMessage | Risk]:
        """A visit history's answers — a refusal, or the risk after a look-alike warning, if any —
        with the risk audited (``by``: who asked on the page). The ``patients`` topic and
        ``POST /api/risk`` both answer this way."""
        try:
            answers = self._answers(raw)
        except Exception:  # a bug must not take the bedside device down
            log.exception("unexpected error while assessing a visit history")
            return [ErrorMessage(None, "internal error while assessing the visit history")]
        answer = answers[-1]
        if not isinstance(answer, Risk):
            return answers
        try:
            self.store.note_patient(answer.patient)
            self.store.audit(
                "risk_assessed",
                {
                    "mortality_1y": answer.mortality_1y,
                    "readmission_30d": answer.readmission_30d,
                    "versions": {n: m.version for n, m in answer.models.items()},
                    **({"by": by} if by else {}),
                },
                patient=answer.patient,
            )
        except StoreError as exc:
            log.error("risk not audited: %s", exc)
        self.touch(answer.patient)
        return answers

    def _answers(self, raw: bytes) -> list[ErrorMessage | Risk]:
        """A refusal, or the risk (after a look-alike warning, if any)."""
        try:
            history = decode_visit_history_bytes(raw)
        except ValidationError as exc:
            return [ErrorMessage(None, f"visit history rejected: {exc.reason}")]
        refusal, warning = self.screen(history.patient, None)
        if refusal is not None:
            return [ErrorMessage(None, f"visit history refused: {refusal.reason}")]
        return [*([warning] if warning else []), self.risk.score(history)]
