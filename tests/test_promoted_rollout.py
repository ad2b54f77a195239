"""``advisor rollout --promoted ALIAS``: the dose bundle the MLflow registry's alias points at, and only
while its folder is still the bundle that was promoted (a real local SQLite tracking store)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from device.models.bundle import default_bundle_path, open_bundle
from model import tracking

from .conftest import ROOT


@pytest.fixture()
def promoted(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as run:
        mlflow.log_metric("auroc", 0.5)
    bundle_dir = tmp_path / "dose"
    shutil.copytree(default_bundle_path("dose"), bundle_dir)
    bundle = open_bundle(bundle_dir)
    tracking.promote("dose", bundle.version, bundle.manifest_sha256, bundle_dir, run.info.run_id, "production", uri)
    return uri, bundle_dir


def test_the_alias_gives_the_promoted_folder_and_refuses_it_once_changed(promoted):
    uri, bundle_dir = promoted
    assert tracking.promoted_bundle("dose", "production", uri) == bundle_dir
    with pytest.raises(tracking.TrackingError, match="no dose bundle is promoted to 'canary'"):
        tracking.promoted_bundle("dose", "canary", uri)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["version"] = "2099.01.01.000000"
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(tracking.TrackingError, match="no longer the dose bundle promoted to 'production'"):
        tracking.promoted_bundle("dose", "production", uri)


def _rollout(tmp_path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tools.cli.main", "rollout", *args, "--devices", "bed1"]
    command += ["--log", str(tmp_path / "rollout.jsonl"), "--broker", "mqtt://127.0.0.1:9"]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.mark.e2e
def test_the_command_takes_either_a_folder_or_an_alias(promoted, tmp_path):
    uri, bundle_dir = promoted
    both = _rollout(tmp_path, str(bundle_dir), "--promoted", "production", "--tracking-uri", uri)
    assert both.returncode == 2 and "give either BUNDLE or --promoted ALIAS" in both.stderr
    neither = _rollout(tmp_path)
    assert neither.returncode == 2 and "give either BUNDLE or --promoted ALIAS" in neither.stderr
    (bundle_dir / "manifest.json").write_text((bundle_dir / "manifest.json").read_text() + " ")
    changed = _rollout(tmp_path, "--promoted", "production", "--tracking-uri", uri)
    assert changed.returncode == 1 and "its manifest changed since" in changed.stderr
    assert not (tmp_path / "rollout.jsonl").exists(), "nothing was flashed or logged"
