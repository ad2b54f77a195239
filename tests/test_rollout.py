"""``advisor rollout``: the decisions case by case, the device's one allowed step back, then three real
devices on one Mosquitto — a canary that refuses the bundle, a good bundle, a canary that degrades
during its soak and is rolled back, and a rollout killed mid-soak that resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from device.config import BrokerConfig
from device.models import signing
from device.models.bundle import BundleError, default_bundle_path, open_bundle, pack_archive
from device.models.install import check_archive
from tools.mqtt_kit.client import EventPublisher
from tools.ward.rollout_plan import Health, Lines, RolloutState, degradation, waves

from .conftest import ROOT
from .device_process import DeviceProcess
from .test_flash import variant

PACKAGED = open_bundle(default_bundle_path("dose"))
NEW = "2099.01.01.000000"


def test_what_counts_as_degraded_names_the_figure_and_by_how_much():
    before = Health(NEW, "x", answers=100, held_back=10, errors=2)
    assert degradation(before, Health(NEW, "x", 100, 15, 3), NEW, Lines()) is None
    worse = degradation(before, Health(NEW, "x", 100, 35, 2), NEW, Lines())
    assert worse == "withheld or lowered 35% of its answers in the last hour, 10% before (+25%, line +10%)"
    errors = degradation(before, Health(NEW, "x", 40, 4, 20), NEW, Lines())
    assert errors is not None and errors.startswith("refused 33% of its inputs in the last hour, 2% before")
    assert degradation(before, Health("2000.01.01.000000", "y", 100, 10, 2), NEW, Lines()).startswith("runs 2000")
    assert "disk full" in degradation(before, Health(NEW, "x", 100, 10, 2, ("disk full",)), NEW, Lines())
    quiet = Health(NEW, "x", 3, 3, 0)  # too few answers in the hour to compare shares
    assert degradation(before, quiet, NEW, Lines()) is None


def test_waves_and_a_log_folded_back():
    assert waves(["a", "b", "c", "d", "e"], 1, 2) == [["a"], ["b", "c"], ["d", "e"]]
    assert waves(["a", "b", "c"], 1, None) == [["a"], ["b", "c"]]
    start = {"step": "start", "bundle_sha256": "s", "version": NEW, "devices": ["a", "b"], "canary": 1, "before": {}}
    lines = [start, {"step": "flashed", "device": "a"}, {"step": "soaked", "devices": ["a"]}]
    state = RolloutState.from_log("\n".join(json.dumps(x) for x in lines))
    assert (state.flashed, state.soaked, state.done, state.halted) == (["a"], ["a"], False, None)
    with pytest.raises(ValueError, match="does not begin with a start step"):
        RolloutState.from_log(json.dumps({"step": "flashed", "device": "a"}))


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    private, public = signing.generate(tmp_path_factory.mktemp("rollout-key"))
    return {"private": private, "public": public}


def test_a_device_steps_back_only_to_the_bundle_it_ran_before(tmp_path, keys):
    trusted = [*signing_keys(), signing.load_public(keys["public"])]
    older = pack_archive(default_bundle_path("dose"))
    with pytest.raises(BundleError, match="older than the running"):
        check_archive(older, trusted, NEW, False, "test")
    model = check_archive(older, trusted, NEW, False, "test", rollback_to=PACKAGED.manifest_sha256)
    assert model.bundle.version == PACKAGED.version


def signing_keys():
    from device.models.bundle import packaged_trusted_keys

    return packaged_trusted_keys()


@pytest.fixture()
def ward(mosquitto, tmp_path, keys):
    """Three devices that trust the test key and publish their status every second."""
    config = tmp_path / "device.toml"
    config.write_text("status_every_s = 1\n")
    devices = {}
    try:
        for name in ("roll-a", "roll-b", "roll-c"):
            extra = ("--config", str(config), "--trust", str(keys["public"]))
            devices[name] = DeviceProcess(tmp_path / name, mosquitto.url, name, extra=extra).start()
        yield devices
    finally:
        for device in devices.values():
            device.stop()


def rollout(
    mosquitto, bundle: Path, log: Path, trust: Path, soak: str = "2s", wait: bool = True
) -> subprocess.CompletedProcess | subprocess.Popen:
    command = [sys.executable, "-m", "tools.cli.main", "rollout", str(bundle), "--broker", mosquitto.url]
    command += ["--devices", "roll-a,roll-b,roll-c", "--canary", "1", "--soak", soak, "--log", str(log)]
    command += ["--trust", str(trust)]
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def steps(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def versions(ward) -> dict[str, str | None]:
    return {name: device.status().models[0].version for name, device in ward.items()}


@pytest.mark.e2e
def test_a_canary_that_refuses_the_bundle_halts_the_rollout_and_the_rest_stay_untouched(
    mosquitto, ward, keys, tmp_path
):
    broken = variant(tmp_path, keys["private"], golden_shift=0.5)  # fails the golden self-test
    done = rollout(mosquitto, broken, tmp_path / "broken.jsonl", keys["public"])
    assert done.returncode == 1 and "rollout halted: roll-a" in done.stderr and "self-test" in done.stderr
    assert versions(ward) == dict.fromkeys(ward, PACKAGED.version)
    kinds = [s["step"] for s in steps(tmp_path / "broken.jsonl")]
    assert kinds == ["start", "halted"], "roll-b and roll-c were never flashed"


@pytest.mark.e2e
def test_a_good_bundle_reaches_every_device_and_a_killed_rollout_resumes(mosquitto, ward, keys, tmp_path):
    good = variant(tmp_path, keys["private"])
    log = tmp_path / "good.jsonl"
    first = rollout(mosquitto, good, log, keys["public"], soak="10m", wait=False)
    assert isinstance(first, subprocess.Popen) and first.stdout is not None
    for line in first.stdout:  # killed once the canary has the bundle and its soak began
        if line.startswith("soaking roll-a"):
            break
    os.kill(first.pid, signal.SIGKILL)
    first.wait(30)
    assert [s["step"] for s in steps(log)] == ["start", "flashed"]
    assert versions(ward)["roll-a"] == NEW and versions(ward)["roll-b"] == PACKAGED.version
    again = rollout(mosquitto, good, log, keys["public"], soak="2s")
    assert again.returncode == 0, again.stderr
    assert versions(ward) == dict.fromkeys(ward, NEW)
    flashed = [s["device"] for s in steps(log) if s["step"] == "flashed"]
    assert flashed == ["roll-a", "roll-b", "roll-c"], "the canary was not flashed twice"
    assert steps(log)[-1]["step"] == "done"


@pytest.mark.e2e
def test_a_canary_that_degrades_during_its_soak_is_rolled_back(mosquitto, ward, keys, tmp_path):
    good = variant(tmp_path, keys["private"])
    log = tmp_path / "degrades.jsonl"
    running = rollout(mosquitto, good, log, keys["public"], soak="6s", wait=False)
    assert isinstance(running, subprocess.Popen) and running.stdout is not None
    for line in running.stdout:
        if line.startswith("soaking roll-a"):
            break
    sensor = EventPublisher(BrokerConfig(url=mosquitto.url), "roll-a", client_id="roll-sensor")
    sensor.wait_connected()
    for i in range(30):  # the canary refuses everything it is sent during its soak
        sensor.publish(json.dumps({"id": f"bad-{i}", "kind": "glucose"}).encode())
    sensor.flush()
    sensor.close()
    out, _ = running.communicate(timeout=300)
    assert running.returncode == 1 and "rollout halted: roll-a refused" in out, out
    assert [s["step"] for s in steps(log)] == ["start", "flashed", "halted", "rolled_back"]
    assert versions(ward) == dict.fromkeys(ward, PACKAGED.version), "the canary runs the bundle it ran before"
