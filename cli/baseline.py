"""``pwmpr baseline dense|imp|oneshot``: the baselines PWMPR is compared with, on the same runner as ``pwmpr grow``.

Each command turns its flags into a GrowConfig (``method`` dense, imp or oneshot, the method's knobs in
``options``) and hands it to the shared ``pwmpr.cli.grow._run``, so every baseline writes the same run folder
(config, history, checkpoints, summary, final.safetensors), resumes the same way and exports with ``pwmpr export``.
Costs are measured against a dense run of ``--epochs`` epochs (``reference_epochs``) unless told otherwise.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from pwmpr.cli.errors import boundary
from pwmpr.cli.grow import TRUST_HELP, _run
from pwmpr.cli.options import hlp
from pwmpr.errors import PwmprError

Opt = typer.Option
DEFAULT_EPOCHS = 30  # the final-training epochs of `pwmpr grow`, so a default baseline matches a default PWMPR run

app = typer.Typer(
    name="baseline",
    help="Baselines on the same trainer, data, masks and cost accounting as pwmpr grow: dense, IMP, one-shot.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Flags every baseline shares with `pwmpr grow`.
Model = Annotated[str | None, Opt(help=hlp("model"))]
Data = Annotated[str | None, Opt(help=hlp("data"))]
DataDir = Annotated[str | None, Opt(help=hlp("data_dir"))]
BatchSize = Annotated[int | None, Opt(help=hlp("train.batch_size"))]
Lr = Annotated[float | None, Opt(help=hlp("train.lr"))]
WeightDecay = Annotated[float | None, Opt(help=hlp("train.weight_decay"))]
Schedule = Annotated[str | None, Opt(help="Learning-rate schedule of each training run: cosine, step or constant "
                                        "(default: cosine).")]
ValFraction = Annotated[float | None, Opt(help=hlp("val_fraction"))]
MaxTrain = Annotated[int | None, Opt(help=hlp("max_train"))]
ReferenceEpochs = Annotated[int | None, Opt(help="Epochs of the dense run costs are compared with "
                                               "(default: --epochs).")]
TauCore = Annotated[bool | None, Opt("--tau-core/--no-tau-core", metavar="", help=hlp("tau_core"))]
Device = Annotated[str | None, Opt(help=hlp("device"))]
Seed = Annotated[int | None, Opt(help=hlp("seed"))]
Out = Annotated[Path | None, Opt("--out", "-o", help="Run folder to create (default: runs/<method>-<model>-"
                                    "<data>-s<seed>-<config hash>).")]
Resume = Annotated[Path | None, Opt(help="Continue the run in this folder from its last checkpoint.")]
Config = Annotated[Path | None, Opt(help="Start from this config.json; flags given too override it.")]
Force = Annotated[bool, Opt("--force", metavar="", help="Overwrite a non-empty --out folder.")]
Quiet = Annotated[bool, Opt("--quiet", "-q", metavar="", help="Print nothing but errors.")]
TrustCode = Annotated[bool, Opt("--trust-code", metavar="", help=TRUST_HELP)]


def _common(model, data, data_dir, batch_size, lr, weight_decay, schedule, val_fraction, max_train, tau_core,
            device, seed) -> dict:
    return {"model": model, "data": data, "data_dir": data_dir, "train.batch_size": batch_size, "train.lr": lr,
            "train.weight_decay": weight_decay, "train.final_schedule": schedule, "val_fraction": val_fraction,
            "max_train": max_train, "tau_core": tau_core, "device": device, "seed": seed}


@boundary
def _baseline(method: str, overrides: dict, epochs: int | None, reference_epochs: int | None, *,
              epoch_fields: tuple[str, ...], options: dict, option_defaults: dict, out: Path | None,
              resume: Path | None, config: Path | None, force: bool, quiet: bool, trust_code: bool = False) -> dict:
    """Fill in the epoch fields and options, then run through ``pwmpr grow``'s ``_run``."""
    given = {k: v for k, v in options.items() if v is not None}
    if resume is not None:
        if given or epochs is not None or reference_epochs is not None:
            flags = [*given, *(["epochs"] if epochs is not None else [])]
            raise PwmprError("--resume takes the run folder's own config.json; drop the other flags "
                             f"({', '.join('--' + f.replace('_', '-') for f in flags) or '--reference-epochs'})")
        return _run({k: None for k in overrides}, out=None, resume=resume, config=None, force=False, quiet=quiet,
                    method=method, trust_code=trust_code)
    if epochs is None and config is None:
        epochs = DEFAULT_EPOCHS
    if epochs is not None:
        if epochs < 1:
            raise PwmprError(f"--epochs must be >= 1, got {epochs}")
        overrides = {**overrides, **{f: epochs for f in epoch_fields}}
        overrides["reference_epochs"] = reference_epochs or epochs
    elif reference_epochs is not None:
        overrides["reference_epochs"] = reference_epochs
    # A fresh run writes every option into config.json; a --config run keeps its own unless a flag is given.
    opts = given if config is not None else {**option_defaults, **given}
    return _run(overrides, out=out, resume=None, config=config, force=force, quiet=quiet, method=method,
                options=opts, trust_code=trust_code)


@app.command("dense")
def dense(
    epochs: Annotated[int | None, Opt(help=f"Training epochs (default: {DEFAULT_EPOCHS}).")] = None,
    model: Model = None, data: Data = None, data_dir: DataDir = None, batch_size: BatchSize = None, lr: Lr = None,
    weight_decay: WeightDecay = None, schedule: Schedule = None, val_fraction: ValFraction = None,
    max_train: MaxTrain = None, reference_epochs: ReferenceEpochs = None, tau_core: TauCore = None,
    device: Device = None, seed: Seed = None, out: Out = None, resume: Resume = None, config: Config = None,
    force: Force = False, quiet: Quiet = False, trust_code: TrustCode = False,
) -> None:
    """Train the dense network with the same trainer and schedule as PWMPR's final training (density 1)."""
    common = _common(model, data, data_dir, batch_size, lr, weight_decay, schedule, val_fraction, max_train,
                     tau_core, device, seed)
    _baseline("dense", common, epochs, reference_epochs, epoch_fields=("phase_epochs", "final_epochs"), options={},
              option_defaults={}, out=out, resume=resume, config=config, force=force, quiet=quiet,
              trust_code=trust_code)


@app.command("imp")
def imp(
    variant: Annotated[str | None, Opt(help="What a level starts from after pruning: rewind (weights rewound to "
                                          "--rewind-step, schedule replayed), lr-rewind (trained weights kept, "
                                          "schedule replayed) or continue (trained weights kept, fine-tuned for "
                                          "--continue-fraction x --epochs at --finetune-lr-scale x --lr) "
                                          "(default: lr-rewind).")] = None,
    epochs: Annotated[int | None, Opt(help=f"Training epochs of every level (level 0 for continue) "
                                         f"(default: {DEFAULT_EPOCHS}).")] = None,
    levels: Annotated[int | None, Opt(help="Pruning levels after the dense level 0 at the most (default: 10; "
                                         "density 0.8^10 = 0.107).")] = None,
    target_density: Annotated[float | None, Opt(help="Stop at the first level at or below this density "
                                                   "(default: 0, only --levels stops).")] = None,
    prune_fraction: Annotated[float | None, Opt(help="Fraction of the remaining weights pruned per level, by "
                                                   "global magnitude (default: 0.2).")] = None,
    rewind_step: Annotated[int | None, Opt(help="rewind: the training step of level 0 whose weights each level "
                                              "restarts from (default: 0, the initialisation).")] = None,
    continue_fraction: Annotated[float | None, Opt(help="continue: epochs of levels 1.. as a fraction of "
                                                      "--epochs (default: 0.5).")] = None,
    finetune_lr_scale: Annotated[float | None, Opt(help="continue: learning rate of levels 1.. as a fraction "
                                                      "of --lr (default: 0.1).")] = None,
    model: Model = None, data: Data = None, data_dir: DataDir = None, batch_size: BatchSize = None, lr: Lr = None,
    weight_decay: WeightDecay = None, schedule: Schedule = None, val_fraction: ValFraction = None,
    max_train: MaxTrain = None, reference_epochs: ReferenceEpochs = None, tau_core: TauCore = None,
    device: Device = None, seed: Seed = None, out: Out = None, resume: Resume = None, config: Config = None,
    force: Force = False, quiet: Quiet = False, trust_code: TrustCode = False,
) -> None:
    """Iterative magnitude pruning (lottery tickets, OpenLTH conventions): train dense, prune 20% of the remaining
    weights by global magnitude, retrain; every level is a point of its accuracy-density curve."""
    from pwmpr.methods.imp import ImpOptions

    common = _common(model, data, data_dir, batch_size, lr, weight_decay, schedule, val_fraction, max_train,
                     tau_core, device, seed)
    common["final_epochs"] = 0 if config is None and resume is None else None  # IMP has no final training
    options = {"variant": variant, "levels": levels, "target_density": target_density,
               "prune_fraction": prune_fraction, "rewind_step": rewind_step, "continue_fraction": continue_fraction,
               "finetune_lr_scale": finetune_lr_scale}
    _baseline("imp", common, epochs, reference_epochs, epoch_fields=("phase_epochs",), options=options,
              option_defaults=dataclasses.asdict(ImpOptions()), out=out, resume=resume, config=config, force=force,
              quiet=quiet)


@app.command("oneshot")
def oneshot(
    method: Annotated[str | None, Opt(help="How the mask is chosen at initialisation: phew, synflow, random or "
                                         "magnitude (|w| of the initial weights) (default: phew).")] = None,
    density: Annotated[float | None, Opt(help="Fraction of prunable weights kept (default: 0.1).")] = None,
    epochs: Annotated[int | None, Opt(help=f"Training epochs (default: {DEFAULT_EPOCHS}).")] = None,
    model: Model = None, data: Data = None, data_dir: DataDir = None, batch_size: BatchSize = None, lr: Lr = None,
    weight_decay: WeightDecay = None, schedule: Schedule = None, val_fraction: ValFraction = None,
    max_train: MaxTrain = None, reference_epochs: ReferenceEpochs = None, tau_core: TauCore = None,
    device: Device = None, seed: Seed = None, out: Out = None, resume: Resume = None, config: Config = None,
    force: Force = False, quiet: Quiet = False, trust_code: TrustCode = False,
) -> None:
    """Prune once at initialisation to --density (PHEW, SynFlow, random or magnitude), then train --epochs."""
    from pwmpr.methods.oneshot import OneShotOptions

    common = _common(model, data, data_dir, batch_size, lr, weight_decay, schedule, val_fraction, max_train,
                     tau_core, device, seed)
    _baseline("oneshot", common, epochs, reference_epochs, epoch_fields=("phase_epochs", "final_epochs"),
              options={"pruner": method, "density": density},
              option_defaults=dataclasses.asdict(OneShotOptions()), out=out, resume=resume, config=config,
              force=force, quiet=quiet)
