"""The accuracy-density curve by brute force: one model trained at a geometric grid of fixed densities.

Every point is an ordinary one-shot run (``pwmpr.methods.oneshot``: a mask drawn once at the density, PHEW by
default, then one training of ``final_epochs`` with the final schedule) on the same runner, data and cost
accounting as ``pwmpr grow``. The runs live in one sweep folder::

    sweep.json        the SweepConfig (written first; ``pwmpr sweep --resume`` reads it)
    runs/d0.01-s0/    one run folder per (density, seed), resumable like any other
    curve.csv, curve.md, curve.png, summary.json
                      mean +/- std test accuracy per density, the best point, the knee and the total cost

The knee is the smallest density whose mean test accuracy is within ``tol`` of the best mean: the density a
perfect density discovery would find. It is the ground truth that ``pwmpr compare`` judges PWMPR runs against.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pwmpr import rundir
from pwmpr.config import SEED_LIMIT, RunConfig, check, read_json_object
from pwmpr.errors import PwmprError

SWEEP_CONFIG = "sweep.json"
SWEEP_SUMMARY = "summary.json"
RUNS = "runs"
DEFAULT_DENSITIES = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0)  # 0.01 to 1 by factors of 2
MAX_DENSITIES = 100  # a grid of more points is a typo (a --factor of 1.0001), not a sweep anyone waits for
# Config keys that do not change what a point trains: a point folder may differ from sweep.json there.
_NOT_TRAINED = ("device", "data_dir", "workers")


@dataclass
class SweepConfig:
    """A sweep: the densities and seeds to train at, how masks are drawn, and the knee's tolerance.

    ``base`` is the RunConfig every point shares (model, data, training, ``final_epochs`` as the epochs of each
    run); its ``method`` and ``options`` are set per point.
    """

    densities: list[float] = field(default_factory=lambda: list(DEFAULT_DENSITIES))
    seeds: list[int] = field(default_factory=lambda: [0])
    pruner: str = "phew"
    tol: float = 0.01
    base: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if isinstance(self.base, dict):
            self.base = RunConfig.from_dict(self.base)
        if not isinstance(self.densities, list) or not self.densities:
            raise PwmprError("the density grid is empty: give at least one density in (0, 1]")
        for d in self.densities:
            check(not isinstance(d, bool) and isinstance(d, (int, float)) and 0 < d <= 1, "every density", d,
                  "in (0, 1]")
        if len(set(self.densities)) != len(self.densities):
            raise PwmprError(f"the density grid repeats a density: {self.densities}")
        self.densities = sorted(float(d) for d in self.densities)
        if len(self.densities) > MAX_DENSITIES:
            raise PwmprError(f"the density grid has {len(self.densities)} densities; a sweep takes at most "
                             f"{MAX_DENSITIES}")
        folders: dict[str, float] = {}
        for d in self.densities:
            other = folders.setdefault(point_name(d, 0), d)
            if other != d:
                raise PwmprError(f"densities {other!r} and {d!r} share the point folders d{d:g}-s* "
                                 "(densities are told apart by 6 significant digits): give densities that differ there")
        if not isinstance(self.densities, list) or not isinstance(self.seeds, list):
            raise PwmprError("densities and seeds must be lists")
        check(bool(self.seeds) and all(not isinstance(s, bool) and isinstance(s, int) and 0 <= s < SEED_LIMIT
                                       for s in self.seeds),
              "seeds", self.seeds, "a non-empty list of whole numbers in [0, 2**63)")
        if len(set(self.seeds)) != len(self.seeds):
            raise PwmprError(f"the seed list repeats a seed: {self.seeds}")
        check(not isinstance(self.tol, bool) and isinstance(self.tol, (int, float)) and math.isfinite(self.tol)
              and self.tol >= 0, "tol", self.tol, ">= 0")
        if self.base.final_epochs < 1:
            raise PwmprError("a sweep trains every point for final_epochs: it must be >= 1")
        from pwmpr.seed import SEEDS

        SEEDS.get(self.pruner)

    @staticmethod
    def geometric(lo: float, hi: float, factor: float) -> list[float]:
        """``lo, lo*factor, ...`` up to ``hi`` (``hi`` included, the last step shortened to land on it)."""
        if not (0 < lo <= hi <= 1):
            raise PwmprError(f"need 0 < min density <= max density <= 1, got {lo} and {hi}")
        check(factor > 1, "the grid factor", factor, "> 1")
        n = max(0, math.ceil(math.log(hi * (1 - 1e-9) / lo) / math.log(factor))) + 1
        if n > MAX_DENSITIES:
            raise PwmprError(f"--factor {factor:g} from {lo:g} to {hi:g} gives {n:,} densities; a sweep takes at most "
                             f"{MAX_DENSITIES}: pick a larger --factor (or list --densities)")
        out, d = [], lo
        while d < hi * (1 - 1e-9):
            out.append(round(d, 10))
            d *= factor
        out.append(hi)
        return out

    def point_config(self, density: float, seed: int) -> RunConfig:
        """The one-shot run at ``density`` with ``seed``."""
        cfg = RunConfig.from_dict(self.base.to_dict())
        cfg.method = "oneshot"
        cfg.options = {"pruner": self.pruner, "density": density}
        cfg.seed = seed
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"kind": "sweep", "densities": self.densities, "seeds": self.seeds, "pruner": self.pruner,
                "tol": self.tol, "base": self.base.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepConfig:
        """Rebuild from ``to_dict`` output; unknown keys raise PwmprError."""
        data = dict(data)
        if data.pop("kind", "sweep") != "sweep":
            raise PwmprError("not a sweep configuration")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PwmprError(f"unknown key(s) in the sweep configuration: {', '.join(unknown)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise PwmprError(f"bad value in the sweep configuration: {exc}") from None


def point_name(density: float, seed: int) -> str:
    """The folder name of one point of the sweep: ``d0.01-s0``."""
    return f"d{density:g}-s{seed}"


def point_dir(out: Path, density: float, seed: int) -> Path:
    """The run folder of one point of the sweep."""
    return Path(out) / RUNS / point_name(density, seed)


def is_sweep(path: Path | str) -> bool:
    """True when ``path`` is a sweep folder."""
    return (Path(path) / SWEEP_CONFIG).is_file()


def load_config(out: Path | str) -> SweepConfig:
    """The SweepConfig of a sweep folder."""
    data = read_json_object(Path(out) / SWEEP_CONFIG, "sweep configuration",
                            missing=f"{out} is not a sweep folder: it has no {SWEEP_CONFIG}")
    return SweepConfig.from_dict(data)


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
    return {**a.to_dict(), "base": a.base.canonical()} == {**b.to_dict(), "base": b.base.canonical()}


def _run_locked(cfg: SweepConfig, out: Path, bundle, *, resume: bool, force: bool, created: bool,
                reporter) -> dict[str, Any]:
    recover_set_aside(out)
    keep = resume or (is_sweep(out) and _same_sweep(load_config(out), cfg))
    aside = None
    if not keep and rundir.check_replaceable(out, force=force, kind="sweep folder", is_kind=is_sweep,
                                             marker=SWEEP_CONFIG, resume=f"--resume {out} to continue its sweep"):
        aside = set_aside(out)  # the new sweep can start: the old one waits until the new one has a point
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


def set_aside(out: Path) -> Path:
    """--force: move the old sweep's files into ``OUT/.replaced-PID/`` (deleted once the new sweep finished a
    point, restored when it fails before that)."""
    import os

    aside = out / f"{rundir.SET_ASIDE}{os.getpid()}"
    aside.mkdir()
    # runs/ first: a --force killed part-way then leaves no finished point behind, so recover_set_aside
    # restores the old files instead of taking them for a finished replacement.
    for p in sorted((p for p in out.iterdir() if p != aside and not p.name.startswith(rundir.SET_ASIDE)),
                    key=lambda p: p.name != RUNS):
        os.replace(p, aside / p.name)
    return aside


def recover_set_aside(out: Path) -> None:
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
                       min_val=MIN_VAL_SAMPLES)
    model = base.model if base.model != "auto" else bundle.default_model
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


def check_points(out: Path | str, cfg: SweepConfig) -> None:
    """Refuse a sweep folder whose point folders were trained otherwise than its sweep.json says (a hand-edited
    sweep.json must not relabel finished points); each point's config.json is read strictly."""
    from pwmpr.config import RunConfig

    for seed in cfg.seeds:
        for density in cfg.densities:
            folder = point_dir(out, density, seed)
            if not (folder / rundir.CONFIG).is_file():
                continue
            want = cfg.point_config(density, seed).canonical()
            got = RunConfig.load(folder / rundir.CONFIG).canonical()
            if want["model"] == "auto":
                want["model"] = got["model"]
            where = _first_difference({k: v for k, v in want.items() if k not in _NOT_TRAINED},
                                      {k: v for k, v in got.items() if k not in _NOT_TRAINED})
            if where is not None:
                key, said, trained = where
                raise PwmprError(f"{folder} was trained with {key} {json.dumps(trained)}, but "
                                 f"{Path(out) / SWEEP_CONFIG} says {json.dumps(said)}: restore {SWEEP_CONFIG}, or "
                                 "start a new sweep in another folder")


def _first_difference(a: Any, b: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key where two JSON values differ, with both values; None when they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            found = _first_difference(a.get(k), b.get(k), f"{key}.{k}" if key else k)
            if found is not None:
                return found
        return None
    return None if a == b else (key, a, b)


def read_points(out: Path | str, cfg: SweepConfig | None = None) -> list[dict[str, Any]]:
    """One dict per finished point: density, seed, test accuracy, costs (from each run's summary.json, read
    strictly; a point whose summary.json is damaged is not finished)."""
    out = Path(out)
    cfg = cfg or load_config(out)
    rows = []
    for seed in cfg.seeds:
        for density in cfg.densities:
            s = rundir.finished_summary(point_dir(out, density, seed))
            if s is None or s.get("test_acc") is None:
                continue
            rows.append({"density": density, "seed": seed, "model": str(s.get("model")), "data": str(s.get("data")),
                         "measured_density": s["discovered_density"],
                         "test_acc": s["test_acc"], "val_acc": s.get("val_acc") or 0.0, "cost_flops": s["cost_flops"],
                         "cost_epochs": s["cost_epochs"], "wall_time": s.get("wall_time") or 0.0})
    return rows


def curve(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std of test accuracy per density over seeds, densities ascending."""
    import numpy as np

    out = []
    for density in sorted({r["density"] for r in rows}):
        accs = np.array([r["test_acc"] for r in rows if r["density"] == density])
        out.append({"density": density, "test_acc": float(accs.mean()),
                    "test_acc_std": float(accs.std(ddof=1)) if accs.size > 1 else None, "n_seeds": int(accs.size)})
    return out


def knee(points: list[dict[str, Any]], tol: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """(best point, knee point) of a curve: the knee is the smallest density within ``tol`` of the best mean."""
    best = max(points, key=lambda p: p["test_acc"])
    within = [p for p in points if p["test_acc"] >= best["test_acc"] - tol - 1e-12]
    return best, min(within, key=lambda p: p["density"])


def summarise(out: Path | str, cfg: SweepConfig | None = None) -> dict[str, Any]:
    """The sweep summary (curve, best, knee, dense point, costs) computed from the sweep folder's finished points,
    which must have been trained as its sweep.json says; its summary.json is not read."""
    out = Path(out)
    cfg = cfg or load_config(out)
    check_points(out, cfg)
    return _summary(out, cfg, read_points(out, cfg))


def _summary(out: Path, cfg: SweepConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        raise PwmprError(f"sweep {out} has no finished point yet")
    pts = curve(rows)
    best, kn = knee(pts, cfg.tol)
    dense = next((p for p in pts if p["density"] >= 1.0), None)
    summary = {
        "kind": "sweep", "model": rows[0]["model"], "data": rows[0]["data"], "pruner": cfg.pruner,
        "epochs": cfg.base.final_epochs, "tol": cfg.tol, "seeds": cfg.seeds,
        "complete": len(rows) == len(cfg.densities) * len(cfg.seeds),
        "curve": pts, "best": best, "knee": kn, "dense": dense,
        "cost_flops_total": sum(r["cost_flops"] for r in rows) / len(cfg.seeds),
        "cost_epochs_total": sum(r["cost_epochs"] for r in rows) / len(cfg.seeds),
    }
    return summary


def write_summary(out: Path | str, cfg: SweepConfig | None = None) -> dict[str, Any]:
    """Write curve.csv, curve.md, curve.png and summary.json of a sweep folder from its finished points."""
    out = Path(out)
    cfg = cfg or load_config(out)
    rows = read_points(out, cfg)
    summary = _summary(out, cfg, rows)
    lines = ["density,seed,test_acc,val_acc,cost_flops,cost_epochs,wall_time"]
    lines += [f"{r['density']:g},{r['seed']},{r['test_acc']:.6f},{r['val_acc']:.6f},{r['cost_flops']:.6f},"
              f"{r['cost_epochs']:.6f},{r['wall_time']:.3f}" for r in rows]
    rundir.atomic_write_text(out / "curve.csv", "\n".join(lines) + "\n")
    rundir.atomic_write_text(out / "curve.md", curve_markdown(summary))
    rundir.atomic_write_json(out / SWEEP_SUMMARY, summary)
    with contextlib.suppress(ImportError):  # matplotlib missing: the table and csv are the result
        _plot(summary, out / "curve.png")
    return summary


def curve_markdown(summary: dict[str, Any]) -> str:
    """The curve as a markdown table, with the best point and the knee marked."""
    lines = [f"Sweep: {summary['model']} on {summary['data']}, {summary['pruner']} masks, {summary['epochs']} epochs "
             f"per point, seeds {', '.join(map(str, summary['seeds']))}; knee = smallest density within "
             f"{100 * summary['tol']:g} points of the best mean test accuracy.", "",
             "| density | test accuracy (mean ± std) | seeds | |", "|---|---|---|---|"]
    for p in summary["curve"]:
        std = f" ± {100 * p['test_acc_std']:.2f}" if p["test_acc_std"] is not None else ""
        mark = " ".join(m for m, q in (("best", summary["best"]), ("knee", summary["knee"]))
                        if q["density"] == p["density"])
        lines.append(f"| {p['density']:g} | {100 * p['test_acc']:.2f}%{std} | {p['n_seeds']} | {mark} |")
    return "\n".join(lines) + "\n"


def draw_sweep(ax, summary: dict[str, Any], scale: float = 1.0,
               name: str = "test accuracy (mean ± std over seeds)") -> None:
    """Draw a sweep's curve (mean ± std over seeds), its knee and the knee's threshold on ``ax``; accuracies
    times ``scale`` (100 for percent)."""
    pts = summary["curve"]
    ax.errorbar([p["density"] for p in pts], [scale * p["test_acc"] for p in pts],
                yerr=[scale * (p["test_acc_std"] or 0.0) for p in pts], fmt="o--", color="0.35", ms=4, lw=1,
                capsize=3, label=name, zorder=2)
    knee, tol = summary["knee"]["density"], summary["tol"]
    ax.axvline(knee, color="0.35", ls=":", label=f"sweep knee {knee:g}: smallest density within "
               f"{100 * tol:g} pt of its best", zorder=1)
    ax.axhline(scale * (summary["best"]["test_acc"] - tol), color="0.6", ls="--", lw=0.8,
               label=f"sweep best - {100 * tol:g} pt", zorder=1)


def sweep_figure(summary: dict[str, Any]):
    """The Figure of a sweep folder's curve.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pwmpr.plot import plain_ticks

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    draw_sweep(ax, summary)
    ax.set_xscale("log")
    plain_ticks(ax)
    ax.set_xlabel("density")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"sweep: {summary['model']} on {summary['data']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = sweep_figure(summary)
    try:
        rundir.atomic_save_figure(fig, path)
    finally:
        plt.close(fig)
