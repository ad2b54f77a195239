"""``advisor simulate``: the in-silico trial (insilico, docs/insilico.md)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from insilico.protocol import SCENARIOS
from tools.cli.common import friendly

GROUPS = ("child", "adolescent", "adult")


def _names(value: str) -> list[str]:
    from insilico.patient import patient_names
    from insilico.population import held_out_names, virtual_patient

    every = patient_names()
    if value == "all":
        return every
    chosen: list[str] = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        group = part.removeprefix("held-out:")
        if part in GROUPS:
            chosen += [n for n in every if n.startswith(part + "#")]
        elif part in every:
            chosen.append(part)
        elif part == "held-out":
            chosen += held_out_names()
        elif part.startswith("held-out:") and group in GROUPS:
            chosen += held_out_names(groups=(group,))
        else:
            try:
                virtual_patient(part)
            except ValueError:
                raise click.BadParameter(
                    f"{part!r} is neither a group ({', '.join(GROUPS)}), held-out, held-out:GROUP nor a virtual "
                    "patient such as adult#001 or adult#h001",
                    param_hint="--patients",
                ) from None
            chosen.append(part)
    return list(dict.fromkeys(chosen))


def _seeds(value: str) -> list[int]:
    try:
        seeds = [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter("use comma-separated whole numbers, e.g. 1,2,3", param_hint="--seeds") from None
    if not seeds:
        raise click.BadParameter("give at least one seed", param_hint="--seeds")
    return seeds


class _Progress:
    """A progress line with a time estimate on a terminal; a line per tenth of the way otherwise."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def __call__(self, done: int, total: int, message: str) -> None:
        elapsed = time.monotonic() - self.started
        left = elapsed / done * (total - done) if done else 0.0
        line = f"{100 * done / total:5.1f} %  {message}  ({elapsed:.0f} s, about {left:.0f} s left)"
        if self.tty:
            click.echo("\r" + line.ljust(100), nl=done == total, err=True)
        elif 10 * done // total != self.shown:
            self.shown = 10 * done // total
            click.echo(line, err=True)


@click.command()
@click.option(
    "--patients",
    default="all",
    show_default=True,
    help="all, a group (child, adolescent, adult), held-out (100 new patients per group, docs/insilico.md), "
    "held-out:GROUP, or virtual patients (adult#001, adult#h001), comma-separated.",
)
@click.option(
    "--arms",
    default="all",
    show_default=True,
    help="all, or comma-separated: oracle, carb_error, habit, advisor, plan, model_only, supervised_habit. "
    "With --cgm, all is oracle, carb_error, habit, advisor and plan.",
)
@click.option("--days", type=click.IntRange(1, 365), default=14, show_default=True, help="Trial days per arm.")
@click.option(
    "--warmup-days",
    type=click.IntRange(0, 60),
    default=7,
    show_default=True,
    help="Days of the patient's own dosing before the arms take over (their history).",
)
@click.option("--seeds", default="1", show_default=True, help="Comma-separated seeds, e.g. 1,2,3.")
@click.option(
    "--scenario",
    type=click.Choice(list(SCENARIOS)),
    default="standard",
    show_default=True,
    help="A stress scenario (docs/insilico.md).",
)
@click.option(
    "--cgm",
    is_flag=True,
    help="Also a CGM reading every 5 min between the finger-sticks, each answered by the advisor.",
)
@click.option(
    "--via-mqtt",
    is_flag=True,
    help="The advisor arm answered by a real `advisor device run --clock event` over a private Mosquitto.",
)
@click.option(
    "--terms",
    type=click.Choice(["estimated", "clinician"]),
    default="estimated",
    show_default=True,
    help="The advisor's insulin sensitivity and carb ratio: estimated from each patient's history, or set "
    "in each patient's safety profile as a clinician would (simglucose's CF and CR, as the rule arms use).",
)
@click.option("--bundle", type=click.Path(path_type=Path), help="Dose bundle (default: the packaged one).")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("build/insilico"),
    show_default=True,
    help="Where report.md, trial.json and the plots go.",
)
@click.option("--no-plots", is_flag=True, help="Skip the pictures (faster).")
@friendly
def simulate(patients, arms, days, warmup_days, seeds, scenario, cgm, via_mqtt, terms, bundle, out, no_plots) -> None:
    """In-silico trial: simglucose's virtual patients dosed by each arm, the advisor among them."""
    try:
        import simglucose  # noqa: F401
    except ImportError:
        raise click.ClickException("advisor simulate needs the sim extra: pip install -e '.[sim]'") from None
    from device.config import SafetyConfig
    from device.models.bundle import default_bundle_path, open_bundle, trusted_keys
    from device.models.inference import DoseModel
    from insilico.arms import ARMS, CGM_ARMS
    from insilico.protocol import Protocol
    from insilico.report import write_report
    from insilico.trial import clinician_terms, run_trial

    names = _names(patients)
    every = CGM_ARMS if cgm else ARMS
    chosen_arms = list(every) if arms == "all" else [a.strip() for a in arms.split(",") if a.strip()]
    unknown = [a for a in chosen_arms if a not in ARMS]
    if unknown:
        raise click.BadParameter(
            f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}", param_hint="--arms"
        )
    if cgm and "model_only" in chosen_arms:
        raise click.BadParameter(
            "model_only gives the model's own number at every reading: with --cgm a dose every 5 minutes; leave it out",
            param_hint="--arms",
        )
    protocol = Protocol(warmup_days=warmup_days, days=days, scenario=scenario, cgm=cgm)
    model = DoseModel(open_bundle(bundle or default_bundle_path("dose"), trusted_keys()))
    devices = None
    if via_mqtt:
        from tools.rigs.sim_mqtt import MqttDevices

        if "advisor" not in chosen_arms:
            raise click.BadParameter(
                "--via-mqtt runs the advisor arm through a device; include it", param_hint="--arms"
            )
        devices = MqttDevices(Path(out) / "mqtt", bundle)
    try:
        results, seconds = run_trial(
            protocol,
            names,
            chosen_arms,
            _seeds(seeds),
            model,
            clinician_terms(names) if terms == "clinician" else SafetyConfig(),
            _Progress(),
            device=devices.for_seed if devices is not None else None,
        )
    finally:
        if devices is not None:
            devices.close()
    report = write_report(results, protocol, seconds, out, plots=not no_plots, terms=terms)
    click.echo(f"{len(names)} patients × {len(chosen_arms)} arms × {len(_seeds(seeds))} seed(s) in {seconds:.0f} s")
    click.echo(f"report: {report}")
