"""``pwmpr baseline dense|imp|oneshot|rigl|set``: the baselines PWMPR is compared with, on the same runner.

Each writes the same run folder as ``pwmpr grow`` (through ``start_or_resume``), resumes and exports the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from pwmpr.cli.errors import boundary
from pwmpr.cli.grow import refuse_with_resume, start_or_resume
from pwmpr.cli.options import RUN_CONTROL, command, config_flags, given_flags, int_option, leaf_fields, options_flags
from pwmpr.errors import PwmprError
from pwmpr.methods.dst import RiglOptions, SetOptions
from pwmpr.methods.imp import ImpOptions
from pwmpr.methods.oneshot import OneShotOptions

DEFAULT_EPOCHS = 30  # the final-training epochs of `pwmpr grow`, so a default baseline matches a default PWMPR run

app = typer.Typer(
    name="baseline",
    help="Baselines on the same trainer, data, masks and cost accounting as pwmpr grow: dense, IMP, one-shot, "
         "RigL, SET.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: RunConfig fields a baseline has no flag for, and why (every other field is a flag, as on ``pwmpr grow``).
BASELINE_SKIP = {
    **{p: "growth, its stop rule and the shrink stage are PWMPR's" for p, _, _ in leaf_fields()
       if p.startswith(("growth.", "stop.", "shrink.")) and p != "growth.init_scale"},  # every start mask has one
    "phase_epochs": "set by --epochs", "final_epochs": "set by --epochs",
    "train.phase_schedule": "every baseline run is a full training: --schedule (train.final_schedule) sets it",
    "train.warmup_epochs": "PWMPR's alone: a baseline trains with the schedule it is defined with",
}
#: The flags every baseline shares with ``pwmpr grow``, generated from the same config fields.
SHARED_FLAGS = config_flags(
    skip=BASELINE_SKIP, names={"train.final_schedule": "schedule"},
    helps={"train.final_schedule": "Learning-rate schedule of each training run: cosine, step (x0.1 at 50%/75%) or "
                                   "constant.",
           "reference_epochs": "Epochs of the dense run costs are compared with (none: --epochs)."})


@boundary
def _baseline(method: str, fields: dict, options: dict, epochs: int | None, *, epoch_fields: tuple[str, ...],
              option_defaults: dict, given: list[str], out: Path | None, resume: Path | None, config: Path | None,
              force: bool, quiet: bool, trust_code: bool, fixed: dict | None = None,
              options_cls: type | None = None) -> dict:
    """Fill in the epoch fields and options, then run through ``pwmpr grow``'s ``start_or_resume``.

    ``given``: flags typed; ``fixed``: config values no flag sets; ``options_cls``: the options dataclass.
    """
    if resume is not None:
        refuse_with_resume([*(["--config"] if config is not None else []), *(["--out"] if out is not None else []),
                            *(g for g in given if g != "--lr")])
        return start_or_resume({"train.lr": fields.get("train.lr")}, out=None, resume=resume, config=None, force=False,
                    quiet=quiet, method=method, trust_code=trust_code)
    overrides = dict(fields)
    reference_epochs = overrides.pop("reference_epochs", None)
    if config is None:
        overrides.update(fixed or {})
    if epochs is None and config is None:
        epochs = DEFAULT_EPOCHS
    if epochs is not None:
        if epochs < 1:
            raise PwmprError(f"--epochs must be >= 1, got {epochs}")
        overrides.update({f: epochs for f in epoch_fields})
        overrides["reference_epochs"] = reference_epochs or epochs
    elif reference_epochs is not None:
        overrides["reference_epochs"] = reference_epochs
    # A fresh run writes every option into config.json; a --config run keeps its own unless a flag is given.
    given_opts = {k: v for k, v in options.items() if v is not None}
    opts = given_opts if config is not None else {**option_defaults, **given_opts}
    if options_cls is not None and config is None:
        options_cls.from_options(opts)  # bad options fail here, before the run folder is made
    return start_or_resume(overrides, out=out, resume=None, config=config, force=force, quiet=quiet, method=method,
                options=opts, trust_code=trust_code)


def _baseline_command(method: str, doc: str, epochs_help: str, options_cls: type | None, epoch_fields: tuple[str, ...],
                      fixed: dict | None = None, panel: str | None = None):
    """``pwmpr baseline METHOD``: the method's options flags, ``--epochs``, the shared flags and the run control."""
    opt_flags = options_flags(options_cls, panel) if options_cls is not None else []
    defaults = dataclasses.asdict(options_cls()) if options_cls is not None else {}

    def body(options: dict, fields: dict, *, epochs: int | None, out: Path | None, resume: Path | None,
             config: Path | None, force: bool, trust_code: bool, quiet: bool) -> None:
        given = [*given_flags(opt_flags, options), *(["--epochs"] if epochs is not None else []),
                 *given_flags(SHARED_FLAGS, fields)]
        _baseline(method, fields, options, epochs, epoch_fields=epoch_fields, option_defaults=defaults, given=given,
                  out=out, resume=resume, config=config, force=force, quiet=quiet, trust_code=trust_code,
                  fixed=fixed, options_cls=options_cls)

    cmd = command(method, doc, {"options": opt_flags, "fields": SHARED_FLAGS},
                  [int_option("epochs", epochs_help), *RUN_CONTROL], body)
    return app.command(method)(cmd)


dense = _baseline_command(
    "dense", "Train the dense network with the same trainer and schedule as PWMPR's final training (density 1).",
    f"Training epochs (default: {DEFAULT_EPOCHS}).", None, ("phase_epochs", "final_epochs"))
imp = _baseline_command(
    "imp", "Iterative magnitude pruning (lottery tickets, OpenLTH conventions): train dense, prune 20% of the "
    "remaining weights by global magnitude, retrain; every level is a point of its accuracy-density curve.",
    f"Training epochs of every level (level 0 for continue) (default: {DEFAULT_EPOCHS}).", ImpOptions,
    ("phase_epochs",), fixed={"final_epochs": 0}, panel="IMP")  # IMP has no final training
oneshot = _baseline_command(
    "oneshot", "Prune once at initialisation to --density (PHEW, SynFlow, random or magnitude), then train --epochs.",
    f"Training epochs (default: {DEFAULT_EPOCHS}).", OneShotOptions, ("phase_epochs", "final_epochs"), panel="One-shot")
rigl = _baseline_command(
    "rigl", "RigL (Evci et al. 2020): a random ERK (or uniform) mask at --density trained for --epochs; every "
    "--update-epochs the smallest-|w| weights of each layer are dropped and as many regrown where |dL/dw| is "
    "largest (drop fraction 0.3, cosine-decayed, no update after 75% of training).",
    f"Training epochs (default: {DEFAULT_EPOCHS}).", RiglOptions, ("phase_epochs", "final_epochs"), panel="RigL")
set_ = _baseline_command(
    "set", "SET (Mocanu et al. 2018): a random ERK (or uniform) mask at --density trained for --epochs; after every "
    "--update-epochs the smallest-|w| weights of each layer (zeta 0.3) are dropped and as many regrown at random.",
    f"Training epochs (default: {DEFAULT_EPOCHS}).", SetOptions, ("phase_epochs", "final_epochs"), panel="SET")
