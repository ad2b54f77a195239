"""``advisor``: the command-line interface. Thin: parses options, calls the packages.

Heavy packages are imported inside each command, so ``advisor --help`` and the device
commands never load the training stack.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tools.cli import device_commands, firmware_commands, interop_commands, sim_commands, user_commands, ward_commands
from tools.cli.common import (
    KEY_OPTION,
    MIMIC_OPTION,
    OUT_OPTION,
    REPORT_OPTION,
    TRACKING_OPTION,
    default_aim94_dir,
    friendly,
    require_bundle_folder,
    require_modules,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="insulin-advisor", prog_name="advisor")
def main() -> None:
    """Bedside insulin-dosing advisor: decision support, not a certified medical device.

    A person confirms every dose; the advisor never doses.
    """


# ----------------------------------------------------------------------------- data
@main.group()
def data() -> None:
    """Inspect training data."""


@data.command("check")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the machine-readable summary.")
@friendly
def data_check(folder: Path, as_json: bool) -> None:
    """Parse an AIM-94 FOLDER and print records kept and rejected by reason."""
    from preprocessing import aim94

    report = aim94.check(aim94.read_folder(folder))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    click.echo(f"AIM-94 folder {folder}: {report.files} files, {report.lines} lines")
    click.echo(f"  kept      {report.kept:>7}")
    for reason, count in report.rejected.items():
        click.echo(f"  rejected  {count:>7}  {reason}")
    click.echo(f"  decision points (kept regular-insulin records): {report.decision_points}")
    total = report.kept + sum(report.rejected.values())
    click.echo(f"  every line accounted for: {'yes' if total == report.lines else 'NO'}")


@data.command("cohorts")
@MIMIC_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the cohorts as JSON.")
@click.option("--shard", metavar="K/N", help="Read only part K of N (the patients whose subject_id mod N is K-1).")
@click.option(
    "--shards",
    type=click.IntRange(1, 1024),
    help="Read all N parts, each in a fresh process, and add them up (memory per process about 1/N).",
)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Parts read at a time.")
@friendly
def data_cohorts(mimic_dir: Path, as_json: bool, shard: str | None, shards: int | None, workers: int) -> None:
    """Build the companion-model cohorts (docs/evaluation.md) and print the count after each step."""
    require_modules("train", "duckdb")
    from preprocessing.mimic import Shard
    from tools.data.cohort_report import cohort_report, run_shards

    if shard is not None and shards is not None:
        raise click.BadParameter(
            "give --shard K/N (one part) or --shards N (every part), not both", param_hint="--shard"
        )
    if shards is not None:
        report = run_shards(mimic_dir, shards, workers)
    else:
        report = cohort_report(mimic_dir, Shard.parse(shard) if shard is not None else None)
    _print_cohorts(report, str(mimic_dir), as_json)


@data.command("merge-cohorts")
@click.argument("parts", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the cohorts as JSON.")
@friendly
def data_merge_cohorts(parts: tuple[Path, ...], as_json: bool) -> None:
    """Add up the parts written by 'advisor data cohorts --shard K/N --json' on several machines."""
    from preprocessing.mimic import MimicError
    from tools.data.cohort_report import merge_reports

    loaded = []
    for path in parts:
        try:
            loaded.append(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MimicError(f"{path}: not a JSON cohort part ({exc})") from None
    _print_cohorts(merge_reports(loaded), f"{len(parts)} parts", as_json)


def _print_cohorts(report: dict, source: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    part = f" (shard {report['shard']})" if "shard" in report else ""
    click.echo(f"{report['layout']}{' ' + report['version'] if report['version'] else ''} at {source}{part}")
    for shard in report.get("shards", []):
        click.echo(f"  shard {shard['shard']}: {shard.get('seconds', '?')} s, peak {shard.get('peak_rss_mb', '?')} MB")
    for note in report["notes"]:
        click.echo(f"  note: {note}")
    for cohort in report["cohorts"]:
        if "error" in cohort:
            click.echo(f"\n  {cohort['error']}")
            continue
        click.echo(f"\n  {cohort['name']}: {cohort['size']} samples, {cohort['positives']} positive")
        for step in cohort["steps"]:
            click.echo(f"    {step['count']:>6}  {step['step']}")


@data.command("synth-mimic")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Folder to write.")
@click.option(
    "--scale",
    type=click.FloatRange(0, 2, min_open=True),
    default=0.01,
    show_default=True,
    help="Fraction of the release's row counts (1.0: full size).",
)
@click.option("--version", "release", type=click.Choice(["2.2", "3.1"]), default="3.1", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@friendly
def data_synth_mimic(out: Path, scale: float, release: str, seed: int) -> None:
    """Write a synthetic MIMIC-IV folder of the real shape and size (nothing in it is real)."""
    from tools.data.synth_mimic import generate

    if out.exists() and any(out.iterdir()):
        raise click.BadParameter(f"{out} is not empty", param_hint="--out")
    counts = generate(out, scale, release, seed, progress=lambda m: click.echo(m, err=True))
    click.echo(f"synthetic MIMIC-IV {release} at scale {scale:g} in {out} ({counts.seconds:.1f} s):")
    for table, rows in counts.rows.items():
        click.echo(f"  {table:<15} {rows:>12,} rows")


# ----------------------------------------------------------------------------- train
@main.group()
def train() -> None:
    """Train models and write signed bundles."""


def _patients(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    try:
        numbers = tuple(sorted({int(v) for v in value.split(",") if v.strip()}))
    except ValueError as exc:
        raise click.BadParameter("use comma-separated patient numbers, e.g. 1,2,3") from exc
    if not numbers or min(numbers) < 1:
        raise click.BadParameter("patient numbers start at 1")
    return numbers


@train.command("dose")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=default_aim94_dir,
    required=True,
    help="AIM-94 folder (default $ADVISOR_AIM94_DIR).",
)
@OUT_OPTION
@KEY_OPTION
@REPORT_OPTION
@click.option("--patients", help="Only these patient numbers, e.g. 1,2,3 (default: all).")
@click.option("--window", type=click.IntRange(2, 64), default=None, help="Window length in decision steps.")
@click.option("--max-epochs", type=click.IntRange(1, 10000), default=None, help="Upper bound on epochs.")
@click.option(
    "--ensemble",
    type=click.IntRange(1, 10),
    default=None,
    help="Networks averaged into the exported model (default 3; 1 trains three times faster).",
)
@click.option("--no-patient-folds", is_flag=True, help="Skip the leave-patients-out view (faster).")
@TRACKING_OPTION
@friendly
def train_dose(
    data_dir, out, key, report_dir, patients, window, max_epochs, ensemble, no_patient_folds, tracking_uri
) -> None:
    """Train the dose model, compare with baselines, export TFLite and write bundle + report (run tracked)."""
    require_modules("train", "keras", "tensorflow", "sklearn", "mlflow")

    from model import tracking

    uri = tracking.tracking_uri(tracking_uri)
    with tracking.tracked_run("dose", uri, out.name) as run_id:
        _train_dose(
            data_dir, out, key, report_dir, patients, window, max_epochs, ensemble, no_patient_folds, run_id, uri
        )
    click.echo(f"run: {run_id} in {uri}")


def _train_dose(data_dir, out, key, report_dir, patients, window, max_epochs, ensemble, no_patient_folds, run_id, uri):
    from dataclasses import replace

    from device.models.bundle import sign_bundle_dir
    from model import pipeline, report, tracking
    from model.evaluation import predict_unsigned_dir

    config = pipeline.DoseTrainingConfig(
        patients=_patients(patients), patient_folds=not no_patient_folds, run_id=run_id
    )
    if window is not None:
        config = replace(config, spec=replace(config.spec, window=window))
    if max_epochs is not None:
        config = replace(config, network=replace(config.network, max_epochs=max_epochs))
    if ensemble is not None:
        config = replace(config, network=replace(config.network, ensemble=ensemble))
    result = pipeline.train_dose(
        data_dir, out, config, predict_unsigned_dir, progress=lambda msg: click.echo(msg, err=True)
    )
    report_path = report.write_report(result, report_dir or out.with_name(out.name + "-report"))
    if key is not None:
        kid = sign_bundle_dir(out, key)
        click.echo(f"signed with key {kid}", err=True)
    else:
        click.echo(
            f"bundle is NOT signed; devices refuse it until you run 'advisor bundle sign {out} --key KEY'", err=True
        )
    manifest = result.manifest
    tracking.record(
        run_id,
        uri,
        params={
            "network": config.network.to_json(),
            "window": config.spec.window,
            "val_share": config.val_share,
            "patients": ",".join(map(str, config.patients or ())) or "all",
            "patient_folds": config.patient_folds,
        },
        metrics=manifest.metrics,
        artifacts={"report": report_path.parent, "bundle": out},
        tags={"data_fingerprint_sha256": manifest.data["fingerprint_sha256"], "bundle_version": manifest.version},
    )
    click.echo(report.metrics_table(result.metrics["chronological"]))
    click.echo(report.verdict(result.metrics["chronological"]))
    click.echo(f"bundle: {out}\nreport: {report_path}")


def _train_companion(
    task: str,
    mimic_dir: Path,
    out: Path,
    key: Path | None,
    report_dir: Path | None,
    index: str,
    folds: int,
    epochs: int | None,
    skipgram: bool,
    sample: int | None,
    l1_jobs: int | None,
    shap_patients: int | None,
    run_id: str,
    uri: str,
) -> None:
    from dataclasses import replace

    from device.models.bundle import sign_bundle_dir
    from model import companion, companion_report, tracking
    from model.evaluation import predict_unsigned_companion_dir

    config = companion.CompanionTrainingConfig(
        task=task, index=index, folds=folds, skipgram=skipgram, sample=sample, logistic_jobs=l1_jobs, run_id=run_id
    )
    if epochs is not None:
        config = replace(config, network=replace(config.network, epochs=epochs))
    if shap_patients is not None:
        config = replace(config, shap=replace(config.shap, network_samples=shap_patients))
    try:
        result = companion.train_companion(
            mimic_dir, out, config, predict_unsigned_companion_dir, progress=lambda msg: click.echo(msg, err=True)
        )
    except companion.CompanionError as exc:
        raise click.ClickException(str(exc)) from None
    report_path = companion_report.write_report(result, report_dir or out.with_name(out.name + "-report"))
    if key is not None:
        click.echo(f"signed with key {sign_bundle_dir(out, key)}", err=True)
    else:
        click.echo(
            f"bundle is NOT signed; devices refuse it until you run 'advisor bundle sign {out} --key KEY'", err=True
        )
    m = result.manifest
    tracking.record(
        run_id,
        uri,
        params={"task": task, "index": index, "folds": folds, "sample": sample or "all", **m.training},
        metrics=m.metrics,
        artifacts={"report": report_path.parent, "bundle": out},
        tags={"data_fingerprint_sha256": str(m.data.get("fingerprint_sha256")), "bundle_version": m.version},
    )
    click.echo(companion_report.comparison_table(result))
    if result.manifest.data["demo_trained"]:
        click.echo(companion.SMALL_DATA_NOTE)
    click.echo(f"bundle: {out}\nreport: {report_path}")


def _companion_command(task: str, summary: str):
    @train.command(task, help=summary)
    @MIMIC_OPTION
    @OUT_OPTION
    @KEY_OPTION
    @REPORT_OPTION
    @click.option(
        "--index",
        type=click.Choice(["auto", "hf", "all"]),
        default="auto",
        show_default=True,
        help="Readmission index events: heart-failure admissions, every admission, or hf when it has enough positives.",
    )
    @click.option(
        "--folds", type=click.IntRange(2, 20), default=5, show_default=True, help="Stratified cross-validation folds."
    )
    @click.option("--epochs", type=click.IntRange(1, 10000), default=None, help="Training epochs per network.")
    @click.option(
        "--skipgram-init",
        "skipgram",
        is_flag=True,
        help="Initialise code embeddings from skip-gram vectors of codes sharing an admission.",
    )
    @click.option(
        "--sample",
        type=click.IntRange(20, None),
        help="A quick run: about this many cohort samples (whole patients, at random) instead of all.",
    )
    @click.option(
        "--l1-jobs",
        type=click.IntRange(1, 64),
        default=None,
        help="L1 baseline folds fitted at a time, each in a worker process (default: 2 from 10,000 samples, else 1).",
    )
    @click.option(
        "--shap-patients",
        type=click.IntRange(1, 5000),
        help="Patients the exported network's SHAP explains (default 60; about 1.4 s each on two cores).",
    )
    @TRACKING_OPTION
    @friendly
    def command(
        mimic_dir, out, key, report_dir, index, folds, epochs, skipgram, sample, l1_jobs, shap_patients, tracking_uri
    ) -> None:
        require_modules("train", "keras", "tensorflow", "sklearn", "imblearn", "duckdb", "mlflow")
        from model import tracking

        uri = tracking.tracking_uri(tracking_uri)
        with tracking.tracked_run(task, uri, out.name) as run_id:
            _train_companion(
                task,
                mimic_dir,
                out,
                key,
                report_dir,
                index,
                folds,
                epochs,
                skipgram,
                sample,
                l1_jobs,
                shap_patients,
                run_id,
                uri,
            )
        click.echo(f"run: {run_id} in {uri}")

    return command


_companion_command("mortality", "Train the 1-year mortality companion model (LSTM, GRU, BiLSTM) from MIMIC.")
_companion_command(
    "readmission", "Train the 30-day readmission companion model (RNN, CNN-Wide, MLP, L1-LR) from MIMIC."
)


# ----------------------------------------------------------------------------- evaluate
@main.group()
def evaluate() -> None:
    """Evaluate bundles through the device inference path."""


@evaluate.command("dose")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=default_aim94_dir,
    required=True,
    help="AIM-94 folder (default $ADVISOR_AIM94_DIR).",
)
@click.option(
    "--bundle",
    "bundle_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Bundle directory or .tar.gz (default: the packaged dose bundle).",
)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="Predictions CSV.")
@click.option(
    "--trust",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Extra trusted public key (repeatable).",
)
@click.option("--model", "role", type=click.Choice(["int8", "float"]), default="int8", show_default=True)
@friendly
def evaluate_dose(data_dir, bundle_path, out, trust, role) -> None:
    """Write one prediction per AIM-94 decision point (docs/evaluation.md, "Dose model on AIM-94") to OUT."""
    from device.models import bundle as bundle_mod
    from model import evaluation
    from preprocessing import aim94

    path = bundle_path or bundle_mod.default_bundle_path("dose")
    bundle = bundle_mod.open_bundle(path, bundle_mod.trusted_keys(trust))
    logs = aim94.read_folder(data_dir)
    with click.progressbar(length=len(logs), label="decision points", file=sys.stderr) as bar:
        rows = evaluation.evaluate(bundle, logs, role=role, on_patient=lambda _n: bar.update(1))
    evaluation.write_predictions(rows, out)
    test = [r for r in rows if r.split == "test"]
    mae = sum(abs(r.model_units - r.actual_units) for r in test) / max(1, len(test))
    click.echo(
        f"{len(rows)} decision points written to {out}; test split MAE {mae:.3f} U "
        f"({len(test)} rows, bundle {bundle.version})"
    )


# ----------------------------------------------------------------------------- keys and bundles
@main.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder for advisor.key (mode 600) and advisor.pub.",
)
@friendly
def keygen(out: Path) -> None:
    """Create an Ed25519 signing key pair."""
    from device.models import signing

    private, public = signing.generate(out)
    click.echo(f"private key: {private} (keep it secret)\npublic key:  {public}")


@main.group()
def bundle() -> None:
    """Sign and inspect model bundles."""


@bundle.command("sign")
@click.argument("bundle_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--key", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True)
@friendly
def bundle_sign(bundle_dir: Path, key: Path) -> None:
    """Sign BUNDLE_DIR's manifest with KEY (writes signature.json)."""
    from device.models.bundle import sign_bundle_dir

    click.echo(f"signed {bundle_dir} with key {sign_bundle_dir(bundle_dir, key)}")


@bundle.command("reference")
@click.argument("bundle_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    envvar="ADVISOR_AIM94_DIR",
    required=True,
    help="The AIM-94 folder the bundle was trained on (its fingerprint must match).",
)
@friendly
def bundle_reference(bundle_dir: Path, data_dir: Path) -> None:
    """Add the drift reference to a dose bundle trained before bundles carried one (then sign it again)."""
    from model.pipeline import add_reference

    rows = add_reference(bundle_dir, data_dir)
    click.echo(
        f"drift reference of {rows} training decision points written to {bundle_dir}/manifest.json; "
        f"the signature was removed: advisor bundle sign {bundle_dir} --key KEY"
    )


@bundle.command("promote")
@click.argument("bundle_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--alias", default="production", show_default=True, help="The registry alias (stage) to point at it.")
@TRACKING_OPTION
@friendly
def bundle_promote(bundle_dir: Path, alias: str, tracking_uri: str | None) -> None:
    """Register BUNDLE_DIR's training run in the MLflow registry and point ALIAS at it."""
    require_modules("train", "mlflow")
    from device.models.bundle import open_bundle
    from model import tracking

    bundle = open_bundle(bundle_dir, require_signature=False)
    run_id = bundle.manifest.training.get("mlflow_run_id")
    if not run_id:
        raise click.ClickException(f"{bundle_dir} names no training run (trained before runs were tracked)")
    uri = tracking.tracking_uri(tracking_uri)
    version = tracking.promote(
        bundle.name, bundle.version, bundle.manifest_sha256, bundle_dir.resolve(), run_id, alias, uri
    )
    click.echo(f"{tracking.REGISTERED[bundle.name]} version {version} ({bundle.version}) is now '{alias}' in {uri}")


@bundle.command("promoted")
@click.argument("name", type=click.Choice(["dose", "mortality", "readmission"]))
@click.option("--alias", default="production", show_default=True)
@TRACKING_OPTION
@friendly
def bundle_promoted(name: str, alias: str, tracking_uri: str | None) -> None:
    """Print the path of the NAME bundle the registry's ALIAS points at (what advisor rollout takes)."""
    require_modules("train", "mlflow")
    from model import tracking

    found = tracking.promoted(name, alias, tracking.tracking_uri(tracking_uri))
    click.echo(found["bundle_path"])
    click.echo(
        f"version {found['bundle_version']}, manifest sha256 {found['bundle_sha256']}, run {found['run_id']}", err=True
    )


@bundle.command("info")
@click.argument("bundle_path", type=click.Path(path_type=Path), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option(
    "--trust",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Extra trusted public key (repeatable).",
)
@friendly
def bundle_info(bundle_path: Path | None, as_json: bool, trust) -> None:
    """Show a verified bundle's manifest (default: the packaged dose bundle)."""
    from device.models import bundle as bundle_mod

    path = bundle_path or bundle_mod.default_bundle_path("dose")
    require_bundle_folder(path)
    data = bundle_mod.info(bundle_mod.open_bundle(path, bundle_mod.trusted_keys(trust)))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{data['name']} {data['version']}  ({data['path']})")
    if data.get("data", {}).get("demo_trained"):
        click.echo("  DEMO-TRAINED on the 100-patient MIMIC demo: proves the pipeline, not a model to act on")
    click.echo(f"  created   {data.get('created')}")
    click.echo(f"  signed by {data.get('signed_by') or 'unsigned'}")
    for name, entry in data["files"].items():
        click.echo(f"  file      {name}  {entry['bytes']} bytes  sha256 {entry['sha256'][:16]}…")
    for line in _metric_lines(data.get("metrics", {})):
        click.echo(line)


def _metric_lines(metrics: dict) -> list[str]:
    """Both evaluation views of a dose bundle (where the model wins and where it is weaker), or a
    companion bundle's cross-validated AUROC per network."""
    lines = []
    views = {"chronological": "chronological split", "leave_patients_out": "leave-patients-out"}
    for view, title in views.items():
        test = metrics.get("test", {}).get(view, {})
        for name in ("lstm_gru_tflite_int8", "gradient_boosting", "median5_same_slot"):
            if name in test:
                lines.append(f"  test MAE  {test[name]['mae']:.3f} U  {name} ({title})")
    best = metrics.get("best")
    for name, figures in metrics.get("cross_validation", {}).items():
        low, high = figures["auroc_ci95"]
        mark = "  (exported)" if name == best else ""
        interval = f"95 % CI {low:.2f}–{high:.2f}, n {figures['n']}"
        lines.append(f"  AUROC     {figures['auroc']:.3f} ({interval})  {name}{mark}")
    return lines


main.add_command(device_commands.device)
main.add_command(device_commands.demo)
main.add_command(device_commands.bench)
main.add_command(device_commands.load)
main.add_command(device_commands.flash)
main.add_command(device_commands.replay)
main.add_command(device_commands.station)
main.add_command(device_commands.fleet)
main.add_command(device_commands.shadow)
main.add_command(device_commands.publish)
main.add_command(device_commands.monitor)
main.add_command(firmware_commands.export_c)
main.add_command(firmware_commands.bridge)
firmware_commands.bridge.add_command(interop_commands.bridge_hl7)
main.add_command(interop_commands.fhir)
main.add_command(interop_commands.nightscout)
main.add_command(sim_commands.simulate)
main.add_command(user_commands.users)
main.add_command(ward_commands.broker_profile)
main.add_command(ward_commands.rollout)
main.add_command(ward_commands.doctor)

if __name__ == "__main__":
    main()
