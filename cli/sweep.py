"""``pwmpr sweep``: the accuracy-density curve at a grid of fixed densities (``pwmpr.sweep``), and its knee."""

from __future__ import annotations

from pathlib import Path

import typer

from pwmpr.cli.errors import boundary
from pwmpr.cli.options import apply_overrides, command, config_flags, option, switch
from pwmpr.config import GrowConfig
from pwmpr.errors import PwmprError

#: The GrowConfig fields a sweep takes a flag for (the rest of its base config is GrowConfig's defaults).
SWEEP_FLAGS = config_flags(only=["model", "data", "data_dir", "final_epochs", "train.batch_size", "train.lr",
                                 "train.optimizer", "train.weight_decay", "val_fraction", "max_train", "device"],
                           names={"final_epochs": "epochs"}, helps={"final_epochs": "Epochs of each run."})


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


def _own_flags() -> list:
    """The sweep's own flags (the grid, the seeds, the pruner, the knee) and its run control."""
    import dataclasses

    from pwmpr.seed import SEEDS
    from pwmpr.sweep import SweepConfig

    default = {f.name: f.default for f in dataclasses.fields(SweepConfig)}
    return [
        option("densities", str | None, None, help="Comma-separated densities in (0, 1] (default: --min-density to "
               "--max-density by --factor)."),
        option("min_density", float, 0.01, help="Smallest density of the geometric grid."),
        option("max_density", float, 1.0, help="Largest density of the geometric grid."),
        option("factor", float, 2.0, help="Ratio of neighbouring densities of the geometric grid."),
        option("seeds", str, "0", help="Comma-separated seeds; every density is trained once per seed."),
        option("pruner", str, default["pruner"],
               help=f"How each mask is drawn: a one-shot seed method ({', '.join(SEEDS.names())})."),
        option("tol", float, default["tol"],
               help="Knee: the smallest density within this accuracy (0.01 = one point) of the best."),
        option("out", Path | None, None, "--out", "-o", help="Sweep folder (default: runs/sweep-<model>-<data>)."),
        option("resume", Path | None, None, help="Continue the sweep in this folder."),
        switch("force", "Replace a non-empty --out that holds another sweep."),
        switch("trust_code", "Allow importing the --model module:function recorded in a --resume sweep folder."),
        switch("quiet", "Print nothing but errors.", "--quiet", "-q"),
    ]


@boundary
def _sweep(fields: dict, *, densities: str | None, min_density: float, max_density: float, factor: float, seeds: str,
           pruner: str, tol: float, out: Path | None, resume: Path | None, force: bool, quiet: bool,
           trust_code: bool = False) -> None:
    from pwmpr.models import trusted_code

    # A --model typed here may be imported; one read from a --resume folder only with --trust-code.
    with trusted_code(True if trust_code else fields.get("model") or False):
        _sweep_trusted(fields, densities=densities, min_density=min_density, max_density=max_density,
                       factor=factor, seeds=seeds, pruner=pruner, tol=tol, out=out, resume=resume, force=force,
                       quiet=quiet)


def _sweep_trusted(fields: dict, *, densities: str | None, min_density: float, max_density: float, factor: float,
                   seeds: str, pruner: str, tol: float, out: Path | None, resume: Path | None, force: bool,
                   quiet: bool) -> None:
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
        base = apply_overrides(GrowConfig(), {**fields, "tau_core": False})
        cfg = SweepConfig(densities=grid, seeds=_ints(seeds, "--seeds"), pruner=pruner, tol=tol, base=base)
        if out is None:
            from pwmpr.rundir import folder_name

            out = Path("runs") / f"sweep-{folder_name(base.model)}-{folder_name(base.data)}"
        summary = run_sweep(cfg, out, force=force, reporter=reporter)
    reporter.close()
    if not quiet:
        from pwmpr.sweep import curve_markdown

        typer.echo(curve_markdown(summary), nl=False)
        typer.echo(f"knee: density {summary['knee']['density']:g} ({100 * summary['knee']['test_acc']:.2f}%), best "
                   f"{100 * summary['best']['test_acc']:.2f}% at {summary['best']['density']:g} · sweep folder {out}")


SWEEP_DOC = """Train the same model at a geometric grid of densities (one-shot PHEW masks by default) and report the
accuracy-density curve and its knee: the ground truth that density discovery is judged against."""
sweep = command("sweep", SWEEP_DOC, {"fields": SWEEP_FLAGS}, _own_flags(), _sweep)
