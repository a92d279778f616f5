"""Running a sweep: train every point into the sweep folder under its lock, with --force's set-aside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pwmpr import rundir
from pwmpr.errors import PwmprError
from pwmpr.sweep.config import RUNS, SWEEP_CONFIG, SweepConfig, check_points, is_sweep, load_config, point_dir
from pwmpr.sweep.summary import write_summary


def run_sweep(cfg: SweepConfig, out: Path | str, *, resume: bool = False, force: bool = False,
              reporter=None) -> dict[str, Any]:
    """Train every (density, seed) point of ``cfg`` into the sweep folder ``out``; return the sweep summary.

    Finished points are kept, unfinished ones resumed (``resume``), so a killed sweep carries on where it
    stopped. Without ``resume`` a non-empty ``out`` needs ``force`` unless it is a sweep of the same config.
    The model, data and device are checked, and the data loaded (once for every point), before anything is
    written. ``force`` sets the old sweep aside until the new one has finished a point, and puts it back if the
    new sweep fails before that.
    """
    from pwmpr.lock import lock_beside

    out = Path(out)
    if resume:
        if not out.is_dir():
            raise PwmprError(f"cannot resume {out}: no such sweep folder")
        cfg = load_config(out)
    bundle = prepare(cfg)
    created = not out.exists()
    if not out.parent.is_dir():
        rundir.make_out_dir(out.parent)
    with lock_beside(out, "sweep folder"):  # one writer per sweep folder
        return _run_locked(cfg, out, bundle, resume=resume, force=force, created=created, reporter=reporter)


def _same_sweep(a: SweepConfig, b: SweepConfig) -> bool:
    """Whether two sweep configs train the same points (their base configs compared as ``RunConfig.canonical``)."""
    return ({**a.to_dict(), "base": a.base.canonical(final_training=False, growth_stop=False)}
            == {**b.to_dict(), "base": b.base.canonical(final_training=False, growth_stop=False)})


def _run_locked(cfg: SweepConfig, out: Path, bundle, *, resume: bool, force: bool, created: bool,
                reporter) -> dict[str, Any]:
    recover_sweep_set_aside(out)
    keep = resume or (is_sweep(out) and _same_sweep(load_config(out), cfg))
    aside = None
    if not keep and rundir.check_replaceable(out, force=force, kind="sweep folder", is_kind=is_sweep,
                                             marker=SWEEP_CONFIG, resume=f"--resume {out} to continue its sweep"):
        aside = set_sweep_aside(out)  # the new sweep can start: the old one waits until the new one has a point
    try:
        if keep:
            check_points(out, cfg)
        out.mkdir(parents=True, exist_ok=True)
        rundir.atomic_write_json(out / SWEEP_CONFIG, cfg.to_dict())
        for i, (density, seed) in enumerate(points := [(d, s) for s in cfg.seeds for d in cfg.densities]):
            if _train_point(cfg, out, density, seed, bundle, reporter, f"{i + 1}/{len(points)}") and aside:
                rundir.drop_set_aside(aside)  # the new sweep has a finished point: the old one can go
                aside = None
        return write_summary(out, cfg)
    except BaseException:
        if aside is not None:
            rundir.restore_set_aside(out, aside)  # no point of the new sweep finished: the old one comes back
        elif created and out.is_dir() and not any(rundir.checkpoints(p) for p in (out / RUNS).glob("*")):
            import shutil

            shutil.rmtree(out)  # a new sweep that trained nothing leaves no folder behind
        raise


def _train_point(cfg: SweepConfig, out: Path, density: float, seed: int, bundle, reporter, which: str) -> bool:
    """Train (or resume) one point unless it has finished; True when it was trained here."""
    from pwmpr.run_folder import run_config

    folder = point_dir(out, density, seed)
    if rundir.finished_summary(folder) is not None:
        return False
    if reporter is not None:
        reporter.message(f"sweep point {which}: density {density:g}, seed {seed}")
    if rundir.checkpoints(folder):  # a point with a damaged summary resumes from its last checkpoint too
        run_config(cfg.point_config(density, seed), folder, resume=True, reporter=reporter, bundle=bundle)
    else:
        run_config(cfg.point_config(density, seed), folder, force=True, reporter=reporter, bundle=bundle)
    return True


def set_sweep_aside(out: Path) -> Path:
    """--force: move the old sweep's files into ``OUT/.replaced-PID/`` (deleted once the new sweep finished a
    point, restored when it fails before that)."""
    import os

    aside = out / f"{rundir.SET_ASIDE}{os.getpid()}"
    aside.mkdir()
    # runs/ first: a --force killed part-way then leaves no finished point behind, so recover_sweep_set_aside
    # restores the old files instead of taking them for a finished replacement.
    for p in sorted((p for p in out.iterdir() if p != aside and not p.name.startswith(rundir.SET_ASIDE)),
                    key=lambda p: p.name != RUNS):
        os.replace(p, aside / p.name)
    return aside


def recover_sweep_set_aside(out: Path) -> None:
    """Under the lock: finish what a sweep --force killed by SIGKILL left: the old sweep comes back when the new
    one finished no point; otherwise it goes."""
    import shutil

    for aside in sorted(out.glob(f"{rundir.SET_ASIDE}*")) if out.is_dir() else []:
        if not aside.is_dir():
            continue
        done = any(rundir.finished_summary(p) is not None for p in (out / RUNS).glob("*"))
        shutil.rmtree(aside) if done else rundir.restore_set_aside(out, aside)


def prepare(cfg: SweepConfig):
    """Check that the sweep's points can start (device, data set, model) and return the loaded data, which every
    point trains on; raise PwmprError before anything is written otherwise."""
    from pwmpr.data import MIN_VAL_SAMPLES, load_data
    from pwmpr.models import create_model
    from pwmpr.runner import resolve_device

    base = cfg.base
    resolve_device(base.device)
    bundle = load_data(base.data, base.data_dir, val_fraction=base.val_fraction, max_train=base.max_train,
                       min_val=MIN_VAL_SAMPLES, context=base.context, augment=base.augment)
    model = base.model if base.model != "auto" else bundle.auto_model()
    shape = tuple(bundle.input_shape)
    create_model(model, bundle.num_classes, shape)
    check_lowest_density(cfg, lambda: create_model(model, bundle.num_classes, shape), shape)
    return bundle


def check_lowest_density(cfg: SweepConfig, make_model, input_shape: tuple[int, ...]) -> None:
    """Draw the masks of the grid's lowest density for every seed, as its points will, and refuse the grid when one
    leaves a layer with no edge or no input-to-output path (``make_model``: the points' model, freshly built)."""
    import torch

    from pwmpr.graph.reach import check_density_keeps_every_layer
    from pwmpr.masks import MaskSet
    from pwmpr.runner import check_start_masks
    from pwmpr.seed import SEEDS

    density = cfg.densities[0]
    with torch.random.fork_rng(devices=[]):
        for seed in cfg.seeds:
            torch.manual_seed(seed)  # the point's model initialisation (pwmpr.runner.PhaseLoop)
            model = make_model()
            check_density_keeps_every_layer(model, density, what="the sweep's lowest density")
            masks = SEEDS.get(cfg.pruner)(model, density, input_shape, seed)
            try:
                check_start_masks(model, MaskSet(masks.to_dict()), input_shape)
            except PwmprError as exc:
                raise PwmprError(f"the sweep's lowest density {density:g} (seed {seed}): {exc}") from None
