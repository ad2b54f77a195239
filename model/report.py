"""The training report: every model × metric for both views, parity, sizes and three plots."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np

from domain.features import SLOTS
from model.pipeline import MODEL_LABELS, DoseTrainingResult, slot_labels

INT8 = "lstm_gru_tflite_int8"
BASELINES = ("last_same_slot", "median5_same_slot", "gradient_boosting")


def metrics_table(metrics: dict[str, dict]) -> str:
    lines = ["| model | MAE (U) | RMSE (U) | R² | within ±1 U | rows |", "|---|---:|---:|---:|---:|---:|"]
    for name, label in MODEL_LABELS.items():
        if name in metrics:
            m = metrics[name]
            lines.append(
                f"| {label} | {m['mae']:.3f} | {m['rmse']:.3f} | {m['r2']:.3f} | "
                f"{100 * m['within_1u']:.1f} % | {m['n']} |"
            )
    return "\n".join(lines)


def verdict(metrics: dict[str, dict]) -> str:
    """One honest sentence: does the int8 device model beat every baseline on MAE?"""
    best = min(BASELINES, key=lambda b: metrics[b]["mae"])
    ours, theirs = metrics[INT8]["mae"], metrics[best]["mae"]
    if ours < theirs:
        return (
            f"The int8 model on the device path beats every baseline on MAE "
            f"({ours:.3f} U vs {theirs:.3f} U for {MODEL_LABELS[best]})."
        )
    return (
        f"The int8 model on the device path does **not** beat the best baseline on MAE "
        f"({ours:.3f} U vs {theirs:.3f} U for {MODEL_LABELS[best]}); work on it continues."
    )


def _save(plt, fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def _plots(result: DoseTrainingResult, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds, view = result.data, result.views["chronological"]
    rows, preds = view.rows, view.predictions
    actual = ds.targets[rows]
    names = []

    patients = ds.patients[rows]
    top = [p for p, _ in sorted(((p, (patients == p).sum()) for p in np.unique(patients)), key=lambda t: -t[1])[:3]]
    fig, axes = plt.subplots(len(top), 1, figsize=(10, 3 * len(top)), squeeze=False)
    for ax, patient in zip(axes[:, 0], top, strict=False):
        in_patient = np.flatnonzero(patients == patient)
        start = ds.timestamps[rows[in_patient[0]]]
        idx = [i for i in in_patient if ds.timestamps[rows[i]] < start + timedelta(days=7)]
        ts = [ds.timestamps[rows[i]] for i in idx]
        ax.plot(ts, actual[idx], "o-", label="actual dose", color="black")
        ax.plot(ts, preds[INT8][idx], "s--", label="LSTM-GRU int8", color="tab:blue")
        ax.plot(ts, preds["median5_same_slot"][idx], "x:", label="median-5 same-slot", color="tab:orange")
        ax.set_title(f"patient {patient}: first test week")
        ax.set_ylabel("regular insulin (U)")
        ax.legend(loc="upper right", fontsize=8)
    fig.autofmt_xdate()
    names.append(_save(plt, fig, out, "actual_vs_predicted.png"))

    slots = slot_labels(ds, rows)
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.2
    for k, name in enumerate((INT8, "gradient_boosting", "median5_same_slot", "last_same_slot")):
        maes = [
            np.abs(preds[name][slots == s] - actual[slots == s]).mean() if (slots == s).any() else 0
            for s in range(len(SLOTS))
        ]
        ax.bar(np.arange(len(SLOTS)) + (k - 1.5) * width, maes, width, label=MODEL_LABELS[name])
    ax.set_xticks(range(len(SLOTS)), [f"{s}\n(n={(slots == i).sum()})" for i, s in enumerate(SLOTS)])
    ax.set_ylabel("MAE (U)")
    ax.set_title("Error by slot, chronological test split")
    ax.legend(fontsize=7)
    names.append(_save(plt, fig, out, "error_by_slot.png"))

    fig, ax = plt.subplots(figsize=(8, 4))
    bins = np.linspace(-6, 6, 49).tolist()
    for name in (INT8, "gradient_boosting"):
        ax.hist(np.clip(preds[name] - actual, -6, 6), bins=bins, alpha=0.55, label=MODEL_LABELS[name])
    ax.set_xlabel("predicted − actual (U), clipped to ±6")
    ax.set_ylabel("decision points")
    ax.set_title("Residual distribution, chronological test split")
    ax.legend(fontsize=8)
    names.append(_save(plt, fig, out, "residuals.png"))
    return names


def write_report(result: DoseTrainingResult, out: Path) -> Path:
    """Write ``report.md`` and its plots into ``out``; return the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = result.manifest
    net = manifest.training["network"]
    plots = _plots(result, out)
    check = result.data.check
    sizes = {name: entry.bytes for name, entry in manifest.files.items()}
    lines = [
        f"# Dose model report — bundle {manifest.version}",
        "",
        "Decision support only, not a certified medical device. Numbers below were measured by "
        "this training run; nothing is copied from elsewhere.",
        "",
        "## Data",
        f"- {check.lines} lines in {check.files} files: {check.kept} kept, "
        f"{sum(check.rejected.values())} rejected "
        f"({', '.join(f'{k} {v}' for k, v in check.rejected.items())}).",
        f"- {len(result.data)} decision points (kept regular-insulin records); "
        f"data fingerprint `{result.data.fingerprint[:16]}…`.",
        "- Chronological split per patient: first floor(0.8 n) decision points train (the last 15 % "
        "of those are validation for early stopping), the rest test. Leave-patients-out: 5 folds "
        "by patient id ((id − 1) mod 5); in each, 15 % of the training patients (all their rows) are "
        "the validation set, so early stopping measures unseen patients too.",
        "",
        "## Chronological test split",
        metrics_table(result.metrics["chronological"]),
        "",
        verdict(result.metrics["chronological"]),
        "",
    ]
    if "leave_patients_out" in result.metrics:
        lines += [
            "## Leave-patients-out (5 folds, all held-out patients pooled)",
            metrics_table(result.metrics["leave_patients_out"]),
            "",
            verdict(result.metrics["leave_patients_out"]),
            "",
        ]
    lines += [
        "## Quantisation",
        f"- int8 vs Keras on the chronological test split: mean |Δ| "
        f"{result.parity['int8_vs_keras_mean_abs_units']:.4f} U, max |Δ| "
        f"{result.parity['int8_vs_keras_max_abs_units']:.3f} U.",
        f"- TFLite float vs Keras: mean |Δ| {result.parity['float_vs_keras_mean_abs_units']:.2e} U.",
        "- Bundle files: " + ", ".join(f"`{n}` {b / 1024:.1f} KiB" for n, b in sorted(sizes.items())) + ".",
        "",
        "## How the model works",
        "- Input: a window of the patient's last "
        f"{result.data.spec.window - 1} decision times plus the current one; each step has "
        f"{result.data.spec.n_features} features (cyclic time, slot, glucose with a measured flag, "
        "same-slot dose lags, NPH/UltraLente, insulin on board, meal/exercise/hypo flags, ages).",
        "- Network: LSTM → GRU over the window, the current step joined to the dense head; it "
        f"predicts the change from the patient's usual dose (`{manifest.output.residual_of}`), "
        "which keeps the int8 output range narrow. "
        f"{net['ensemble']} such networks (seeds {net['seed']}…{net['seed'] + net['ensemble'] - 1}, "
        f"dropout {net['dropout']}) are averaged inside the exported graph.",
        "- Seeds fixed; early stopping on validation MAE. The chronological test rows are never used "
        "for any choice. Dropout and the ensemble size were chosen by comparing variants on the "
        "leave-patients-out folds, so the margin in that view is optimistic.",
        "",
        "## Plots",
        *[f"![{p}]({p})" for p in plots],
        "",
        f"Training took {result.seconds / 60:.1f} min.",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
