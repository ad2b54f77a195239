"""Bundle transfers on ``model``: reassemble, check end to end, install atomically, swap, answer.

The transfer framing is :mod:`device.models.ota`; the checks and the durable install are
:mod:`device.models.install`. The answer on ``model/ack`` is one :class:`~device.contract.messages.ModelAck`
per transfer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import paho.mqtt.client as mqtt

from device.config import DeviceConfig
from device.contract.messages import Message, ModelAck
from device.models.bundle import BundleError, trusted_keys
from device.models.inference import DoseModel
from device.models.install import check_archive, install_archive, previous_bundle
from device.models.ota import Receiver, TransferError
from device.mqtt.dispatcher import Handled
from device.state.store import Store, StoreError

log = logging.getLogger("advisor.device")


class OtaInstaller:
    """Feeds the transfer receiver and installs what it completes."""

    def __init__(
        self,
        config: DeviceConfig,
        store: Store,
        running_version: Callable[[], str | None],
        use_model: Callable[[DoseModel], None],
        running_sha: Callable[[], str | None],
        send: Callable[[Message], object],
    ) -> None:
        """``use_model`` switches the device to a newly installed model."""
        self.config = config
        self.store = store
        self.receiver = Receiver()
        self._running_version = running_version
        self._running_sha = running_sha
        self._use_model = use_model
        self._send = send

    def __call__(self, message: mqtt.MQTTMessage, received: float) -> Handled:
        answer = self.feed(bytes(message.payload))
        self._answer_abandoned()
        if answer is not None:
            self._send(answer)
        return Handled.DONE

    def _answer_abandoned(self) -> None:
        while self.receiver.abandoned:
            refusal = self.receiver.abandoned.pop(0)
            log.warning("bundle transfer %s: %s", refusal.transfer, refusal.reason)
            self._send(ModelAck(refusal.transfer, accepted=False, reason=refusal.reason))

    def expire(self) -> None:
        """Abandon a transfer that went quiet, and tell its sender (called by the worker's housekeeping)."""
        refusal = self.receiver.expire()
        if refusal is not None:
            log.warning("bundle transfer %s: %s", refusal.transfer, refusal.reason)
            self._send(ModelAck(refusal.transfer, accepted=False, reason=refusal.reason))

    def feed(self, raw: bytes) -> ModelAck | None:
        """One transfer message; the answer once the transfer is complete or broken."""
        try:
            transfer, archive = self.receiver.feed(raw)
        except TransferError as exc:
            return ModelAck(exc.transfer, accepted=False, reason=exc.reason)
        if archive is None:
            return None
        try:
            model = check_archive(
                archive,
                trusted_keys(self.config.trust),
                self._running_version(),
                self.config.allow_downgrade,
                f"transfer {transfer}",
                rollback_to=previous_bundle(self.config.state_dir),
            )
            install_archive(self.config.state_dir, archive, replacing=self._running_sha())
        except (BundleError, OSError) as exc:
            log.warning("rejected bundle transfer %s: %s", transfer, exc)
            return ModelAck(transfer, accepted=False, reason=str(exc))
        self._use_model(model)
        log.info("installed dose bundle %s from transfer %s", model.bundle.version, transfer)
        try:
            self.store.audit(
                "bundle_installed",
                {"version": model.bundle.version, "transfer": transfer, "sha256": model.bundle.manifest_sha256},
            )
        except StoreError as exc:
            log.error("bundle installation not audited: %s", exc)
        return ModelAck(transfer, accepted=True, name=model.bundle.name, version=model.bundle.version)
