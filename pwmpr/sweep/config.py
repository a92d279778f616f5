"""A sweep's configuration (sweep.json), its folder layout, and the check that its points were trained as it says."""

from __future__ import annotations

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


def check_points(out: Path | str, cfg: SweepConfig) -> None:
    """Refuse a sweep folder whose point folders were trained otherwise than its sweep.json says (a hand-edited
    sweep.json must not relabel finished points); each point's config.json is read strictly."""
    from pwmpr.config import RunConfig

    for seed in cfg.seeds:
        for density in cfg.densities:
            folder = point_dir(out, density, seed)
            if not (folder / rundir.CONFIG).is_file():
                continue
            want = cfg.point_config(density, seed).canonical(final_training=False, growth_stop=False)  # one-shot
            got = RunConfig.load(folder / rundir.CONFIG).canonical(final_training=False, growth_stop=False)
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
