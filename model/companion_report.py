"""The companion-model report: cohort steps, the comparison table, imbalance handling,
confusion matrix with its clinical reading, TFLite parity, feature importance, ROC/PR plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model import explain
from model.companion import IMBALANCE_METHODS, MODEL_LABELS, OUTPUTS, CompanionResult
from model.fairness import GroupFigures
from preprocessing.demographics import ATTRIBUTE_LABELS

LEAK_FIX = (
    "The input sequence stops at the index admission. The source notebook fed every admission of the "
    "patient, including those after the index stay — a patient readmitted later is by definition alive, "
    "so later admissions leak the outcome. They are excluded here."
)
LEAKAGE_AUDIT = (
    "Cross-validation folds are grouped by patient (a patient's samples are never on both sides) and each "
    "fold builds its code vocabulary from its training patients' distinct admissions only. Both guard against "
    "leaks found while building this pipeline on the demo: ungrouped folds let the sequence labeller learn a "
    "test sample's label from a later sample of the same patient; counting codes per sample instead of per "
    "admission made the out-of-vocabulary flag mark a patient's last admission, which is never followed by a "
    "readmission."
)
TOP_FEATURES = 15
OUTCOME = {
    "mortality": ("died within a year", "survived the year"),
    "readmission": ("were readmitted within 30 days", "were not readmitted"),
}


def _interval(ci) -> str:
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "n/a"


def _fmt(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def comparison_table(result: CompanionResult) -> str:
    lines = [
        "| model | parameters | train time (s, all folds) | AUROC (95 % CI) | AUPRC (95 % CI) |",
        "|---|---:|---:|---|---|",
    ]
    for kind, m in result.metrics.items():
        star = " **(exported)**" if kind == result.best else ""
        lines.append(
            f"| {MODEL_LABELS[kind]}{star} | {m['parameters']:,} | {m['train_seconds']:.1f} | "
            f"{_fmt(m['auroc'])} ({_interval(m['auroc_ci95'])}) | "
            f"{_fmt(m['auprc'])} ({_interval(m['auprc_ci95'])}) |"
        )
    return "\n".join(lines)


def _figure(value: float | None, ci) -> str:
    return f"{_fmt(value)} ({_interval(ci)})" if value is not None else "too small to read"


def fairness_table(rows: list[GroupFigures]) -> str:
    """The fairness rows as a markdown table: every group, its size, and its figures or why not."""
    lines = [
        "| attribute | group | n (positive) | AUROC (95 % CI) | AUPRC (95 % CI) | recall at threshold (95 % CI) "
        "| observed rate | mean predicted |",
        "|---|---|---:|---|---|---|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {ATTRIBUTE_LABELS.get(row.attribute, row.attribute)} | {row.group} | {row.n} ({row.positives}) | "
            f"{_figure(row.auroc, row.auroc_ci95)} | {_figure(row.auprc, row.auprc_ci95)} | "
            f"{_figure(row.recall, row.recall_ci95)} | {row.observed_rate:.3f} | {row.mean_predicted:.3f} |"
        )
    return "\n".join(lines)


def fairness_reading(result: CompanionResult, min_class: int) -> str:
    """What the fairness table says and does not say, in words."""
    small = [f"{row.group} ({row.n})" for row in result.fairness if not row.readable and row.attribute != "all"]
    sentence = (
        f"Out-of-fold scores of the exported {MODEL_LABELS[result.best]}, split by the index admission's "
        f"recorded sex, age band, race/ethnicity and insurance. The threshold is the cohort's "
        f"({result.confusion['threshold']:.3g}, chosen to catch 80 % of all positives), so a group's recall "
        f"shows whom it misses. Intervals: AUROC and AUPRC by bootstrap within the group, recall by Wilson. "
        f"A group with fewer than {min_class} positives or negatives is too small to read: its size is shown, "
        "its figures are not. Training weighted the classes equally, which pulls every predicted probability "
        "towards one half; so read calibration across groups (does a group's mean predicted move with its "
        "observed rate?), not as an absolute scale."
    )
    groups = [row for row in result.fairness if row.attribute != "all"]
    if groups and len(small) == len(groups):
        sentence += (
            f" Every group of this cohort is too small to read ({result.confusion['tp'] + result.confusion['fn']} "
            "positives in all): the table shows who is in the cohort, not how the model treats them."
        )
    elif small:
        sentence += f" Too small to read here: {', '.join(small)}."
    return sentence


def attention_section(result: CompanionResult) -> list[str]:
    """Where the time-aware network looked: mean weight by visit position, its time decay, one history."""
    attention = result.attention
    if attention is None:
        return []
    decay = ", ".join(f"{d:.3f}" for d in attention.decay_per_year)
    lines = [
        "## Time-aware LSTM with attention: where it looks",
        "Out-of-fold attention weights (each test fold scored by the model trained on the others). Each visit "
        "carries how long before the index admission it ended; a visit's attention score drops by the learned "
        f"rate times those years (per fold: {decay} per year).",
        "",
    ]
    positions = attention.by_position()
    if not positions:
        return [*lines, "Every history in this cohort has one visit, so all the attention is on it.", ""]
    lines += [
        "| visit | histories | mean attention weight |",
        "|---|---:|---:|",
        *[
            f"| {'index admission' if r['visits_before_index'] == 0 else str(r['visits_before_index']) + ' before'} "
            f"| {r['histories']} | {r['mean_weight']:.3f} |"
            for r in positions
        ],
        "",
        f"Histories with at least two visits: {positions[0]['histories']} of {len(attention.visits)}.",
    ]
    example = attention.example()
    if example is not None:
        visits = int(attention.visits[example])
        cells = [
            f"{attention.weights[example, -1 - back]:.3f} (gap {attention.gap_days[example, -1 - back]:.0f} d)"
            for back in range(visits - 1, -1, -1)
        ]
        lines += [
            f"One history ({visits} visits, oldest first; weight and days since the previous discharge): "
            + " → ".join(cells)
            + "."
        ]
    return [*lines, ""]


SHAP_TOP = 10


def shap_section(result: CompanionResult, out: Path) -> list[str]:
    """SHAP summary plots of the L1 model and the exported network, their top features, one patient."""
    shown = result.explanations
    network = MODEL_LABELS[result.best]
    explain.summary_plot(shown.logistic, out / "shap_logistic.png", "L1 logistic regression (log-odds)", SHAP_TOP)
    explain.summary_plot(shown.network, out / "shap_network.png", f"{network} (probability)", SHAP_TOP)
    lines = [
        "## SHAP explanations",
        f"**L1 logistic regression**: `shap.LinearExplainer` (interventional) on the {len(shown.logistic.names)} "
        f"features the L1 penalty kept, {len(shown.logistic.rows)} patients explained, in log-odds "
        "(exact for a linear model).",
        "",
        "![SHAP summary, L1 logistic regression](shap_logistic.png)",
        "",
        f"**{network} (exported)**: `shap.KernelExplainer` over the presence of the {len(shown.network.names)} "
        f"codes in most histories, {len(shown.network.rows)} patients explained, in probability. Taking a "
        "code out removes it from every visit; putting one in adds it to the index visit; the background is "
        "a random sample of the cohort. The other codes of each history stay as they are.",
        "",
        "![SHAP summary, exported network](shap_network.png)",
        "",
        "| model | feature | mean abs. SHAP | mean value |",
        "|---|---|---:|---:|",
    ]
    for label, shown_model, unit in (("L1", shown.logistic, "log-odds"), (network, shown.network, "probability")):
        lines += [
            f"| {label} | {r['feature']} | {r['mean_abs_shap']:.4f} {unit} | {r['mean_value']:.3f} |"
            for r in shown_model.global_ranking(SHAP_TOP)
        ]
    top = shown.network.patient(shown.patient_row, SHAP_TOP)
    lines += [
        "",
        f"One patient, the riskiest of those explained (predicted {_pct(shown.patient_probability)}): the codes "
        "that moved the network's probability most, in probability points "
        "(present = 1: the code is in the history).",
        "",
        "| code | SHAP | present |",
        "|---|---:|---:|",
        *[f"| {r['feature']} | {100 * r['shap']:+.1f} pts | {r['value']:.0f} |" for r in top],
        "",
        "On the device every `risk` answer names its top codes by occlusion (each distinct code taken out, one "
        "inference each), which needs no background and no sampling.",
        "",
    ]
    return lines


def imbalance_table(result: CompanionResult) -> str:
    lines = [
        "| model | " + " | ".join(m.replace("_", " ") for m in IMBALANCE_METHODS) + " |",
        "|---|" + "---|" * len(IMBALANCE_METHODS),
    ]
    for kind, methods in result.imbalance.items():
        cells = []
        for method in IMBALANCE_METHODS:
            m = methods.get(method, {})
            cells.append(
                m["error"]
                if "error" in m
                else f"AUROC {_fmt(m['auroc'])} ({_interval(m['auroc_ci95'])}), AUPRC {_fmt(m['auprc'])}"
            )
        lines.append(f"| {MODEL_LABELS[kind]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _input_sentence(training: dict, features: dict) -> str:
    """What the networks read: code indices per visit, how much of the data the input keeps."""
    kept = training.get("coverage", {})
    vocabulary = len(features["vocabulary"]["codes"])
    sentence = (
        f"Input: up to {features['max_visits']} visits, each up to {features['max_codes']} code indices "
        f"(diagnoses, then procedures, then drugs) looked up in a learned embedding and summed, with its "
        f"timeline; vocabulary {vocabulary:,} codes (cap {training['max_vocabulary']:,}, seen in at least "
        f"{training['min_code_count']} admissions)."
    )
    if kept:
        sentence += (
            f" Of {kept['code_occurrences']:,} code occurrences in {kept['admissions']:,} admissions, "
            f"{kept['out_of_vocabulary_share']:.1%} fall outside the vocabulary (one shared index); "
            f"{kept['visits_over_max_codes_share']:.1%} of visits have more than {features['max_codes']} codes."
        )
    return sentence


def clinical_reading(result: CompanionResult) -> str:
    c = result.confusion
    yes, no = OUTCOME[result.task]
    return (
        f"At threshold {c['threshold']:.3g} (chosen on the out-of-fold scores to catch at least "
        f"80 % of positives): of the {c['tp'] + c['fn']} patients who {yes}, the model flags {c['tp']} "
        f"and misses {c['fn']}; of the {c['tn'] + c['fp']} who {no}, it wrongly flags {c['fp']}. "
        f"A flagged patient turns out positive {_pct(c['ppv'])} of the time (PPV); an unflagged one "
        f"is negative {_pct(c['npv'])} of the time (NPV). The threshold was picked on the same "
        "out-of-fold scores it is judged on, so these rates are optimistic."
    )


def _pct(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{100 * value:.0f} %"


def _plots(result: CompanionResult, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    names = []
    for name, curve, xlabel, ylabel in (
        ("roc.png", roc_curve, "false-positive rate", "true-positive rate"),
        ("pr.png", precision_recall_curve, "recall", "precision"),
    ):
        fig, ax = plt.subplots(figsize=(5.5, 5))
        for kind, scores in result.out_of_fold.items():
            a, b, _ = curve(result.labels, scores)
            x, y = (a, b) if name == "roc.png" else (b, a)
            score = result.metrics[kind]["auroc" if name == "roc.png" else "auprc"]
            ax.plot(x, y, label=f"{MODEL_LABELS[kind]} ({_fmt(score)})")
        if name == "roc.png":
            ax.plot([0, 1], [0, 1], ":", color="grey")
        else:
            ax.axhline(result.labels.mean(), linestyle=":", color="grey", label="prevalence")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{result.task}: out-of-fold {'ROC' if name == 'roc.png' else 'precision-recall'}")
        ax.legend(fontsize=7, loc="lower right" if name == "roc.png" else "upper right")
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def _steps(result: CompanionResult) -> list[str]:
    return [f"| {s['step']} | {s['count']} |" for s in (result.manifest.cohort or {}).get("steps", [])]


def write_report(result: CompanionResult, out: Path) -> Path:
    """Write ``report.md`` and the ROC/PR plots into ``out``; return the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    m = result.manifest
    plots = _plots(result, out)
    parity = result.parity
    c = result.confusion
    lr = result.importance.get("logistic_l1", [])[:TOP_FEATURES]
    toggled = result.importance.get(result.best, [])[:TOP_FEATURES]
    lines = [
        f"# {result.task.capitalize()} model report — bundle {m.version}",
        "",
        f"Output: {OUTPUTS[result.task]}. Risk context for the clinician only: it does not change the dose, "
        "and this is decision support, not a certified medical device.",
        "",
        f"**{m.data['label']}.**" if m.data["demo_trained"] else "",
        "",
        f"> {m.metrics['note']}",
        "",
        "## Data and cohort",
        f"- {m.data['source']}{' ' + m.data['version'] if m.data['version'] else ''}, "
        f"{m.data['patients']} patients; cohort `{(m.cohort or {}).get('definition')}`; "
        f"fingerprint `{m.data['fingerprint_sha256'][:16]}…`.",
        *[f"- Note: {n}" for n in result.notes],
        "",
        "| step | count |",
        "|---|---:|",
        *_steps(result),
        "",
    ]
    if result.task == "mortality":
        lines += [f"**Leakage fix.** {LEAK_FIX}", ""]
    else:
        lines += [
            "Labels follow the heart-failure paper's timeline: an admission is positive when the next one "
            "starts within 30 days of its discharge; the sample is the history up to the index admission.",
            "",
        ]
    lines += [
        f"## Models ({m.metrics['folds']}-fold stratified cross-validation, out-of-fold scores)",
        comparison_table(result),
        "",
        f"**Leakage audit.** {LEAKAGE_AUDIT}",
        "",
        _input_sentence(m.training, m.features),
        "",
        f"Code embedding initialised from {m.training['code_embedding_init']}. "
        f"Confidence intervals: {len(result.labels)} samples resampled 1,000 times (percentile bootstrap). "
        f"Chance AUPRC is the prevalence, {result.labels.mean():.3f}. The exported network is the one with the "
        "best out-of-fold AUROC (ties: fewer parameters); the L1 logistic regression is a baseline and is not "
        "exported.",
        "",
        *attention_section(result),
        "## Class imbalance (inside the training folds only)",
        imbalance_table(result),
        "",
        f"## Confusion matrix — {MODEL_LABELS[result.best]}, out-of-fold",
        "| | flagged | not flagged |",
        "|---|---:|---:|",
        f"| positive | {c['tp']} | {c['fn']} |",
        f"| negative | {c['fp']} | {c['tn']} |",
        "",
        f"Sensitivity {_pct(c['sensitivity'])}, specificity {_pct(c['specificity'])}. {clinical_reading(result)}",
        "",
        f"## Fairness — {MODEL_LABELS[result.best]} by group, out-of-fold",
        fairness_table(result.fairness),
        "",
        fairness_reading(result, m.metrics.get("fairness_min_class", 10)),
        "",
        "## TFLite on the device path vs Keras",
        "| evaluated on | samples (positive) | AUROC Keras | AUROC TFLite float | AUROC TFLite int8 | "
        "max prob. diff float | max prob. diff int8 |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {label} | {p['n']} ({p['positives']}) | {_fmt(p['keras_auroc'])} | {_fmt(p['float_auroc'])} | "
            f"{_fmt(p['int8_auroc'])} | {p['float_vs_keras_max_abs']:.1e} | {p['int8_vs_keras_max_abs']:.4f} |"
            for label, p in (
                ("held-out fold 1 (model trained on the other folds)", parity["held_out_fold"]),
                ("whole cohort (the shipped model, in-sample)", parity["whole_cohort"]),
            )
        ],
        "",
        "The held-out row is the agreement check on unseen patients; the in-sample AUROC of the shipped model "
        "is not a performance figure.",
        "",
        f"**The device runs the {m.output.device_role} model**: {m.output.device_role_reason}.",
        "- Bundle files: " + ", ".join(f"`{n}` {e.bytes / 1024:.1f} KiB" for n, e in sorted(m.files.items())),
        "",
        "## Feature importance",
        "L1 logistic regression, non-zero coefficients (largest first):",
        "",
        "| feature | coefficient |",
        "|---|---:|",
        *[f"| {r['feature']} | {r['coefficient']:+.3f} |" for r in lr],
        "",
        f"{MODEL_LABELS[result.best]}: mean change in predicted probability when a feature of the index visit "
        "is switched on rather than off (refitted model, whole cohort):",
        "",
        "| feature | mean change | index visits with it |",
        "|---|---:|---:|",
        *[f"| {r['feature']} | {r['mean_change']:+.3f} | {r['in_index_visits']} |" for r in toggled],
        "",
        *shap_section(result, out),
        "## Plots",
        *[f"![{p}]({p})" for p in plots],
        "",
        f"Training took {result.seconds / 60:.1f} min.",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
