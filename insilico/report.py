"""The trial report: tables by age group and arm, the bars, JSON, and the pictures clinicians read.

* ``trial.json`` — every arm × patient × seed with its metrics, plus the summary;
* ``report.md`` — medians and interquartile ranges by group and arm, the share of patients
  meeting the consensus targets, paired differences against the basal-bolus rule with
  carbohydrate-counting error, the advisor's statuses and supervisor rules, and the bars;
* ``agp.png`` — the ambulatory glucose profile per arm (median, 25–75 % and 5–95 % bands of the
  true glucose by time of day, all patients together);
* ``tir_by_patient.png`` — time in ranges as a stacked bar per patient and arm.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from insilico.metrics import CONSENSUS_TARGETS
from insilico.population import is_held_out
from insilico.protocol import SCENARIOS, Protocol
from insilico.trial import ArmResult

GROUP_ORDER = ("child", "adolescent", "adult")
SHOWN = (
    ("tir_70_180", "70–180 %"),
    ("tbr_70", "<70 %"),
    ("tbr_54", "<54 %"),
    ("tar_180", ">180 %"),
    ("tar_250", ">250 %"),
    ("mean", "mean mg/dL"),
    ("cv", "CV %"),
    ("night_tbr_70", "night <70 %"),
    ("lbgi", "LBGI"),
    ("hbgi", "HBGI"),
)


@dataclass(frozen=True)
class Bar:
    """One of the release bars of the trial, with what was measured."""

    group: str
    bar: str
    measured: str
    met: bool


def _median_iqr(values: Iterable[float]) -> str:
    v = np.asarray(list(values), dtype=float)
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return f"{med:.1f} [{q1:.1f}–{q3:.1f}]"


def _by(results: list[ArmResult], arm: str, group: str | None = None) -> list[ArmResult]:
    return [r for r in results if r.arm == arm and (group is None or r.group == group)]


def _median(results: list[ArmResult], metric: str) -> float:
    return float(np.median([getattr(r.metrics, metric) for r in results]))


LATE_BARS = {"new_patient": 3, "underdosed_habit": 7}  # scenario -> the trial day from which its bar is judged


def _from_day(rows: list[ArmResult], day: int, metric: str) -> float:
    """Median over patients of a daily metric (``daily_tir``, ``daily_tbr_70``) from trial ``day`` on."""
    return float(np.median([np.mean(getattr(r, metric)[day - 1 :]) for r in rows]))


def _late_bar(
    group: str, scenario: str, adv: list[ArmResult], err: list[ArmResult], oracle: list[ArmResult]
) -> list[Bar]:
    """new_patient: from day 3 at least 70 % in range, no more time <70 than carb_error; underdosed_habit:
    within 5 points of the oracle by day 7."""
    day = LATE_BARS.get(scenario)
    if day is None or len(adv[0].daily_tir) < day:
        return []
    tir = _from_day(adv, day, "daily_tir")
    if scenario == "new_patient":
        low, err_low = _from_day(adv, day, "daily_tbr_70"), _from_day(err, day, "daily_tbr_70")
        return [
            Bar(group, f"from day {day}: median time in range at least 70 %", f"{tir:.1f} %", tir >= 70.0),
            Bar(
                group,
                f"from day {day}: median time <70 no higher than carb_error",
                f"{low:.2f} % vs {err_low:.2f} %",
                low <= err_low,
            ),
        ]
    if not oracle:
        return []
    best = _from_day(oracle, day, "daily_tir")
    return [
        Bar(
            group,
            f"from day {day}: median time in range within 5 points of the oracle",
            f"{tir:.1f} % vs {best:.1f} %",
            tir >= best - 5.0,
        )
    ]


def bars(results: list[ArmResult], scenario: str = "standard") -> list[Bar]:
    """The issue's bars for the advisor as a person follows it, by age group."""
    out = []
    for group in GROUP_ORDER:
        adv, err, oracle = (_by(results, a, group) for a in ("advisor", "carb_error", "oracle"))
        if not adv or not err:
            continue
        out += _late_bar(group, scenario, adv, err, oracle)
        a70, e70 = _median(adv, "tbr_70"), _median(err, "tbr_70")
        out.append(
            Bar(
                group,
                "median time <70 no higher than basal-bolus with carb-counting error",
                f"{a70:.2f} % vs {e70:.2f} %",
                a70 <= e70,
            )
        )
        a54 = _median(adv, "tbr_54")
        out.append(Bar(group, "median time <54 under 1 %", f"{a54:.2f} %", a54 < 1.0))
        after = sum(r.level2_after_no_meal for r in adv)
        dosed = sum(r.level2_after_no_meal_dose for r in adv)
        out.append(
            Bar(
                group,
                "no level-2 hypoglycaemia within 6 h of a no-meal or bedtime answer",
                f"{after} events ({dosed} after an answer that carried insulin)",
                after == 0,
            )
        )
        skipped = sum(r.skipped_meals for r in adv)
        if skipped:
            given = sum(r.skipped_meal_doses for r in adv)
            out.append(
                Bar(
                    group,
                    "no meal insulin given for a meal the patient did not eat",
                    f"{given} of {skipped} skipped meals",
                    given == 0,
                )
            )
        if oracle:
            at, ot = _median(adv, "tir_70_180"), _median(oracle, "tir_70_180")
            out.append(
                Bar(
                    group,
                    "median time in range within 5 points of the oracle",
                    f"{at:.1f} % vs {ot:.1f} %",
                    at >= ot - 5.0,
                )
            )
    return out


def summary(results: list[ArmResult], protocol: Protocol, seconds: float) -> dict:
    arms = list(dict.fromkeys(r.arm for r in results))
    table: dict = defaultdict(dict)
    for arm in arms:
        for group in (*GROUP_ORDER, "all"):
            rows = _by(results, arm, None if group == "all" else group)
            if not rows:
                continue
            table[arm][group] = {
                "n": len(rows),
                **{name: float(np.median([getattr(r.metrics, name) for r in rows])) for name, _ in SHOWN},
                "meeting_all_targets": float(np.mean([all(r.metrics.meets().values()) for r in rows])),
                "level2_events": int(sum(r.metrics.level2_events for r in rows)),
                "level2_after_no_meal": int(sum(r.level2_after_no_meal for r in rows)),
                "level2_after_no_meal_dose": int(sum(r.level2_after_no_meal_dose for r in rows)),
                "escalated_lows": int(sum(r.escalations for r in rows)),
                "doses_per_day": float(np.mean([r.doses for r in rows]) / protocol.days),
                "plan_doses_per_day": float(np.mean([r.plan_doses for r in rows]) / protocol.days),
            }
    statuses = {arm: dict(sum((Counter(r.statuses) for r in _by(results, arm)), Counter())) for arm in arms}
    rules = {arm: dict(sum((Counter(r.rules) for r in _by(results, arm)), Counter())) for arm in arms}
    return {
        "protocol": dict(protocol.__dict__),
        "seeds": sorted({r.seed for r in results}),
        "patients": sorted({r.patient for r in results}),
        "seconds": round(seconds, 1),
        "by_arm_and_group": table,
        "statuses": statuses,
        "rules": rules,
        "bars": [b.__dict__ for b in bars(results, protocol.scenario)],
    }


TERMS = {
    "estimated": "estimated from each patient's own history (docs/safety.md)",
    "clinician": "set in each patient's safety profile, as a clinician would (simglucose's CF and CR)",
}


def write_report(
    results: list[ArmResult],
    protocol: Protocol,
    seconds: float,
    out: Path,
    plots: bool = True,
    terms: str = "estimated",
) -> Path:
    """Write trial.json, report.md and (with ``plots``) the pictures into ``out``; returns report.md.

    ``terms``: where the advisor's insulin sensitivity and carb ratio came from (``estimated`` or ``clinician``).
    """
    out.mkdir(parents=True, exist_ok=True)
    compared = [r for r in results if r.collapsed != "warm-up"]
    excluded = sorted({(r.patient, r.seed) for r in results if r.collapsed == "warm-up"})
    data = summary(compared, protocol, seconds) | {
        "terms": terms,
        "cgm": protocol.cgm,
        "excluded_collapsed_in_warmup": [{"patient": p, "seed": s} for p, s in excluded],
    }
    rows = [
        {
            "arm": r.arm,
            "patient": r.patient,
            "group": r.group,
            "seed": r.seed,
            **r.metrics.to_json(),
            "doses": r.doses,
            "units": r.units,
            "statuses": r.statuses,
            "rules": r.rules,
            "hypo_treatments": r.hypo_treatments,
            "escalations": r.escalations,
            "level2_after_no_meal": r.level2_after_no_meal,
            "level2_after_no_meal_dose": r.level2_after_no_meal_dose,
            "basal_per_day": r.basal_per_day,
            "skipped_meals": r.skipped_meals,
            "skipped_meal_doses": r.skipped_meal_doses,
            "snacks": r.snacks,
            "plan_doses": r.plan_doses,
            "daily_tir": list(r.daily_tir),
            "daily_tbr_70": list(r.daily_tbr_70),
            "collapsed": r.collapsed,
        }
        for r in results
    ]
    (out / "trial.json").write_text(json.dumps({"summary": data, "results": rows}, indent=1) + "\n")
    if plots:
        _agp(compared, out / "agp.png")
        _tir_bars(compared, out / "tir_by_patient.png")
    path = out / "report.md"
    path.write_text(_markdown(compared, data, protocol, plots))
    return path


def _markdown(results: list[ArmResult], data: dict, protocol: Protocol, plots: bool) -> str:
    arms = list(data["by_arm_and_group"])
    lines = [
        "# In-silico trial of the advisor",
        "",
        f"{_population(data['patients'])}, seeds {data['seeds']}, "
        f"{protocol.effective_warmup_days} warm-up days then {protocol.days} trial days, scenario "
        f"`{protocol.scenario}` ({SCENARIOS[protocol.scenario]}), "
        f"{'four finger-sticks a day and a CGM reading every 5 min' if protocol.cgm else 'four finger-sticks a day'}. "
        f"The advisor's insulin sensitivity and carb ratio: {TERMS[data['terms']]}. Metrics of the true glucose, "
        f"every minute of the trial days. Wall time {data['seconds']:.0f} s. Protocol: docs/insilico.md.",
        "",
        "Medians over patients × seeds [interquartile range].",
        "",
    ]
    if data["excluded_collapsed_in_warmup"]:
        gone = ", ".join(f"{e['patient']} (seed {e['seed']})" for e in data["excluded_collapsed_in_warmup"])
        lines += [
            f"Left out of every table: {gone}. The simulated glucose collapsed during the warm-up, under the "
            "patient's own doses, before any arm took over: simglucose then holds it below zero for good, so "
            "every arm would show the same 100 % below 54 mg/dL and the comparison says nothing.",
            "",
        ]
    collapsed = sorted({(r.arm, r.patient, r.seed) for r in results if r.collapsed == "trial"})
    if collapsed:
        lines += [
            "Collapsed during the trial (counted, as the fatal low it stands for): "
            + ", ".join(f"{a} on {p} (seed {s})" for a, p, s in collapsed)
            + ".",
            "",
        ]
    for group in (*GROUP_ORDER, "all"):
        present = [a for a in arms if group in data["by_arm_and_group"][a]]
        if not present:
            continue
        lines += [
            f"## {group}",
            "",
            "| arm | n | "
            + " | ".join(label for _, label in SHOWN)
            + " | all targets met | level-2 events | escalated lows | doses given/day |",
            "|---|---:|" + "---:|" * (len(SHOWN) + 4),
        ]
        for arm in present:
            rows = _by(results, arm, None if group == "all" else group)
            cells = [_median_iqr(getattr(r.metrics, name) for r in rows) for name, _ in SHOWN]
            s = data["by_arm_and_group"][arm][group]
            lines.append(
                f"| {arm} | {s['n']} | "
                + " | ".join(cells)
                + f" | {100 * s['meeting_all_targets']:.0f} % | {s['level2_events']} | "
                f"{s['escalated_lows']} | {_doses_cell(s)} |"
            )
        lines.append("")
    lines += [
        "Doses given/day: the regular insulin doses each arm gave in the trial days; for the advisor arm, the "
        "suggested doses given and, in brackets, the physician's plan doses given where it answered "
        "insufficient data at a meal.",
        "",
    ]
    lines += _paired(results)
    lines += _answers(results, data)
    lines += _bars(data, arms)
    targets = ", ".join(f"{name} {op} {limit:g}" for name, op, limit in CONSENSUS_TARGETS)
    lines += ["", f"Consensus targets (Battelino 2019): {targets}.", ""]
    if plots:
        lines += [
            "![ambulatory glucose profile per arm](agp.png)",
            "",
            "![time in ranges per patient](tir_by_patient.png)",
            "",
        ]
    return "\n".join(lines)


def _population(patients: list[str]) -> str:
    """Which virtual patients: simglucose's, the held-out ones (population.py), or both."""
    held = sum(is_held_out(p) for p in patients)
    own = len(patients) - held
    parts = [f"simglucose's UVA/Padova 2008 virtual patients ({own})"] if own else []
    if held:
        parts.append(
            f"held-out virtual patients ({held}) drawn from the distribution of simglucose's parameters, never used "
            "to choose rules"
        )
    return " and ".join(parts)


def _doses_cell(row: dict) -> str:
    """Doses given per day, with the physician's plan doses among them when there were any."""
    plan = row.get("plan_doses_per_day", 0.0)
    return f"{row['doses_per_day']:.1f}" + (f" ({plan:.1f} by plan)" if plan > 0 else "")


GIVEN = {
    "model_only": "the model's own number at each reading (the answers are not followed)",
    "supervised_habit": "the habit dose after the supervisor's rules (the answers are not followed)",
}


def _given(rows: list[ArmResult]) -> str:
    """The doses an advisor arm gave, and on what: a suggestion, the physician's plan, or its own rule."""
    doses, plan = sum(r.doses for r in rows), sum(r.plan_doses for r in rows)
    arm = rows[0].arm
    if arm in GIVEN:
        return f"{doses}: {GIVEN[arm]}"
    return f"{doses}: {doses - plan} suggested, {plan} by the physician's plan (insufficient data at a meal)"


def _answers(results: list[ArmResult], data: dict) -> list[str]:
    """The advisor's answer to each reading, by status and rule, beside the doses the arm gave."""
    lines = [
        "## The advisor's answers",
        "",
        "The advisor's answer to each reading of the trial days, and the doses the arm gave.",
        "",
        "| arm | statuses | supervisor rules (count) | doses given |",
        "|---|---|---|---|",
    ]
    for arm, statuses in data["statuses"].items():
        if statuses:
            st = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
            ru = ", ".join(f"{k} {v}" for k, v in sorted(data["rules"][arm].items(), key=lambda kv: -kv[1]))
            lines.append(f"| {arm} | {st} | {ru or '—'} | {_given(_by(results, arm))} |")
    return lines


def _bars(data: dict, arms: list[str]) -> list[str]:
    """The bars as a table, or a sentence saying why there are none."""
    lines = ["", "## Bars", ""]
    if not data["bars"]:
        missing = [a for a in ("advisor", "carb_error") if a not in arms]
        why = (
            f"this run has {', '.join(arms)} only: run with --arms all (or include {','.join(missing)})"
            if missing
            else "no age group has both arms after the patients left out"
        )
        return [
            *lines,
            "No bars: they compare the advisor arm with carb_error (and, for adults and adolescents, with the "
            f"oracle); {why}.",
        ]
    lines += ["| group | bar | measured | met |", "|---|---|---|---|"]
    lines += [
        f"| {b['group']} | {b['bar']} | {b['measured']} | {'yes' if b['met'] else '**no**'} |" for b in data["bars"]
    ]
    if "oracle" not in arms:
        lines += ["", "The time-in-range bar (within 5 points of the oracle) needs the oracle arm, which did not run."]
    return lines


def _paired(results: list[ArmResult]) -> list[str]:
    """Paired differences (same patient and seed) of each arm against the carb-counting-error rule."""
    reference = {(r.patient, r.seed): r.metrics for r in results if r.arm == "carb_error"}
    if not reference:
        return []
    lines = [
        "## Paired against basal-bolus with carb-counting error",
        "",
        "Median of the per-patient difference (arm − reference), same patients, meals and meters.",
        "",
        "| arm | Δ 70–180 % | Δ <70 % | Δ <54 % | Δ mean mg/dL |",
        "|---|---:|---:|---:|---:|",
    ]
    for arm in dict.fromkeys(r.arm for r in results):
        if arm == "carb_error":
            continue
        diffs = defaultdict(list)
        for r in _by(results, arm):
            ref = reference.get((r.patient, r.seed))
            if ref is None:
                continue
            for name in ("tir_70_180", "tbr_70", "tbr_54", "mean"):
                diffs[name].append(getattr(r.metrics, name) - getattr(ref, name))
        lines.append(
            f"| {arm} | "
            + " | ".join(f"{np.median(diffs[n]):+.1f}" for n in ("tir_70_180", "tbr_70", "tbr_54", "mean"))
            + " |"
        )
    return [*lines, ""]


def _agp(results: list[ArmResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(dict.fromkeys(r.arm for r in results if r.trace is not None))
    fig, axes = plt.subplots(1, len(arms), figsize=(3.2 * len(arms), 3.4), sharey=True, squeeze=False)
    hours = np.arange(0, 24, 5 / 60)
    for ax, arm in zip(axes[0], arms, strict=True):
        traces = np.stack([r.trace for r in results if r.arm == arm and r.trace is not None])
        by_time = traces.reshape(traces.shape[0], -1, 1440).transpose(2, 0, 1).reshape(1440, -1)[::5]
        p5, p25, p50, p75, p95 = np.percentile(by_time, [5, 25, 50, 75, 95], axis=1)
        ax.fill_between(hours, p5, p95, color="#bfdbfe", label="5–95 %")
        ax.fill_between(hours, p25, p75, color="#60a5fa", label="25–75 %")
        ax.plot(hours, p50, color="#1e3a8a", label="median")
        for level in (54, 70, 180, 250):
            ax.axhline(level, color="#9ca3af", lw=0.7, ls="--")
        ax.set_title(arm, fontsize=10)
        ax.set_xticks([0, 6, 12, 18, 24])
        ax.set_xlabel("hour of day")
    axes[0][0].set_ylabel("glucose mg/dL")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Ambulatory glucose profile (true glucose, all patients)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _tir_bars(results: list[ArmResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(dict.fromkeys(r.arm for r in results))
    patients = sorted({r.patient for r in results}, key=lambda p: (GROUP_ORDER.index(p.split("#")[0]), p))
    bands = (
        ("<54", "#7f1d1d"),
        ("54–70", "#ef4444"),
        ("70–180", "#22c55e"),
        ("180–250", "#facc15"),
        (">250", "#f97316"),
    )
    fig, axes = plt.subplots(
        len(arms), 1, figsize=(max(8.0, 0.32 * len(patients)), 1.7 * len(arms)), sharex=True, squeeze=False
    )
    for ax, arm in zip(axes[:, 0], arms, strict=True):
        values = []
        for patient in patients:
            rows = [r.metrics for r in results if r.arm == arm and r.patient == patient]
            m = {k: float(np.mean([getattr(x, k) for x in rows])) for k in ("tbr_54", "tbr_70", "tar_180", "tar_250")}
            values.append(
                [
                    m["tbr_54"],
                    m["tbr_70"] - m["tbr_54"],
                    100 - m["tbr_70"] - m["tar_180"],
                    m["tar_180"] - m["tar_250"],
                    m["tar_250"],
                ]
            )
        v = np.array(values)
        bottom = np.zeros(len(patients))
        for i, (label, colour) in enumerate(bands):
            ax.bar(range(len(patients)), v[:, i], bottom=bottom, color=colour, label=label, width=0.85)
            bottom += v[:, i]
        ax.set_ylim(0, 100)
        ax.set_ylabel(arm, fontsize=8)
    axes[-1][0].set_xticks(range(len(patients)))
    axes[-1][0].set_xticklabels([p.replace("#", " ") for p in patients], rotation=90, fontsize=7)
    axes[0][0].legend(ncol=5, fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.02))
    fig.suptitle("Time in ranges per patient (% of trial time)", fontsize=11, y=1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
