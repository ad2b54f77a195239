"""The clinician's day (:class:`device.contract.messages.DaySummary`) as a PDF, printed with fpdf2.

Core PDF fonts only (nothing to install on the device); text is kept to Latin-1.
"""

from __future__ import annotations

from datetime import datetime

from fpdf import FPDF, FontFace

from device.contract.messages import DaySummary
from device.rules.daily_summary import IN_RANGE, LOW_MG_DL
from device.rules.dose_responses import OVERRIDE_REASONS

_PLAIN = str.maketrans({"–": "-", "—": "-", "·": "|", "≥": ">=", "≤": "<=", "×": "x", "’": "'", "→": "->", "…": "..."})
ANSWER_WORDS = {
    "suggest": "dose suggested",
    "withhold": "withheld",
    "insufficient_data": "not enough data",
    "no_dose_due": "no dose due",
}
DISCLAIMER = "Decision support, not a certified medical device. A person confirms every dose; the device never doses."


def _text(value: object) -> str:
    return str(value).translate(_PLAIN).encode("latin-1", "replace").decode("latin-1")


def _clock(ts: str | None) -> str:
    return "-" if ts is None else datetime.fromisoformat(ts).strftime("%H:%M")


def _num(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def summary_pdf(summary: DaySummary, device_id: str) -> bytes:
    """A one- or two-page A4 report of the day."""
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.set_title(_text(f"Insulin advisor: {summary.patient}, {summary.date}"))
    pdf.set_creator("insulin advisor")
    pdf.add_page()
    pdf.set_font("helvetica", "B", 15)
    pdf.cell(0, 8, _text(f"Daily summary: patient {summary.patient}, {summary.date}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", "", 9)
    pdf.cell(0, 5, _text(f"Ward time {summary.timezone} | device {device_id}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(120, 0, 20)
    pdf.multi_cell(0, 5, _text(DISCLAIMER), new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)

    _heading(pdf, "Readings")
    share = _num(None if summary.in_range_share is None else 100 * summary.in_range_share, " %")
    _line(
        pdf,
        f"{summary.readings} readings, mean {_num(summary.mean_mg_dl, ' mg/dL')}, {share} of readings in "
        f"{IN_RANGE[0]:.0f}-{IN_RANGE[1]:.0f} mg/dL, {len(summary.lows)} under {LOW_MG_DL:.0f} mg/dL",
    )

    _heading(pdf, "Doses suggested and given")
    rows = [
        [
            _clock(d.at),
            _num(d.glucose_mg_dl),
            f"{d.suggested_units:g} U",
            d.response or ("replaced" if d.replaced else "not answered"),
            _num(d.given_units, " U", 1),
            d.user or "-",
            (OVERRIDE_REASONS.get(d.reason, d.reason) if d.reason else d.replaced or "")
            + (f": {d.note}" if d.note else ""),
        ]
        for d in summary.doses
    ]
    header = ["time", "glucose mg/dL", "suggested", "done", "given", "by", "reason"]
    _table(pdf, header, rows, [16, 18, 22, 28, 18, 28, 60])
    if summary.other_doses:
        _line(
            pdf,
            "Other doses recorded: "
            + ", ".join(f"{_clock(d.ts)} {d.insulin} {d.units:g} U" for d in summary.other_doses),
        )
    a = summary.adherence
    followed = "-" if a.followed_share is None else f"{100 * a.followed_share:.0f} %"
    _line(
        pdf,
        f"Adherence: {a.followed} of {a.suggested} suggested doses given as suggested ({followed}); "
        f"{a.given_different} with other units, {a.declined} declined, {a.replaced} replaced before anyone acted, "
        f"{a.unanswered} not answered.",
    )
    if a.reasons:
        _line(pdf, "Reasons: " + ", ".join(f"{OVERRIDE_REASONS.get(k, k)} {n}" for k, n in a.reasons.items()))

    _heading(pdf, "Lows and their treatment")
    low_rows = [
        [
            _clock(low.at),
            f"{low.mg_dl:.0f}",
            _num(low.carbs_g, " g"),
            low.acknowledged_by or "-",
            _clock(low.recheck_at),
            f"{_num(low.next_reading_mg_dl)} at {_clock(low.next_reading_at)}" if low.next_reading_at else "none",
        ]
        for low in summary.lows
    ]
    _table(
        pdf,
        ["time", "mg/dL", "carbs advised", "seen by", "recheck due", "next reading"],
        low_rows,
        [16, 18, 28, 30, 26, 40],
    )

    _heading(pdf, "Answers and the supervisor's rules")
    _line(pdf, "Answers: " + (", ".join(f"{ANSWER_WORDS.get(k, k)} {n}" for k, n in summary.answers.items()) or "none"))
    words = summary.rule_words
    _line(pdf, "Rules: " + (", ".join(f"{words.get(k, k)} {n}" for k, n in summary.rules.items()) or "none"))
    return bytes(pdf.output())


def _heading(pdf: FPDF, text: str) -> None:
    pdf.ln(2)
    pdf.set_font("helvetica", "B", 11)
    pdf.cell(0, 7, _text(text), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", "", 9)


def _line(pdf: FPDF, text: str) -> None:
    pdf.multi_cell(0, 5, _text(text), new_x="LMARGIN", new_y="NEXT")


def _table(pdf: FPDF, header: list[str], rows: list[list[str]], widths: list[int]) -> None:
    """A table whose cells wrap onto more lines: a note is printed whole, never cut."""
    if not rows:
        _line(pdf, "none")
        return
    with pdf.table(
        col_widths=tuple(widths),
        width=sum(widths),
        align="LEFT",
        text_align="LEFT",
        borders_layout="HORIZONTAL_LINES",
        line_height=5,
        headings_style=FontFace(emphasis="BOLD"),
    ) as table:
        for values in [header, *rows]:
            line = table.row()
            for value in values:
                line.cell(_text(value))
