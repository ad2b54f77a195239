"""Training runs recorded with MLflow: the settings, every metric of the report, the report and the
bundle as artifacts, the data's fingerprint; and the registry alias a rollout takes its bundle from.

The store is a local SQLite database with the artifacts beside it (``./mlruns``: nothing to start)
unless ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` names another (a tracking server's URL). The
run is opened before training, so the bundle's manifest names it (``training.mlflow_run_id``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ENV = "MLFLOW_TRACKING_URI"
LOCAL = Path("mlruns")
REGISTERED = {"dose": "advisor-dose", "mortality": "advisor-mortality", "readmission": "advisor-readmission"}


class TrackingError(Exception):
    """The tracking store cannot be used; the message names it."""


def tracking_uri(given: str | None) -> str:
    """``given``, else the environment's, else the local SQLite store under ``./mlruns``."""
    if given:
        return given
    if os.environ.get(ENV):
        return os.environ[ENV]
    LOCAL.mkdir(exist_ok=True)
    return f"sqlite:///{(LOCAL / 'mlflow.db').resolve()}"


def _mlflow():
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return mlflow


def _experiment(mlflow, name: str, uri: str) -> str:
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # keep a local store's artifacts beside its database
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


@contextmanager
def tracked_run(kind: str, uri: str, run_name: str) -> Iterator[str]:
    """An MLflow run of experiment ``advisor-<kind>`` open for the block; yields its id."""
    mlflow = _mlflow()
    try:
        mlflow.set_tracking_uri(uri)
        experiment = _experiment(mlflow, f"advisor-{kind}", uri)
        run = mlflow.start_run(experiment_id=experiment, run_name=run_name)
    except Exception as exc:  # MLflow raises many kinds for a store it cannot open
        raise TrackingError(f"cannot record the run at {uri}: {exc}") from None
    status = "FAILED"
    try:
        yield run.info.run_id
        status = "FINISHED"
    finally:
        mlflow.end_run(status=status)


def flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """Every finite number in a nested mapping, keyed by its path (``test.chronological.mae``)."""
    found: dict[str, float] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            found.update(flatten(item, name))
    elif isinstance(value, bool):
        return found
    elif isinstance(value, int | float) and math.isfinite(value):
        found[_metric_name(prefix)] = float(value)
    return found


def _metric_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in name)[:250]


def record(
    run_id: str,
    uri: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    artifacts: Mapping[str, Path],
    tags: Mapping[str, str],
) -> None:
    """Log the run's settings, metrics (flattened), artifacts (``name → file or folder``) and tags."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for key, text in flatten_params(params).items():
        client.log_param(run_id, key, text)
    for key, number in flatten(metrics).items():
        client.log_metric(run_id, key, number)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    for name, path in artifacts.items():
        if Path(path).is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=name)
        else:
            client.log_artifact(run_id, str(path), artifact_path=name)


def flatten_params(value: Any, prefix: str = "") -> dict[str, str]:
    """Settings as MLflow parameters: nested keys joined, values as text (at most 500 characters)."""
    found: dict[str, str] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            found.update(flatten_params(item, f"{prefix}.{key}" if prefix else str(key)))
    else:
        found[_metric_name(prefix)] = str(value)[:500]
    return found


def promote(name: str, version: str, sha256: str, path: Path, run_id: str, alias: str, uri: str) -> str:
    """Register the bundle's run as a version of ``advisor-<name>`` and point ``alias`` at it; the
    version's tags name the bundle (its path and manifest sha256). Returns the registry version."""
    mlflow = _mlflow()
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    registered = REGISTERED[name]
    try:
        client.get_run(run_id)
    except Exception:
        raise TrackingError(f"run {run_id} (named in the bundle's manifest) is not in the store {uri}") from None
    if not client.search_registered_models(filter_string=f"name = '{registered}'"):
        client.create_registered_model(registered)
    model = client.create_model_version(registered, source=f"runs:/{run_id}/bundle", run_id=run_id)
    for key, value in {"bundle_version": version, "bundle_sha256": sha256, "bundle_path": str(path)}.items():
        client.set_model_version_tag(registered, model.version, key, value)
    client.set_registered_model_alias(registered, alias, model.version)
    return str(model.version)


def promoted(name: str, alias: str, uri: str) -> dict[str, str]:
    """The bundle ``alias`` points at: its version, manifest sha256, path and run."""
    from mlflow.tracking import MlflowClient

    _mlflow().set_tracking_uri(uri)
    try:
        model = MlflowClient(uri).get_model_version_by_alias(REGISTERED[name], alias)
    except Exception:
        raise TrackingError(f"no {name} bundle is promoted to '{alias}' in {uri}") from None
    return {**model.tags, "run_id": model.run_id or "", "registry_version": str(model.version)}


def promoted_bundle(name: str, alias: str, uri: str) -> Path:
    """The folder of the bundle ``alias`` points at, checked to be the very bundle that was promoted
    (its manifest.json's sha256 as the registry recorded it): a folder rebuilt or edited since is refused.
    Its signature is for the rollout to check, as for any bundle."""
    import hashlib

    found = promoted(name, alias, uri)
    path = Path(found.get("bundle_path", ""))
    try:
        digest = hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()
    except OSError as exc:
        raise TrackingError(f"the {name} bundle promoted to '{alias}' ({path}) cannot be read: {exc}") from None
    if digest != found.get("bundle_sha256"):
        raise TrackingError(
            f"{path} is no longer the {name} bundle promoted to '{alias}' (version {found.get('bundle_version')}): "
            "its manifest changed since; promote the bundle again"
        )
    return path
