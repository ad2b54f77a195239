"""``advisor rollout``: a signed bundle to a ward of devices in stages, with a soak and rollback.

The canaries get the bundle first. During the soak the tool watches their statuses; at its end a
canary that degraded (:func:`tools.ward.rollout_plan.degradation`) halts the rollout, and every
device of that wave that took the bundle is flashed back to the bundle it ran before (the device
accepts that one older bundle as a rollback). Otherwise the rest follow in waves, each soaked the
same way. Every step is appended to the rollout log as it is done; run the same command again
after the tool was killed and it goes on from there.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt

from device.config import BrokerConfig
from device.contract.messages import DeviceStatus
from device.contract.schema import SchemaError
from device.contract.topics import Topics
from device.models.bundle import open_bundle, pack_archive, trusted_keys
from device.mqtt.client import Subscriber
from tools.mqtt_kit.flash import FlashError, flash_over_mqtt
from tools.ward.fleet import read_statuses
from tools.ward.rollout_plan import Health, Lines, RolloutState, degradation, health_of, waves

HEARTBEAT_GRACE_S = 180.0  # how long past the soak a fresh status may take (three heartbeats)


class RolloutError(Exception):
    """The rollout cannot start or go on; the message says why and what to do."""


@dataclass(frozen=True)
class Rollout:
    """What to roll out where, and how carefully."""

    bundle: Path
    previous: Path
    devices: list[str]
    canary: int
    soak_s: float
    wave: int | None
    log: Path
    trust: tuple[Path, ...] = ()  # public keys besides the packaged ones (as the devices' trust)
    lines: Lines = field(default_factory=Lines)
    flash_timeout_s: float = 60.0


def run(plan: Rollout, broker: BrokerConfig, progress: Callable[[str], None] = print) -> RolloutState:
    """Carry the rollout on from where its log stands; the state at the end (done, or halted and why)."""
    keys = trusted_keys(plan.trust)
    new, old = open_bundle(plan.bundle, keys), open_bundle(plan.previous, keys)
    state = _resume(plan, new.manifest_sha256) or _start(plan, broker, new.manifest_sha256, new.version, old, progress)
    if state.done or state.halted:
        progress(f"the log says this rollout is {'done' if state.done else 'halted: ' + str(state.halted)}")
        return state
    archive, previous_archive = pack_archive(plan.bundle), pack_archive(plan.previous)
    for group in waves(state.devices, state.canary, plan.wave):
        if all(d in state.soaked for d in group):
            continue
        for device in group:
            if device in state.flashed:
                continue
            progress(f"flashing {device} with {state.version}")
            try:
                flash_over_mqtt(archive, broker, device, plan.flash_timeout_s)
            except FlashError as exc:
                return _halt(plan, state, group, f"{device}: {exc}", previous_archive, broker, progress)
            _log(plan.log, state, {"step": "flashed", "device": device})
        progress(f"soaking {', '.join(group)} for {plan.soak_s:g} s")
        after = _soak(broker, group, plan.soak_s)
        for device in group:
            health = after.get(device)
            why = (
                "sent no status during the soak"
                if health is None
                else degradation(state.before[device], health, state.version, plan.lines)
            )
            if why is not None:
                return _halt(plan, state, group, f"{device} {why}", previous_archive, broker, progress)
        _log(plan.log, state, {"step": "soaked", "devices": group})
        progress(f"{', '.join(group)}: no degradation; {len(state.soaked)} of {len(state.devices)} devices done")
    _log(plan.log, state, {"step": "done"})
    return state


def _resume(plan: Rollout, sha256: str) -> RolloutState | None:
    if not plan.log.exists():
        return None
    state = RolloutState.from_log(plan.log.read_text())
    if state.bundle_sha256 != sha256 or state.devices != plan.devices or state.canary != plan.canary:
        raise RolloutError(
            f"{plan.log} is the log of another rollout ({state.version} to {', '.join(state.devices)}); "
            "give a new --log for this one"
        )
    return state


def _start(plan: Rollout, broker: BrokerConfig, sha256: str, version: str, old, progress) -> RolloutState:
    statuses, _ = read_statuses(broker)
    before = {}
    for device in plan.devices:
        status = statuses.get(device)
        if status is None or status.state != "online":
            raise RolloutError(f"device {device} is not online (advisor fleet shows the ward); nothing was flashed")
        health = health_of(status)
        if health.sha256 != old.manifest_sha256:
            raise RolloutError(
                f"device {device} runs {health.version}, not --previous {old.version}: give the bundle it runs now "
                "as --previous, so that it can be rolled back to it; nothing was flashed"
            )
        before[device] = health
    state = RolloutState(sha256, version, list(plan.devices), plan.canary, before)
    start = {
        "step": "start",
        "bundle_sha256": sha256,
        "version": version,
        "previous": old.version,
        "devices": plan.devices,
        "canary": plan.canary,
        "before": {d: h.to_json() for d, h in before.items()},
    }
    plan.log.parent.mkdir(parents=True, exist_ok=True)
    _log(plan.log, state, start)
    progress(f"rollout of {version} to {len(plan.devices)} device(s), {plan.canary} canary; log {plan.log}")
    return state


def _halt(plan, state: RolloutState, group: list[str], why: str, previous_archive: bytes, broker, progress):
    progress(f"halted: {why}")
    _log(plan.log, state, {"step": "halted", "why": why})
    for device in group:
        if device not in state.flashed or device in state.rolled_back:
            continue
        progress(f"rolling {device} back to the bundle it ran before")
        try:
            flash_over_mqtt(previous_archive, broker, device, plan.flash_timeout_s)
        except FlashError as exc:
            progress(f"could not roll {device} back: {exc}; flash it by hand (advisor flash --previous bundle)")
            continue
        _log(plan.log, state, {"step": "rolled_back", "device": device})
    return state


def _soak(broker: BrokerConfig, devices: list[str], soak_s: float) -> dict[str, Health]:
    """Each device's health from its first status published after ``soak_s`` from now."""
    latest: dict[str, DeviceStatus] = {}
    topics = {Topics(d).status: d for d in devices}

    def keep(message: mqtt.MQTTMessage) -> None:
        try:
            latest[topics[message.topic]] = DeviceStatus.from_json(message.payload)
        except (KeyError, SchemaError, ValueError):
            return

    end = time.time() + soak_s

    def published(status: DeviceStatus) -> float:
        return datetime.fromisoformat(status.published_at).timestamp() if status.published_at else 0.0

    def fresh() -> bool:
        return time.time() >= end and all(d in latest and published(latest[d]) >= end - 1.0 for d in devices)

    reader = Subscriber(broker, f"advisor-rollout-{uuid.uuid4().hex[:12]}", list(topics), keep)
    try:
        reader.wait_subscribed()
        deadline = time.monotonic() + soak_s + HEARTBEAT_GRACE_S
        while not fresh() and time.monotonic() < deadline:
            reader.wait_until(fresh, min(1.0, max(0.0, deadline - time.monotonic())))
    finally:
        reader.close()
    return {d: health_of(s) for d, s in latest.items()}


def _log(path: Path, state: RolloutState, step: dict) -> None:
    """Append one step, durably, and fold it into ``state``."""
    step = {**step, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    with open(path, "a") as handle:
        handle.write(json.dumps(step) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    if step["step"] != "start":
        state.apply(step)
