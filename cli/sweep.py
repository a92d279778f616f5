"""``pwmpr sweep``: the accuracy-density curve at a grid of fixed densities (``pwmpr.sweep``), and its knee."""

from __future__ import annotations

from pathlib import Path

import typer

from pwmpr.cli.errors import boundary
from pwmpr.cli.options import apply_overrides, command, config_flags, given_flags, option, switch
from pwmpr.config import RunConfig
from pwmpr.errors import PwmprError

#: The RunConfig fields a sweep takes a flag for (the rest of its base config is RunConfig's defaults).
SWEEP_FLAGS = config_flags(only=["model", "data", "data_dir", "final_epochs", "train.batch_size", "train.lr",
                                 "train.optimizer", "train.weight_decay", "val_fraction", "max_train", "context",
                                 "device", "growth.init_scale", "augment"],
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
        option("min_density", float | None, None, help="Smallest density of the geometric grid (default 0.01)."),
        option("max_density", float | None, None, help="Largest density of the geometric grid (default 1)."),
        option("factor", float | None, None, help="Ratio of neighbouring densities of the geometric grid (default 2)."),
        option("seeds", str | None, None, help="Comma-separated seeds; every density is trained once per seed "
               "(default 0)."),
        option("pruner", str | None, None,
               help=f"How each mask is drawn: a one-shot seed method ({', '.join(SEEDS.names())}; default "
               f"{default['pruner']})."),
        option("tol", float | None, None,
               help=f"Knee: the smallest density within this accuracy (0.01 = one point) of the best (default "
               f"{default['tol']:g})."),
        option("out", Path | None, None, "--out", "-o", help="Sweep folder (default: runs/sweep-<model>-<data>)."),
        option("resume", Path | None, None, help="Continue the sweep in this folder."),
        switch("force", "Replace a non-empty --out that holds another sweep."),
        switch("trust_code", "Allow importing the --model module:function recorded in a --resume sweep folder."),
        switch("quiet", "Print nothing but errors.", "--quiet", "-q"),
    ]


#: The sweep's own flags that configure it (refused with --resume, which takes the folder's sweep.json).
GRID_FLAGS = ("densities", "min_density", "max_density", "factor", "seeds", "pruner", "tol")


@boundary
def _sweep(fields: dict, *, out: Path | None, resume: Path | None, force: bool, quiet: bool, trust_code: bool = False,
           **grid) -> None:
    from pwmpr.models import trusted_code

    # A --model typed here may be imported; one read from a --resume folder only with --trust-code.
    with trusted_code(True if trust_code else fields.get("model") or False):
        _sweep_trusted(fields, grid, out=out, resume=resume, force=force, quiet=quiet)


def _sweep_trusted(fields: dict, grid: dict, *, out: Path | None, resume: Path | None, force: bool,
                   quiet: bool) -> None:
    from pwmpr.cli.grow import refuse_with_resume
    from pwmpr.progress import make_reporter
    from pwmpr.sweep import SweepConfig, run_sweep

    if resume is not None:
        refuse_with_resume([*(["--out"] if out is not None else []), *(["--force"] if force else []),
                            *given_flags(SWEEP_FLAGS, fields),
                            *("--" + k.replace("_", "-") for k in GRID_FLAGS if grid.get(k) is not None)],
                           what="sweep folder's own sweep.json")
        reporter = make_reporter(quiet)
        summary = run_sweep(SweepConfig(), resume, resume=True, reporter=reporter)
        out = resume
    else:
        cfg = _sweep_config(fields, **grid)
        if out is None:
            from pwmpr.rundir import folder_name

            out = Path("runs") / f"sweep-{folder_name(cfg.base.model)}-{folder_name(cfg.base.data)}"
        reporter = make_reporter(quiet)
        summary = run_sweep(cfg, out, force=force, reporter=reporter)
    reporter.close()
    if not quiet:
        from pwmpr.sweep import curve_markdown

        typer.echo(curve_markdown(summary), nl=False)
        typer.echo(f"knee: density {summary['knee']['density']:g} ({100 * summary['knee']['test_acc']:.2f}%), best "
                   f"{100 * summary['best']['test_acc']:.2f}% at {summary['best']['density']:g} · sweep folder {out}")


def _sweep_config(fields: dict, *, densities: str | None, min_density: float | None, max_density: float | None,
            factor: float | None, seeds: str | None, pruner: str | None, tol: float | None):
    """The SweepConfig of the flags (the defaults where a flag was not given)."""
    from pwmpr.sweep import SweepConfig

    default = SweepConfig()
    tol = default.tol if tol is None else tol
    if tol < 0:
        raise PwmprError(f"--tol must be >= 0, got {tol}")
    grid = (_floats(densities, "--densities") if densities is not None
            else SweepConfig.geometric(0.01 if min_density is None else min_density,
                                       1.0 if max_density is None else max_density, 2.0 if factor is None else factor))
    base = apply_overrides(RunConfig(), {**fields, "tau_core": False})
    return SweepConfig(densities=grid, seeds=_ints(seeds or "0", "--seeds"), pruner=pruner or default.pruner, tol=tol,
                       base=base)


SWEEP_DOC = """Train the same model at a geometric grid of densities (one-shot PHEW masks by default) and report the
accuracy-density curve and its knee: the ground truth that density discovery is judged against."""
sweep = command("sweep", SWEEP_DOC, {"fields": SWEEP_FLAGS}, _own_flags(), _sweep)
