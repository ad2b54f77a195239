"""``advisor shadow report``: a candidate bundle's answers against the live ones, answer by answer (pure).

Each live answer the device made while in shadow mode has the candidate's answer to the same event,
through the same supervisor, plan and history. The report says how often the status differs and
how far the doses are apart, in all, by the live answer's status, and by each supervisor rule of
the live answer — the figures to decide whether the candidate is promoted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from device.contract.messages import ShadowAnswer, Suggestion

LARGE_UNITS = 1.0  # a dose difference a nurse would notice


@dataclass(frozen=True)
class Group:
    """One slice of the answers: how many, how often the status agrees, how far the doses are."""

    name: str
    answers: int
    same_status: float
    mean_abs_units: float
    max_abs_units: float
    large: float  # share differing by LARGE_UNITS or more


@dataclass(frozen=True)
class ShadowReport:
    live_version: str | None
    candidate_version: str | None
    total: Group
    by_status: list[Group]
    by_rule: list[Group]


def _group(name: str, pairs: Sequence[tuple[Suggestion, ShadowAnswer]]) -> Group:
    gaps = [abs(shadow.units - live.units) for live, shadow in pairs]
    same = sum(1 for live, shadow in pairs if live.status == shadow.status)
    n = len(pairs)
    return Group(
        name,
        n,
        round(same / n, 4) if n else 0.0,
        round(sum(gaps) / n, 3) if n else 0.0,
        round(max(gaps), 3) if gaps else 0.0,
        round(sum(1 for g in gaps if g >= LARGE_UNITS) / n, 4) if n else 0.0,
    )


def compare(pairs: Iterable[tuple[Suggestion, ShadowAnswer]]) -> ShadowReport:
    """The report of every (live, candidate) pair."""
    pairs = list(pairs)
    statuses = sorted({live.status for live, _ in pairs})
    rules = sorted({rule for live, _ in pairs for rule in live.rules})
    return ShadowReport(
        pairs[0][0].model.version if pairs else None,
        pairs[-1][1].model.version if pairs else None,
        _group("all answers", pairs),
        [_group(s, [p for p in pairs if p[0].status == s]) for s in statuses],
        [_group(r, [p for p in pairs if r in p[0].rules]) for r in rules],
    )


def table(report: ShadowReport) -> str:
    """The report as Markdown."""
    lines = [
        f"Candidate {report.candidate_version} against live {report.live_version}: "
        f"{report.total.answers} answers to the same events.",
        "",
        "| answers | n | same status | mean abs difference | largest | differ by 1 U or more |",
        "|---|---|---|---|---|---|",
    ]
    for group in [
        report.total,
        *report.by_status,
        *[Group("rule " + g.name, *list(g.__dict__.values())[1:]) for g in report.by_rule],
    ]:
        lines.append(
            f"| {group.name} | {group.answers} | {group.same_status:.1%} | {group.mean_abs_units:.2f} U | "
            f"{group.max_abs_units:.2f} U | {group.large:.1%} |"
        )
    return "\n".join(lines)
