"""The run folder's life cycle around one run: lock it, repair it, set an old run aside, resume or start, finish.

``run_config`` is the entry point of ``pwmpr grow``, the Python API and sweeps. Under torchrun rank 0 alone
touches the folder.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch

from pwmpr import dist, rundir
from pwmpr.config import RunConfig
from pwmpr.data import DataBundle
from pwmpr.errors import PwmprError
from pwmpr.lock import FolderLock, lock_run_dir
from pwmpr.progress import Reporter
from pwmpr.runner import PhaseLoop
from pwmpr.train import TrainingDiverged


def run_config(cfg: RunConfig, out_dir: Path | str | None = None, *, resume: bool = False, force: bool = False,
        reporter: Reporter | None = None, model: torch.nn.Module | None = None,
        bundle: DataBundle | None = None, lr: float | None = None) -> dict[str, Any]:
    """Produce (or continue, with ``resume``) the run folder ``out_dir`` for ``cfg``; return the summary.

    ``model`` and ``bundle`` replace the config's registered model and data set; ``lr`` (``resume`` only) trains
    on at this learning rate. ``out_dir`` defaults to ``rundir.default_run_dir``; the summary holds ``run_dir``.
    """
    dist.init_from_env()
    primary = dist.is_primary()
    out = Path(out_dir) if out_dir is not None else None
    held: list[FolderLock] = []
    aside: list[Path] = []  # --force: where the old run's files wait (restored if the new run fails early)
    r: PhaseLoop | None = None
    created: list[Path] = []  # the folder this call made: a failure leaves no empty folder behind
    failed = True

    def take(out: Path) -> None:
        """Lock the folder (one writer), then finish what a dead writer left there."""
        if primary:
            held.append(lock_run_dir(out))
            for note in rundir.recover_set_aside(out):
                (reporter or Reporter()).message(note)
            rundir.clean_leftovers(out)

    def prepare(out: Path) -> None:
        """Rank 0 makes, locks, repairs and checks the folder; the other ranks wait for it (or for its error)."""
        def on_rank_0() -> None:
            if not out.exists():
                created.append(out)
            rundir.make_out_dir(out)
            take(out)
            rundir.check_out_dir(out, force=force)

        dist.on_primary(on_rank_0, "preparing the run folder", share=False)

    if lr is not None and not resume:
        raise PwmprError("lr= is for resume; a new run takes its learning rate from the config")
    lr_change = None
    try:
        if resume:
            if out is None or not out.is_dir():
                raise PwmprError(f"cannot resume {out}: no such run folder")
            dist.on_primary(lambda: take(out), "repairing the run folder", share=False)  # then every rank reads it
            if not (out / rundir.CONFIG).is_file():
                raise PwmprError(f"cannot resume {out}: it holds no {rundir.CONFIG}")
            cfg = RunConfig.load(out / rundir.CONFIG)
            finished = rundir.finished_summary(out)
            if finished is not None:  # nothing to do: a finished run is not trained or rewritten again
                (reporter or Reporter()).message(
                    f"{out} is finished ({rundir.SUMMARY}); nothing was done (start it again with --force)")
                dist.shutdown()
                return {**finished, "run_dir": str(out)}
            if lr is not None and lr != cfg.train.base_lr:
                lr_change = {"from": cfg.train.base_lr, "to": float(lr)}
                cfg.train = dataclasses.replace(cfg.train, lr=float(lr))  # checked like a flag
        elif out is not None:
            prepare(out)  # a bad --out fails before any data is loaded; nothing in it is touched yet
        cfg = copy.deepcopy(cfg)
        # Checks config, device, data and model before any file is replaced.
        r = PhaseLoop(cfg, out, reporter, model=model, bundle=bundle)
        if out is None:
            out = r.out = rundir.default_run_dir(cfg)
            prepare(out)
        if resume:
            r.lr_change = lr_change
            r.resume()
        else:
            if force:
                moved = dist.on_primary(lambda: rundir.set_aside(out), "setting the old run aside")
                if moved is not None and primary:
                    aside.append(moved)
                    r.aside = moved
            r.start_fresh()
        if r.reporter is not None:
            r.reporter.run_start(f"{cfg.method}: {cfg.model} on {cfg.data} ({r.bundle.n_train} training samples), "
                                 f"device {r.device}, run folder {out}")
        try:
            summary = r.execute()
        except TrainingDiverged as exc:
            cks = rundir.checkpoints(out) if r.aside is None else []
            kept = (f"{out} keeps its last good checkpoint, {cks[-1].name} (`pwmpr grow --resume {out} --lr X` "
                    f"carries on from it at learning rate X)" if cks else
                    "no checkpoint of this run was written" + (
                        f"; {out} holds the previous run again" if r.aside is not None else ""))
            raise PwmprError(f"{exc}; {kept}") from None
        dist.shutdown()
        failed = False
        return {**summary, "run_dir": str(out)}
    except BaseException:
        if r is not None and r.aside is not None and out is not None:
            rundir.restore_set_aside(out, r.aside)  # the new run never wrote a checkpoint: the old one comes back
            r.aside = None
        raise
    finally:
        for lock in held:
            lock.release()
        for folder in created if failed else []:
            rundir.remove_if_empty(folder)
