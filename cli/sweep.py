"""``pwmpr sweep``: the accuracy-density curve at a grid of fixed densities (``pwmpr.sweep``), and its knee."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pwmpr.cli.errors import boundary
from pwmpr.cli.options import apply_overrides, hlp
from pwmpr.config import GrowConfig
from pwmpr.errors import PwmprError

Opt = typer.Option


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise PwmprError(f"{what} must be a comma-separated list of numbers, got {text!r}") from None


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise PwmprError(f"{what} must be a comma-separated list of integers, got {text!r}") from None


@boundary
def sweep(
    model: Annotated[str | None, Opt(help=hlp("model"))] = None,
    data: Annotated[str | None, Opt(help=hlp("data"))] = None,
    data_dir: Annotated[str | None, Opt(help=hlp("data_dir"))] = None,
    densities: Annotated[str | None, Opt(help="Comma-separated densities in (0, 1] (default: --min-density to "
                                         "--max-density by --factor).")] = None,
    min_density: Annotated[float, Opt(help="Smallest density of the geometric grid.")] = 0.01,
    max_density: Annotated[float, Opt(help="Largest density of the geometric grid.")] = 1.0,
    factor: Annotated[float, Opt(help="Ratio of neighbouring densities of the geometric grid.")] = 2.0,
    seeds: Annotated[str, Opt(help="Comma-separated seeds; every density is trained once per seed.")] = "0",
    pruner: Annotated[str, Opt(help="How each mask is drawn: a one-shot seed method (phew, synflow, random, "
                                    "magnitude).")] = "phew",
    epochs: Annotated[int | None, Opt(help="Epochs of each run (default: pwmpr grow's final epochs, 30).")] = None,
    tol: Annotated[float, Opt(help="Knee: the smallest density within this accuracy (0.01 = one point) of the "
                                   "best.")] = 0.01,
    batch_size: Annotated[int | None, Opt(help=hlp("train.batch_size"))] = None,
    lr: Annotated[float | None, Opt(help=hlp("train.lr"))] = None,
    val_fraction: Annotated[float | None, Opt(help=hlp("val_fraction"))] = None,
    max_train: Annotated[int | None, Opt(help=hlp("max_train"))] = None,
    device: Annotated[str | None, Opt(help=hlp("device"))] = None,
    out: Annotated[Path | None, Opt("--out", "-o", help="Sweep folder (default: runs/sweep-<model>-<data>).")] = None,
    resume: Annotated[Path | None, Opt(help="Continue the sweep in this folder.")] = None,
    force: Annotated[bool, Opt("--force", metavar="", help="Replace a non-empty --out that holds another "
                                                        "sweep.")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", metavar="", help="Print nothing but errors.")] = False,
) -> None:
    """Train the same model at a geometric grid of densities (one-shot PHEW masks by default) and report the
    accuracy-density curve and its knee: the ground truth that density discovery is judged against."""
    from pwmpr.progress import make_reporter
    from pwmpr.sweep import SweepConfig, run_sweep

    reporter = make_reporter(quiet)
    if resume is not None:
        summary = run_sweep(SweepConfig(), resume, resume=True, reporter=reporter)
        out = resume
    else:
        if tol < 0:
            raise PwmprError(f"--tol must be >= 0, got {tol}")
        grid = (_floats(densities, "--densities") if densities is not None
                else SweepConfig.geometric(min_density, max_density, factor))
        overrides = {"model": model, "data": data, "data_dir": data_dir, "final_epochs": epochs,
                     "train.batch_size": batch_size, "train.lr": lr, "val_fraction": val_fraction,
                     "max_train": max_train, "device": device, "tau_core": False}
        base = apply_overrides(GrowConfig(), overrides)
        cfg = SweepConfig(densities=grid, seeds=_ints(seeds, "--seeds"), pruner=pruner, tol=tol, base=base)
        if out is None:
            out = Path("runs") / f"sweep-{base.model}-{base.data.replace('npz:', 'npz-').replace('/', '_')}"
        summary = run_sweep(cfg, out, force=force, reporter=reporter)
    reporter.close()
    if not quiet:
        from pwmpr.sweep import curve_markdown

        typer.echo(curve_markdown(summary), nl=False)
        typer.echo(f"knee: density {summary['knee']['density']:g} ({100 * summary['knee']['test_acc']:.2f}%), best "
                   f"{100 * summary['best']['test_acc']:.2f}% at {summary['best']['density']:g} · sweep folder {out}")
